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
TRAINABLE = "trainable.safetensors"  # LoRA runs: the trainable parameters only (adapter, modules saved in full)


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
    """``<run>/checkpoints/step-<N>/``: weights (safetensors), optimizer, scheduler, RNG and loop state. A LoRA
    run's checkpoint holds only its trainable parameters (``trainable.safetensors``): the base stays in its folder.

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
            rngs = dist.gather_objects(rng_state()) if dist is not None else [rng_state()]  # every rank's own
            if rank0:
                self._write(tmp, final, model, optimizer, scheduler, scaler, loop_state, sharded, rngs)
        except Exception as e:  # torch.save reports a full disk as RuntimeError, not OSError
            if rank0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise self.write_failure(step, e) from None
        if rank0:
            self._prune()
        return final if rank0 else None

    def write_failure(self, step: int, error: Exception) -> RunFailure:
        """A failed save as one clear error: a full disk said so, the previous checkpoint named."""
        text = str(error)
        full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
            marker in text for marker in ("No space left", "file write failed", "Disk quota", "unexpected pos"))
        why = "the disk is full" if full else (getattr(error, "strerror", None) or f"{type(error).__name__}: {text}")
        last = self.latest()
        return RunFailure(f"could not write checkpoint step {step}: {why.splitlines()[0][:200]}; the partial "
                          "checkpoint was removed", where=str(self.dir),
                          fix=("Free disk space (or set run.out_dir elsewhere) and resume" if full
                               else "Check the folder and resume")
                          + (f"; the previous checkpoint {last.name} is intact" if last else ""))

    def _write(self, tmp: Path, final: Path, model, optimizer, scheduler, scaler, loop_state, sharded,
               rngs: list) -> None:
        import torch
        from safetensors.torch import save_model

        trainer = {"scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
        if not sharded:
            if is_peft(model):  # the frozen base is reloaded from its own folder at resume
                from safetensors.torch import save_file

                save_file(trainable_state(model), str(tmp / TRAINABLE))
            else:
                save_model(model, str(tmp / "model.safetensors"))
            trainer["optimizer"] = optimizer.state_dict()
        torch.save(trainer, tmp / "optimizer.pt")
        torch.save({**rngs[0], "ranks": rngs}, tmp / "rng.pt")
        write_model_config(model, tmp)
        from ptcli.training.integrity import DIGESTS, file_digests

        (tmp / COMPLETE).write_text(json.dumps(loop_state | {DIGESTS: file_digests(tmp, COMPLETE)}, indent=1))
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
            trash = old.with_name(f".trash-{old.name}")  # renamed first: a kill mid-delete leaves no half checkpoint
            os.rename(old, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def clean(self, log) -> None:
        """Remove the unfinished folders a killed run left (rank 0, before training starts)."""
        from ptcli.training.integrity import clean_leftovers

        clean_leftovers(self.dir, COMPLETE, log)

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step-*") if (p / COMPLETE).is_file())

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1] if found else None


def find_checkpoint(resume: str | None, run_dir: Path, log=print, key: str = "train.resume") -> Path | None:
    """``auto``: the newest intact checkpoint of this run (None: start fresh); a damaged one is skipped with a
    warning. A path: that checkpoint folder, or a run directory's newest intact one; a damaged checkpoint named
    on purpose is an error naming the damage."""
    from ptcli.training.integrity import damage

    if resume in (None, "", "none"):
        return None
    path = Path(run_dir if resume == "auto" else resume)
    if resume != "auto" and (path / COMPLETE).is_file():
        problem = damage(path, COMPLETE)
        if problem:
            raise PtcliError(f"checkpoint {path} is damaged: {problem}", where=key,
                             fix="Resume from an earlier checkpoint (checkpoints/step-N) or the run directory "
                                 "(its newest intact one)")
        return path
    found = CheckpointManager(path, 0).complete()
    for candidate in reversed(found):
        problem = damage(candidate, COMPLETE)
        if problem is None:
            return candidate
        log(f"warning: checkpoint {candidate.name} is damaged ({problem}); trying the one before it")
    if found:
        raise PtcliError(f"every checkpoint in {path / 'checkpoints'} is damaged", where=key,
                         fix="Start a new run (without train.resume), or restore the checkpoints from a backup")
    if resume == "auto":
        return None
    raise PtcliError(f"no complete checkpoint in '{resume}'", where=key,
                     fix="Give a checkpoints/step-N folder or a run directory with checkpoints")


def load(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by ``CheckpointManager.save``, whichever the strategy that wrote it and the one
    restoring it (one process, DDP or FSDP, any world size); returns the loop state. Called by every process.
    Nothing is unpickled beyond plain data (``weights_only=True``; sharded metadata through ``safe_dcp``)."""
    import pickle

    import torch

    from ptcli.models.modules import is_fsdp
    from ptcli.training.integrity import DIGESTS

    try:
        states = torch.load(path / "optimizer.pt", weights_only=True)
        if (path / SHARDED).is_dir():
            _load_sharded(path / SHARDED, model, optimizer)
        elif is_fsdp(model):
            _load_full_into_sharded(path, model, optimizer, states["optimizer"])
        elif (path / TRAINABLE).is_file():
            load_trainable(model, path / TRAINABLE)
            optimizer.load_state_dict(states["optimizer"])
        else:
            from safetensors.torch import load_model

            load_model(model, str(path / "model.safetensors"))
            optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["scheduler"])
        scaler.load_state_dict(states["scaler"])
        set_rng_state(own_rng_state(torch.load(path / "rng.pt", weights_only=True)))
    except PtcliError:
        raise
    except (pickle.UnpicklingError, OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in detail or isinstance(e, pickle.UnpicklingError):  # never advise weights_only=False
            detail = "a file holds more than plain tensors and numbers, which ptcli never unpickles"
        raise PtcliError(f"checkpoint {path} cannot be restored: {detail[:300]}", where="train.resume",
                         fix="Resume from another checkpoint of the same model (checkpoints/step-N), or start a new "
                             "run; the model and optimizer must match the ones that wrote it") from None
    state = json.loads((path / COMPLETE).read_text())
    state.pop(DIGESTS, None)
    return state


def is_peft(model) -> bool:
    return getattr(model, "peft_config", None) is not None


def trainable_state(model) -> dict:
    """The parameters that train, by name (a LoRA run's adapter and the modules it trains in full)."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, file: Path) -> None:
    """A LoRA checkpoint's trainable parameters into the model (its frozen base already loaded); every trainable
    parameter must be there and nothing else."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(file))
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != wanted:
        odd = sorted(set(saved) ^ wanted)
        raise ValueError(f"the checkpoint's trainable parameters do not match the model's ({', '.join(odd[:3])})")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)


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
    the export member). Not for LoRA models (their checkpoint holds only the trainable parameters: the run exports
    the adapter, and `ptcli export --merge` the merged model)."""
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


def own_rng_state(saved: dict) -> dict:
    """This process's RNG state from a checkpoint's: its rank's when the world size is the one that saved (dropout
    draws as many numbers as a rank's batch has elements, so ranks with batches of other shapes drift apart),
    else rank 0's."""
    import torch.distributed as dist

    ranks = saved.get("ranks") or []
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return ranks[rank] if len(ranks) == world else saved


def set_rng_state(state: dict) -> None:
    import ast

    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
