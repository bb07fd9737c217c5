"""Launching a verb: compose, pre-flight, hand over to Hydra (sweeps, launchers, Slurm); no torch here."""
