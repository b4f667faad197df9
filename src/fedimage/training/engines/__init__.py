"""fedimage.training.engines."""
