"""Config: composing Hydra config groups, schemas, validation and friendly errors (torch-free)."""
