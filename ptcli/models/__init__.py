"""Models: building them from config or loading them, what a trained module is, and where it runs."""
