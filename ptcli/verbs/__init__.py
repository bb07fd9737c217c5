"""Verbs: what each CLI command does once its config is composed and validated."""
