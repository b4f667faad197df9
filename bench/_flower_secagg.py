"""Per-round costs of Flower's SecAgg+ primitives, run in an interpreter where ``flwr`` is installed.

Called by ``bench/secagg.py`` (``--flower-python``); prints one JSON object. It composes the
primitives exactly as ``flwr.client.mod.secure_aggregation.secaggplus_mod`` and Flower's server
workflow do (ECDH on SECP384R1 + HKDF + Fernet, pycryptodome Shamir on 16-byte chunks, NumPy
``RandomState`` masks seeded with 32 bits, int64 vectors), without Flower's gRPC transport.

    python bench/_flower_secagg.py --clients 100 --dimension 1000000 --degree 20 --threshold 11
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition, parameters_mod
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen, share_keys_plaintext_concat
from flwr.supercore.primitives.asymmetric import generate_key_pairs, private_key_to_bytes, public_key_to_bytes

MOD_RANGE = 1 << 32
QUANTIZATION_RANGE = (1 << 32) // 1000


def client_round(dimension: int, degree: int, threshold: int, update: np.ndarray) -> dict[str, float]:
    """One client's work in the four stages (neighbours' keys are stand-ins made outside the timing)."""
    peers = [generate_key_pairs() for _ in range(degree)]
    times = {}
    tick = time.perf_counter()
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    public = public_key_to_bytes(pk1) + public_key_to_bytes(pk2)
    times["advertise"] = time.perf_counter() - tick

    tick = time.perf_counter()
    seed = os.urandom(32)
    seed_shares = create_shares(seed, threshold, degree + 1)
    key_shares = create_shares(private_key_to_bytes(sk1), threshold, degree + 1)
    shared = []
    ciphertexts = []
    for i, (_, peer_public) in enumerate(peers):
        key = generate_shared_key(sk2, peer_public)
        shared.append(key)
        ciphertexts.append(encrypt(key, share_keys_plaintext_concat(0, i + 1, seed_shares[i], key_shares[i])))
    times["share_keys"] = time.perf_counter() - tick
    share_bytes = sum(len(c) for c in ciphertexts)

    tick = time.perf_counter()
    for key, ciphertext in zip(shared, ciphertexts, strict=True):
        decrypt(key, ciphertext)
    vector = quantize([update], 1.0, QUANTIZATION_RANGE)
    vector = parameters_addition(vector, pseudo_rand_gen(seed, MOD_RANGE, [(dimension,)]))
    for i, (_, peer_public) in enumerate(peers):
        pair = generate_shared_key(sk1, peer_public)
        mask = pseudo_rand_gen(pair, MOD_RANGE, [(dimension,)])
        vector = (
            parameters_addition(vector, mask) if i % 2 else [v - m for v, m in zip(vector, mask, strict=True)]
        )
    vector = parameters_mod(vector, MOD_RANGE)
    times["masked_input"] = time.perf_counter() - tick
    return times | {
        "key_bytes": len(public),
        "share_bytes": share_bytes,
        "masked_bytes": vector[0].nbytes,
        "seed_share": seed_shares,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--dimension", type=int, required=True)
    parser.add_argument("--degree", type=int, required=True)
    parser.add_argument("--threshold", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    update = np.random.default_rng(args.seed).uniform(-1, 1, args.dimension).astype(np.float32)
    client = client_round(args.dimension, args.degree, args.threshold, update)

    # server: sum of int64 masked vectors (a sample of additions, scaled), then per survivor one
    # Shamir reconstruction and one self-mask regeneration (one timed, scaled)
    total = np.zeros(args.dimension, dtype=np.int64)
    masked = np.random.default_rng(1).integers(0, MOD_RANGE, args.dimension, dtype=np.int64)
    sample = min(args.clients, 5)
    tick = time.perf_counter()
    for _ in range(sample):
        total = parameters_addition([total], [masked])[0]
    add_seconds = (time.perf_counter() - tick) / sample
    tick = time.perf_counter()
    seed = combine_shares(client["seed_share"][: args.threshold])
    pseudo_rand_gen(seed, MOD_RANGE, [(args.dimension,)])
    unmask_seconds = time.perf_counter() - tick
    server = args.clients * (add_seconds + unmask_seconds)
    client.pop("seed_share")
    print(json.dumps({"client": client, "server_seconds": server, "add_seconds": add_seconds}))


if __name__ == "__main__":
    main()
