"""fedimage.conversion.executors."""
