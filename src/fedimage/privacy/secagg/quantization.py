"""Fixed-point quantization of clipped float vectors into Z_(2^b), with an overflow guard for the cohort."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedimage.errors import OptionError

MAX_MODULUS_BITS = 64
MAX_LEVELS = 1 << 53  # integers a float64 represents exactly


@dataclass(frozen=True)
class Quantizer:
    """Values clipped to ``[-clip, clip]`` are mapped to ``levels`` integer points ``0..levels-1``.

    Sums are taken mod ``2**modulus_bits``; a sum of ``n`` quantized vectors is exact (no wraparound)
    while ``n * (levels - 1) < 2**modulus_bits``, which ``check_capacity`` enforces. Rounding is to the
    nearest point, so each client's error is at most ``step / 2`` per coordinate.
    """

    clip: float
    levels: int
    modulus_bits: int = 32

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise OptionError(f"the clipping range must be a positive finite number, got {self.clip}")
        if not 1 <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise OptionError(f"modulus_bits must be in 1..{MAX_MODULUS_BITS}, got {self.modulus_bits}")
        if not 2 <= self.levels <= min(MAX_LEVELS, self.modulus):
            raise OptionError(
                f"levels must be in 2..{min(MAX_LEVELS, self.modulus)} for a {self.modulus_bits}-bit modulus,"
                f" got {self.levels}"
            )

    @classmethod
    def for_cohort(cls, clip: float, num_clients: int, modulus_bits: int = 32) -> Quantizer:
        """The finest quantizer whose sum over ``num_clients`` clients cannot wrap around."""
        if num_clients < 1:
            raise OptionError(f"a cohort needs at least one client, got {num_clients}")
        levels = min(MAX_LEVELS, (2**modulus_bits - 1) // num_clients + 1)
        if levels < 2:
            raise OptionError(
                f"a {modulus_bits}-bit modulus cannot sum {num_clients} clients without overflow;"
                f" use at least {num_clients.bit_length()} bits"
            )
        return cls(clip=float(clip), levels=levels, modulus_bits=modulus_bits)

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def dtype(self) -> np.dtype:
        """The word type the sums live in (arithmetic wraps mod 2^32 or 2^64, then is reduced mod 2^b)."""
        return np.dtype(np.uint32 if self.modulus_bits <= 32 else np.uint64)

    @property
    def step(self) -> float:
        return 2 * self.clip / (self.levels - 1)

    def max_clients(self) -> int:
        """The largest cohort whose sum fits: ``n * (levels - 1) <= 2**b - 1``."""
        return (self.modulus - 1) // (self.levels - 1)

    def check_capacity(self, num_clients: int) -> None:
        """Raise ``OptionError`` when a sum over ``num_clients`` clients could wrap around the modulus."""
        if num_clients > self.max_clients():
            raise OptionError(
                f"secure aggregation would overflow: {num_clients} clients x {self.levels - 1} (largest"
                f" quantized value for clip range {self.clip}) exceeds 2^{self.modulus_bits} - 1; at most"
                f" {self.max_clients()} clients fit, use fewer levels or a larger modulus"
            )

    def reduce(self, words: np.ndarray) -> np.ndarray:
        """``words mod 2^b`` in place (a no-op when b is the word size)."""
        if self.modulus_bits not in (32, 64):
            np.bitwise_and(words, words.dtype.type(self.modulus - 1), out=words)
        return words

    def quantize(self, vector: np.ndarray) -> np.ndarray:
        """Clip and round a float vector to integer points, as words of ``self.dtype``."""
        values = np.asarray(vector, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise OptionError("cannot quantize a vector with NaN or infinite values")
        scaled = (np.clip(values, -self.clip, self.clip) + self.clip) / self.step
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, self.levels - 1, out=scaled)
        return scaled.astype(self.dtype)

    def dequantize_sum(self, total: np.ndarray, num_clients: int) -> np.ndarray:
        """The float sum of ``num_clients`` vectors from the (reduced) sum of their quantized words."""
        self.check_capacity(num_clients)
        return total.astype(np.float64) * self.step - num_clients * self.clip

    def max_sum_error(self, num_clients: int) -> float:
        """Bound on ``|dequantized sum - true sum of clipped vectors|`` per coordinate."""
        return num_clients * self.step / 2
