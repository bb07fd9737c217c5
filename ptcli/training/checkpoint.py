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

    def save(self, model, optimizer, scheduler, scaler, loop_state: dict) -> Path:
        import torch
        from safetensors.torch import save_model

        step = loop_state["step"]
        final = self.dir / f"step-{step:08d}"
        tmp = self.dir / f".tmp-step-{step:08d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            save_model(model, str(tmp / "model.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict()}, tmp / "optimizer.pt")
            torch.save(rng_state(), tmp / "rng.pt")
            (tmp / COMPLETE).write_text(json.dumps(loop_state, indent=1))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            last = self.latest()
            raise RunFailure(f"could not write checkpoint step {step}: {e.strerror or e}",
                             where=str(self.dir),
                             fix=("Free disk space and resume" if full else "Check the folder and resume")
                             + (f"; the previous checkpoint {last.name} is intact" if last else "")) from None
        self._prune()
        return final

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
    """Restore everything saved by ``CheckpointManager.save``; returns the loop state."""
    import torch
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"))
    states = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    scaler.load_state_dict(states["scaler"])
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / COMPLETE).read_text())


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


def export_model(model, tokenizer, out: Path) -> Path:
    """The final ordinary Hugging Face folder (config, safetensors, tokenizer, generation config), atomically."""
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out
