"""Data: sources, the embedded corpus, packing and the token cache."""
