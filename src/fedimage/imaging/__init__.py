"""fedimage.imaging.standardize."""
