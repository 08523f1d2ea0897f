"""One short entry point per pipeline stage (see dvc.yaml)."""
