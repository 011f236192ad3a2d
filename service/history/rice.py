"""Rice coding of unsigned 64-bit integers, vectorised: near the entropy of geometric-like
values (the gaps between a user's event times), where a byte-oriented compressor is not.

A value v with parameter k is the quotient ``v >> k`` in unary (that many 1 bits, then a 0)
and the remainder ``v & (2^k - 1)`` in k bits. The two parts are stored as two bit streams
(remainders: m·k bits; quotients: Σq + m bits, padded with 1s), so both directions are a few
numpy passes: decoding finds the quotients from the positions of the 0 bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["RiceCode", "rice_decode", "rice_encode"]

_MAX_QUOTIENT_BITS = 10  # k is raised so that no quotient exceeds 2^10: bounded unary runs

RiceCode = tuple[int, bytes, bytes]  # (k, remainder bits, unary quotient bits)


def rice_encode(values: npt.NDArray[np.uint64]) -> RiceCode:
    """Encode ``values`` (shape (m,)); k ≈ log2(0.69·mean), the optimum for geometric data."""
    if values.size == 0:
        return 0, b"", b""
    mean = float(values.mean())
    k = max(0, int(np.floor(np.log2(mean * 0.69)))) if mean * 0.69 >= 1 else 0
    k = min(63, max(k, int(values.max()).bit_length() - _MAX_QUOTIENT_BITS))
    shift = np.uint64(k)
    quotients = (values >> shift).astype(np.int64)  # (m,), each < 2^10
    remainder = b""
    if k:
        remainders = values & np.uint64((1 << k) - 1)
        bits = (remainders[:, None] >> np.arange(k, dtype=np.uint64)) & np.uint64(1)  # (m, k)
        remainder = np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little").tobytes()
    total = int(quotients.sum()) + values.size
    unary = np.ones(-(-total // 8) * 8, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 0  # each quotient's terminating 0
    return k, remainder, np.packbits(unary, bitorder="little").tobytes()


def rice_decode(code: RiceCode, m: int) -> npt.NDArray[np.uint64]:
    """The m values of ``code``, shape (m,).

    Raises:
        ValueError: the streams are too short for m values.
    """
    k, remainder, unary = code
    if m == 0:
        return np.zeros(0, dtype=np.uint64)
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8), bitorder="little")
    zeros = np.flatnonzero(bits == 0)[:m]
    if zeros.size < m or len(remainder) * 8 < m * k:
        raise ValueError(f"rice streams too short for {m} values")
    values = (np.diff(zeros, prepend=-1) - 1).astype(np.uint64) << np.uint64(k)  # (m,)
    if k:
        rbits = np.unpackbits(
            np.frombuffer(remainder, dtype=np.uint8), count=m * k, bitorder="little"
        ).reshape(m, k)
        weights = np.uint64(1) << np.arange(k, dtype=np.uint64)  # (k,)
        values |= (rbits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return values
