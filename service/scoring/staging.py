"""Moving a batch's inputs to the device in one copy, and its results back in one wait.

``Staging.pack`` lays the named arrays of a batch out in one host buffer (pinned memory on
CUDA, so the copy is a DMA that does not wait on the pageable-memory path) at 64-byte aligned
offsets; the caller fills them in place (numpy views, no intermediate tensors), then
``send`` copies the used prefix to a device buffer with ONE ``copy_`` (non-blocking on CUDA)
and hands out typed device views. On CPU the same code runs, the "device" buffer being a
second host buffer: tests exercise exactly the path a GPU takes. Both buffers only grow.
``Staging`` is the service's ``model.modes.Buffers``: the modes' packers fill it.

``to_host`` brings result tensors back (non-blocking copies, then one synchronize) as numpy
arrays the caller owns. One ``Staging`` per batch thread: its buffers are reused by the next
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Packed", "Staging"]

_ALIGN = 64
_TORCH_DTYPES = {
    np.dtype(np.int64): torch.int64,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.bool_): torch.bool,
}


@dataclass(frozen=True)
class _Slot:
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


class Packed:
    """The host views of one batch's arrays (fill them, then ``send``)."""

    def __init__(self, staging: Staging, slots: dict[str, _Slot], nbytes: int) -> None:
        self._staging, self._slots, self.nbytes = staging, slots, nbytes
        raw = staging.host_bytes(nbytes)
        self.host = {
            name: raw[s.offset : s.offset + _size(s)].view(s.dtype).reshape(s.shape)
            for name, s in slots.items()
        }

    def send(self) -> dict[str, Tensor]:
        """One host → device copy of every array; returns device tensors by name."""
        device = self._staging.copy(self.nbytes)
        return {
            name: device[s.offset : s.offset + _size(s)].view(_TORCH_DTYPES[s.dtype]).view(s.shape)
            for name, s in self._slots.items()
        }


def _size(slot: _Slot) -> int:
    return int(np.prod(slot.shape, dtype=np.int64)) * slot.dtype.itemsize


class Staging:
    """Reusable transfer buffers for one device (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned = device.type == "cuda"
        self._host = torch.empty(0, dtype=torch.uint8)
        self._device = torch.empty(0, dtype=torch.uint8, device=device)

    def pack(self, arrays: Sequence[tuple[str, tuple[int, ...], type]]) -> Packed:
        """Lay out ``(name, shape, dtype)`` arrays (int64, float32 or bool) in the host
        buffer; returns their views."""
        slots: dict[str, _Slot] = {}
        offset = 0
        for name, shape, dtype in arrays:
            slot = _Slot(offset, tuple(shape), np.dtype(dtype))
            slots[name] = slot
            offset += -(-_size(slot) // _ALIGN) * _ALIGN
        return Packed(self, slots, offset)

    def host_bytes(self, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` of the host buffer as a uint8 numpy array (grown if needed)."""
        if self._host.numel() < nbytes:
            with torch.inference_mode(False):
                self._host = torch.empty(
                    nbytes * 3 // 2 + _ALIGN, dtype=torch.uint8, pin_memory=self._pinned
                )
        return self._host[:nbytes].numpy()

    def copy(self, nbytes: int) -> Tensor:
        """The first ``nbytes`` of the host buffer copied into the device buffer."""
        if self._device.numel() < nbytes:
            with torch.inference_mode(False):
                self._device = torch.empty(
                    self._host.numel(), dtype=torch.uint8, device=self.device
                )
        target = self._device[:nbytes]
        target.copy_(self._host[:nbytes], non_blocking=self._pinned)
        return target

    def to_host(self, tensors: Sequence[Tensor]) -> list[np.ndarray]:
        """Device tensors as host numpy arrays that outlive this staging's buffers."""
        if self.device.type != "cuda":
            return [t.numpy().copy() for t in tensors]
        hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, t in zip(hosts, tensors, strict=True):
            host.copy_(t, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return [h.numpy() for h in hosts]
