"""Test-only plug-ins (objectives) that exercise the objective interface the way later objectives will."""
