"""Processors: the tokenizers (trained or loaded) and other input processors a model is used with."""
