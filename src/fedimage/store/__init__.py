"""The federated store, the file format only: its schema (:mod:`~fedimage.store.schema`), writer,
reader, checksums, verification, the sealing protocol that encrypted stores implement, and
partition overlays (:mod:`~fedimage.store.overlay`: another division of a store's images into
clients, read onto the store by :func:`~fedimage.store.opening.open_store`).

This package imports nothing from :mod:`fedimage.conversion` or :mod:`fedimage.privacy`.
"""
