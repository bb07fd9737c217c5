"""Config, the torch-free base: schemas (one default per knob), the _target_ allowlist, validation, errors."""
