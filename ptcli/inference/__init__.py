"""What ``generate`` and ``evaluate`` share and need: prompts, model loading for inference, decoding, metrics."""
