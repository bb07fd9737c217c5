"""Data sources: one module per kind of input (``dataset`` config group); each is a dataclass of its settings."""
