"""The training engines ``fedimage train --engine`` chooses from.

- :mod:`~fedimage.training.engines.pfl`: FedAvg in pfl-research's simulator (extra ``pfl``).
- :mod:`~fedimage.training.engines.flower`: Flower's simulation engine running the ClientApp and
  ServerApp of :mod:`fedimage.federation` (extra ``flower``).
- :mod:`~fedimage.training.engines.central`: the non-federated baseline (``central=True``).
"""
