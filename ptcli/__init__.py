"""ptcli: pretrain, fine-tune, generate with and evaluate transformer models from the command line."""

__version__ = "0.1.0"
