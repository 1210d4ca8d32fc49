"""Pure-Python MD4 (RFC 1320), used for ``{MD4}`` passwords when hashlib has no md4.

Why it exists: OpenSSL 3 moved MD4 into its "legacy" provider, so ``hashlib.new("md4")`` fails on many
current systems, yet ``{MD4}`` userPassword values still live in old directories. Speed is irrelevant
here (one password of a few bytes per login), so the implementation favours plainness.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)

# (message word order, shift amounts, additive constant) for rounds 1, 2 and 3.
_ROUND2_ORDER = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ROUND3_ORDER = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
_SHIFTS = ((3, 7, 11, 19), (3, 5, 9, 13), (3, 9, 11, 15))
_CONSTANTS = (0, 0x5A827999, 0x6ED9EBA1)


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def _f(x: int, y: int, z: int) -> int:
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:
    return x ^ y ^ z


def _pad(data: bytes) -> bytes:
    """Append 0x80, zeros up to 56 mod 64, and the bit length as 64-bit little endian."""
    bit_len = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    padding = b"\x80" + b"\x00" * ((55 - len(data)) % 64)
    return data + padding + struct.pack("<Q", bit_len)


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    x = struct.unpack("<16I", block)
    regs = list(state)
    orders = (tuple(range(16)), _ROUND2_ORDER, _ROUND3_ORDER)
    for func, order, shifts, const in zip((_f, _g, _h), orders, _SHIFTS, _CONSTANTS, strict=True):
        for step, k in enumerate(order):
            # The registers rotate roles each step: (a,b,c,d), (d,a,b,c), (c,d,a,b), (b,c,d,a).
            ia, ib, ic, id_ = (-step) % 4, (1 - step) % 4, (2 - step) % 4, (3 - step) % 4
            total = (regs[ia] + func(regs[ib], regs[ic], regs[id_]) + x[k] + const) & _MASK
            regs[ia] = _rotl(total, shifts[step % 4])
    a, b, c, d = state
    return ((a + regs[0]) & _MASK, (b + regs[1]) & _MASK, (c + regs[2]) & _MASK, (d + regs[3]) & _MASK)


def md4(data: bytes) -> bytes:
    """Return the 16-byte MD4 digest of *data*."""
    state = _INIT
    padded = _pad(data)
    for offset in range(0, len(padded), 64):
        state = _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)
