"""Training: the one loop and its parts (process group, model transforms and wrapping, checkpoints, logging)."""
