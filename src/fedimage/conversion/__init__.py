"""fedimage.conversion."""
