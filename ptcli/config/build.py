"""The only caller of ``hydra.utils.instantiate``: builds ``_target_`` nodes from an allowlist, with clear errors."""

from __future__ import annotations

import os

from ptcli.errors import PtcliError

DEFAULT_ALLOWED = ("ptcli.", "torch.optim.")


def allowed_prefixes() -> tuple[str, ...]:
    """ptcli's own classes, torch optimizers, and the user's own packages named in $PTCLI_ALLOW_TARGETS."""
    extra = [p.strip() for p in os.environ.get("PTCLI_ALLOW_TARGETS", "").split(",") if p.strip()]
    return DEFAULT_ALLOWED + tuple(p if p.endswith(".") else p + "." for p in extra)


def build(node, key: str, *args, **kwargs):
    """Instantiate the config node at ``key`` (e.g. 'objective'); runtime objects pass positionally."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True)) if OmegaConf.is_config(node) else node
    target = node.get("_target_", "")
    if not target.startswith(allowed_prefixes()):
        raise PtcliError(f"{key}._target_ '{target}' is not allowed",
                         fix="Allow your package with PTCLI_ALLOW_TARGETS=mypkg (comma-separated prefixes)")
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, PtcliError):
            raise cause from None
        raise PtcliError(f"cannot build {key} ({target}): {str(cause).splitlines()[-1]}",
                         fix=f"Check {key}._target_ and its keys (`ptcli config <verb>` shows them)") from None
