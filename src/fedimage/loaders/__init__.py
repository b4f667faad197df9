"""Adapters from fedimage stores to federated-learning frameworks (each behind its own extra).

- :mod:`fedimage.loaders.pfl`: pfl-research's ``FederatedDataset`` over a store split
  and central evaluation datasets (extra ``pfl``).
- :mod:`fedimage.loaders.flower`: a store's clients by Flower partition id (``StorePartitioner``,
  ``load_client``, ``load_central``); :mod:`fedimage.federation`: the ClientApp and
  ServerApp that ``fedimage train --engine flower`` runs in Flower's simulation engine (extra ``flower``).
"""
