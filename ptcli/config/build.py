"""The only caller of ``hydra.utils.instantiate``: builds ``_target_`` sections that ``plugins.resolve`` allows."""

from __future__ import annotations

from ptcli.config import plugins
from ptcli.errors import PtcliError


def build(node, section: str, *args, named=frozenset(), **kwargs):
    """Instantiate the config section ``section`` ('objective', 'dataset', 'optim'); runtime objects pass
    positionally. ``named``: targets the user typed on the command line (a saved config has none)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = node.get("_target_", "")
    resolved = plugins.resolve(target, section, frozenset(named))
    if section == "optim":
        _check_optimizer(resolved, node)
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, PtcliError):
            raise cause from None
        raise PtcliError(f"cannot build {section} ({target}): {str(cause).splitlines()[-1]}",
                         fix=f"Check {section}._target_ and its keys (`ptcli config <verb>` shows them)") from None


def _check_optimizer(resolved, node: dict) -> None:
    """A torch optimizer must be one, and take the keys the config gives it (torch is imported by now)."""
    import importlib

    import torch

    from ptcli.config.problems import ConfigError, suggest

    cls = resolved
    if isinstance(resolved, str):
        cls = getattr(importlib.import_module("torch.optim"), resolved.rpartition(".")[2], None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        raise PtcliError(f"optim._target_ '{node.get('_target_')}' is not a torch optimizer",
                         fix="Use e.g. optim=adamw or optim._target_=torch.optim.SGD")
    names = plugins.keyword_names(cls)
    if names is None:
        return
    unknown = [k for k in node if k not in plugins.HYDRA_KEYS and k not in names]
    if unknown:
        takes = ", ".join(n for n in names if n != "params")
        raise ConfigError([f"unknown key 'optim.{k}' for {cls.__name__}{suggest(k, names, 'optim.')}"
                           for k in unknown], fix=f"{cls.__name__} takes: {takes}")
