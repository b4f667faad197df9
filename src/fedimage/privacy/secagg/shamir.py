"""Shamir secret sharing of 32-byte secrets over GF(2^521 - 1), with fixed-size share encodings.

Plain modular arithmetic on Python integers (not a cipher). Shares are ``x -> y`` with ``x`` a
holder's nonzero public index and ``y`` encoded big-endian on ``SHARE_BYTES`` bytes, so a share's
size never depends on its value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fedimage.privacy.secagg.errors import SecAggError
from fedimage.privacy.secagg.randomness import SecretSource

PRIME = (1 << 521) - 1  # a Mersenne prime, larger than any 64-byte secret
SHARE_BYTES = 66  # ceil(521 / 8)
MAX_SECRET_BYTES = 64
_COEFFICIENT_BYTES = 82  # 656 random bits reduced mod a 521-bit prime: bias below 2^-128


def split(secret: bytes, holders: Iterable[int], threshold: int, secrets: SecretSource) -> dict[int, bytes]:
    """Shares of ``secret`` for the holder indices ``holders``; any ``threshold`` of them recover it."""
    xs = sorted(set(holders))
    if len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"secrets of at most {MAX_SECRET_BYTES} bytes can be shared, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 1 and the number of holders {len(xs)}")
    if any(not 0 < x < PRIME for x in xs):
        raise ValueError("holder indices must be positive field elements")
    coefficients = [int.from_bytes(secret, "big")] + [
        int.from_bytes(secrets.random_bytes(_COEFFICIENT_BYTES), "big") % PRIME for _ in range(threshold - 1)
    ]
    shares = {}
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes], threshold: int, secret_bytes: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0).

    Wrong shares give a wrong secret, not an error, unless the result is out of range: callers check
    the secret against a commitment (a public key or a hash).
    """
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares cannot recover a secret with threshold {threshold}")
    points = []
    for x, encoded in sorted(shares.items())[:threshold]:
        if len(encoded) != SHARE_BYTES:
            raise SecAggError(f"share {x} has {len(encoded)} bytes, expected {SHARE_BYTES}")
        y = int.from_bytes(encoded, "big")
        if not (0 < x < PRIME and y < PRIME):
            raise SecAggError(f"share {x} is not a point of the field")
        points.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * secret_bytes):
        raise SecAggError("shares are inconsistent: the recovered value is not a secret of the expected size")
    return secret.to_bytes(secret_bytes, "big")
