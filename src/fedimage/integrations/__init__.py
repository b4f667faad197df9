"""Adapters from fedimage stores to federated-learning frameworks (each behind its own extra).

- :mod:`fedimage.integrations.pfl`: pfl-research's ``FederatedDataset`` over a store split
  and central evaluation datasets (extra ``pfl``).
"""
