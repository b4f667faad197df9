"""The federated store: HDF5 layout, writer, reader and checksums."""
