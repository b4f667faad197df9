"""SecAgg+ secure aggregation (Bonawitz et al. 2017; Bell et al. 2020); needs the ``privacy`` extra.

Clients sit on a random regular graph of logarithmic degree. Each agrees X25519 keys with its
neighbours (HKDF-SHA256), Shamir-shares its self-mask seed and mask private key among them
(AES-256-GCM encrypted), and sends its clipped update quantized into Z_(2^b) plus a self mask and
pairwise masks expanded by ChaCha20 (or AES-CTR) from 256-bit keys. The server learns only the sum
of the clients that finish, and recovers from dropouts at any stage while at least ``threshold``
clients (and shares) survive.

``secure_sum(vectors, clip_range)`` runs a whole round in memory; ``SecAggServer`` and
``SecAggClient`` are the transport-agnostic state machines; ``messages`` holds what they exchange,
and ``wire`` turns those messages (and a client's saved state) into flat records of the value types
Flower's ``ConfigRecord`` takes.
"""

from __future__ import annotations

from fedimage.privacy.secagg.client import SecAggClient
from fedimage.privacy.secagg.errors import SecAggAbort, SecAggError
from fedimage.privacy.secagg.graph import default_degree, default_threshold, random_regular_graph
from fedimage.privacy.secagg.masks import PRGS
from fedimage.privacy.secagg.messages import Stage
from fedimage.privacy.secagg.quantization import Quantizer
from fedimage.privacy.secagg.randomness import SecretSource
from fedimage.privacy.secagg.server import AggregationResult, SecAggServer
from fedimage.privacy.secagg.simulation import DropoutPlan, RoundReport, StageCost, secure_sum, simulate_round

__all__ = [
    "PRGS",
    "AggregationResult",
    "DropoutPlan",
    "Quantizer",
    "RoundReport",
    "SecAggAbort",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "SecretSource",
    "Stage",
    "StageCost",
    "default_degree",
    "default_threshold",
    "random_regular_graph",
    "secure_sum",
    "simulate_round",
]
