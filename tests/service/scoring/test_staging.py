"""Staging: a batch's arrays reach the device in one copy, intact, and results come back as
arrays the caller owns (on the ``device`` fixture: CPU here, CUDA under bench/gpu.sh)."""

from __future__ import annotations

import numpy as np
import torch

from service.scoring.staging import Staging


def test_packed_arrays_arrive_intact_in_one_copy(device: torch.device) -> None:
    staging = Staging(device)
    packed = staging.pack(
        [("rows", (3, 5), np.int64), ("tokens", (3, 2, 4), np.float32), ("mask", (3, 7), np.bool_)]
    )
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 1_000, size=(3, 5))
    tokens = rng.normal(size=(3, 2, 4)).astype(np.float32)
    mask = rng.random((3, 7)) < 0.5
    packed.host["rows"][...] = rows
    packed.host["tokens"][...] = tokens
    packed.host["mask"][...] = mask
    copies = []
    real_copy = staging.copy

    def counting(nbytes: int) -> torch.Tensor:
        copies.append(nbytes)
        return real_copy(nbytes)

    staging.copy = counting  # type: ignore[method-assign]
    sent = packed.send()
    assert copies == [packed.nbytes]  # one host → device copy for the whole batch
    assert {name: t.device.type for name, t in sent.items()} == dict.fromkeys(sent, device.type)
    assert sent["rows"].dtype == torch.int64 and sent["mask"].dtype == torch.bool
    np.testing.assert_array_equal(sent["rows"].cpu().numpy(), rows)
    np.testing.assert_array_equal(sent["tokens"].cpu().numpy(), tokens)
    np.testing.assert_array_equal(sent["mask"].cpu().numpy(), mask)
    assert all(t.data_ptr() % 64 == 0 for t in sent.values())  # aligned views


def test_buffers_are_reused_and_grow(device: torch.device) -> None:
    staging = Staging(device)
    small = staging.pack([("a", (10,), np.int64)])
    small.host["a"][...] = np.arange(10)
    first = small.send()["a"].data_ptr()
    again = staging.pack([("a", (10,), np.int64)])
    again.host["a"][...] = np.arange(10, 20)
    sent = again.send()["a"]
    assert sent.data_ptr() == first  # same device buffer, no new allocation
    assert sent.cpu().tolist() == list(range(10, 20))
    big = staging.pack([("a", (100_000,), np.int64)])
    big.host["a"][...] = 7
    assert int(big.send()["a"].sum()) == 700_000


def test_results_outlive_the_buffers(device: torch.device) -> None:
    staging = Staging(device)
    values = torch.arange(6, dtype=torch.float32, device=device).view(2, 3)
    (host,) = staging.to_host([values])
    values.zero_()  # the next batch reuses device memory
    assert isinstance(host, np.ndarray) and host.tolist() == [[0, 1, 2], [3, 4, 5]]
