"""Atomic checkpoints (temp folder, then rename), keep-last-K, restore, and the final Hugging Face folder."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

from ptcli.errors import PtcliError, RunFailure

COMPLETE = "state.json"  # written last: a folder without it is not a checkpoint
SHARDED = "sharded"  # FSDP checkpoints: model and optimizer shards (torch.distributed.checkpoint format)
MODEL_CONFIG = "model_config"  # the model's config.json (+ architectures): what `ptcli export` rebuilds


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """``<run>/checkpoints/step-<N>/``: weights (safetensors), optimizer, scheduler, RNG and loop state.

    A save writes ``.tmp-step-<N>`` and renames it into place, so a run killed mid-save (or a full disk)
    leaves the previous checkpoint intact. Loading uses ``torch.load(weights_only=True)``: nothing arbitrary
    is ever unpickled.
    """

    def __init__(self, run_dir: Path, keep_last: int):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(self, model, optimizer, scheduler, scaler, loop_state: dict, dist=None) -> Path | None:
        """Called by every process. Unsharded models (one process, DDP): rank 0 writes ``model.safetensors`` and
        ``optimizer.pt``. FSDP: every process writes its shards into ``sharded/`` (torch.distributed.checkpoint,
        which reshards on load: any world size, also one process) and rank 0 the rest."""
        sharded = dist is not None and dist.sharded
        rank0 = dist is None or dist.is_rank0
        step = loop_state["step"]
        final = self.dir / f"step-{step:08d}"
        tmp = self.dir / f".tmp-step-{step:08d}"
        try:
            if rank0:
                self.dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
            if sharded:
                dist.barrier()
                _save_sharded(model, optimizer, tmp / SHARDED)
            if rank0:
                self._write(tmp, final, model, optimizer, scheduler, scaler, loop_state, sharded)
        except OSError as e:
            if rank0:
                shutil.rmtree(tmp, ignore_errors=True)
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            last = self.latest()
            raise RunFailure(f"could not write checkpoint step {step}: {e.strerror or e}",
                             where=str(self.dir),
                             fix=("Free disk space and resume" if full else "Check the folder and resume")
                             + (f"; the previous checkpoint {last.name} is intact" if last else "")) from None
        if rank0:
            self._prune()
        return final if rank0 else None

    def _write(self, tmp: Path, final: Path, model, optimizer, scheduler, scaler, loop_state, sharded) -> None:
        import torch
        from safetensors.torch import save_model

        trainer = {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
        if not sharded:
            save_model(model, str(tmp / "model.safetensors"))
            trainer["optimizer"] = optimizer.state_dict()
        torch.save(trainer, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        write_model_config(model, tmp)
        (tmp / COMPLETE).write_text(json.dumps(loop_state, indent=1))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.dir)

    def _prune(self) -> None:
        for old in self.complete()[: -self.keep_last] if self.keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step-*") if (p / COMPLETE).is_file())

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1] if found else None


def find_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """``auto``: the newest complete checkpoint of this run (None: start fresh). A path: a checkpoint folder or a
    run directory (its newest checkpoint)."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return CheckpointManager(run_dir, 0).latest()
    path = Path(resume)
    if (path / COMPLETE).is_file():
        return path
    found = CheckpointManager(path, 0).latest()
    if found is None:
        raise PtcliError(f"no complete checkpoint in '{resume}'", where="train.resume",
                         fix="Point train.resume at a checkpoints/step-N folder or a run directory with checkpoints")
    return found


def load(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by ``CheckpointManager.save``, whichever the strategy that wrote it and the one
    restoring it (one process, DDP or FSDP, any world size); returns the loop state. Called by every process."""
    import torch

    states = torch.load(path / "optimizer.pt", weights_only=True)
    from ptcli.models.modules import is_fsdp

    if (path / SHARDED).is_dir():
        _load_sharded(path / SHARDED, model, optimizer)
    elif is_fsdp(model):
        _load_full_into_sharded(path, model, optimizer, states["optimizer"])
    else:
        from safetensors.torch import load_model

        load_model(model, str(path / "model.safetensors"))
        optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    scaler.load_state_dict(states["scaler"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / COMPLETE).read_text())


def _save_sharded(model, optimizer, folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder))
    except dcp.api.CheckpointException as e:  # raised on every rank when any rank's write failed
        for failure in _failures(e):
            if isinstance(failure, OSError):
                raise failure from None
        raise


def _failures(error) -> list:
    failures = getattr(error, "failures", {}) or {}
    return [f[0] if isinstance(f, tuple) else f for f in failures.values()]


def _load_sharded(folder: Path, model, optimizer) -> None:
    """Read FSDP shards into this model (sharded or not) and its optimizer: torch.distributed.checkpoint maps
    the saved shards onto the current layout, so the world size may differ from the one that saved."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from ptcli.training import safe_dcp

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    safe_dcp.load(state, folder)  # no pickle code runs, whatever the files hold
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _load_full_into_sharded(path: Path, model, optimizer, optim_state: dict) -> None:
    """An unsharded checkpoint (one process or DDP) into an FSDP model: every process reads the full weights and
    keeps its shard; the optimizer state, saved keyed by parameter position, is re-keyed by parameter name."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, load_file(str(path / "model.safetensors")), options=options)
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {"state": {order[int(i)]: s for i, s in optim_state["state"].items()},
               "param_groups": [dict(g, params=[order[int(i)] for i in g["params"]])
                                for g in optim_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=options)


def write_model_config(model, folder: Path) -> None:
    """Each Hugging Face model's config.json with its class in ``architectures`` (what ``save_pretrained`` records),
    so that ``ptcli export`` can rebuild the module around a checkpoint's weights: ``model_config/`` for a module
    that is one model, ``model_config/<member>/`` for each member of a ``ModelSet`` (and ``members.json`` naming
    the export member). Not for LoRA models (their checkpoint holds the base and the adapter: the run exports them)."""
    from torch.distributed.fsdp import FSDPModule

    from ptcli.models.modules import ModelSet, hf_members

    if getattr(model, "peft_config", None) is not None:
        return
    members = hf_members(model)
    for name, member in members.items():
        cls = next(c for c in type(member).__mro__ if not issubclass(c, FSDPModule))
        saved = member.config.architectures
        member.config.architectures = [cls.__name__]
        try:
            member.config.save_pretrained(folder / MODEL_CONFIG / name if name else folder / MODEL_CONFIG)
        finally:
            member.config.architectures = saved
    if isinstance(model, ModelSet):  # tensors stored once for several names (tied, or shared between members)
        groups: dict = {}
        for name, tensor in model.state_dict().items():
            groups.setdefault((tensor.data_ptr(), tuple(tensor.shape), tensor.dtype), []).append(name)
        shared = [names for names in groups.values() if len(names) > 1]
        (folder / MODEL_CONFIG / "members.json").write_text(json.dumps(
            {"export": model.export, "members": sorted(members), "shared": shared}) + "\n")


def rng_state() -> dict:
    import torch

    # numpy's global RNG is not saved: ptcli draws data order from explicitly seeded generators.
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import ast

    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
