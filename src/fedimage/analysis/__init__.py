"""fedimage.analysis."""
