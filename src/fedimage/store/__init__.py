"""The federated store, the file format only: its schema (:mod:`~fedimage.store.schema`), writer,
reader, checksums, verification, and the sealing protocol that encrypted stores implement.

This package imports nothing from :mod:`fedimage.conversion` or :mod:`fedimage.privacy`.
"""
