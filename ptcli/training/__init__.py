"""Training: the one loop and its parts (optimizer, device, distributed, checkpoints, logging)."""
