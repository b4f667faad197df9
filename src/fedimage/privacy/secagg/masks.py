"""Mask expansion: 256-bit keys stretched into uniform words mod 2^b by a stream cipher (ChaCha20 or AES-CTR).

Each mask key is used for one mask of one round only (keys are HKDF outputs bound to the round id
and the parties), so the stream starts at a zero nonce/counter. Masks are added chunk by chunk into
the accumulator, so memory stays at two small buffers whatever the vector size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedimage.errors import OptionError
from fedimage.privacy.secagg._cryptography import Cipher, algorithms, modes

PRGS = ("chacha20", "aes-ctr")
CHUNK_BYTES = 1 << 21  # keystream and the accumulator slice it is added to stay in cache
_ZERO_NONCE = bytes(16)
_SLACK = 64  # update_into needs room for one more cipher block


def check_prg(prg: str) -> str:
    if prg not in PRGS:
        raise OptionError(f"unknown mask generator {prg!r}; expected one of {', '.join(PRGS)}")
    return prg


def _stream(key: bytes, prg: str):
    if prg == "chacha20":
        return Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), None).encryptor()
    if prg == "aes-ctr":
        return Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()
    raise OptionError(f"unknown mask generator {prg!r}; expected one of {', '.join(PRGS)}")


def apply_masks(
    accumulator: np.ndarray, add: Sequence[bytes] = (), subtract: Sequence[bytes] = (), prg: str = "chacha20"
) -> None:
    """``accumulator += sum(mask(k) for k in add) - sum(mask(k) for k in subtract)``, wrapping in its dtype.

    ``accumulator`` is a contiguous 1-D uint32 or uint64 array; word ``i`` of the mask of a key is the
    same whichever other keys are applied with it, so clients and server expand identical masks.
    """
    if accumulator.ndim != 1 or accumulator.dtype not in (np.uint32, np.uint64):
        raise ValueError(
            f"masks apply to 1-D uint32/uint64 arrays, not {accumulator.dtype}{accumulator.shape}"
        )
    if not accumulator.flags.c_contiguous:
        raise ValueError("masks apply to contiguous arrays")
    signed = [(_stream(key, prg), np.add) for key in add] + [
        (_stream(key, prg), np.subtract) for key in subtract
    ]
    if not signed:
        return
    itemsize = accumulator.dtype.itemsize
    chunk = max(1, CHUNK_BYTES // itemsize)
    zeros = bytes(chunk * itemsize)
    out = bytearray(chunk * itemsize + _SLACK)
    words = np.frombuffer(out, dtype=accumulator.dtype, count=chunk)
    for start in range(0, accumulator.size, chunk):
        part = accumulator[start : start + chunk]
        size = part.size
        source = zeros if size == chunk else zeros[: size * itemsize]
        for stream, operation in signed:
            stream.update_into(source, out)
            operation(part, words[:size], out=part)


def expand_mask(key: bytes, size: int, dtype: np.dtype | type, prg: str = "chacha20") -> np.ndarray:
    """The mask of ``key`` alone, ``size`` words of ``dtype`` (for tests and inspection)."""
    mask = np.zeros(size, dtype=dtype)
    apply_masks(mask, add=[key], prg=prg)
    return mask
