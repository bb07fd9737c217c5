"""What ``generate`` needs: loading a model by its kind, prompts, decoding, output, fill-mask."""
