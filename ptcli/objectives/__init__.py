"""Objectives: what the loop trains for (one per file); each answers head, prepare, collate, loss and metrics."""
