"""Objectives: one per file; each owns its processors, data, model, loss, metrics and export (see base.py)."""
