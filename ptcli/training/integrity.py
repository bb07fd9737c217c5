"""Is a checkpoint whole? Digests recorded at save time, checked before a resume or an export; and the leftovers a
killed save or prune leaves behind, cleaned up."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

DIGESTS = "_files"  # the key in state.json that lists every other file of the checkpoint with its size and digest


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(folder: Path, skip: str) -> dict:
    """``{relative path: [size, sha256]}`` of every file under ``folder`` except ``skip``."""
    return {str(p.relative_to(folder)): [p.stat().st_size, digest(p)]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != skip}


def damage(folder: Path, state_name: str) -> str | None:
    """What is wrong with a checkpoint folder (None: whole): an unreadable state file, a missing, truncated or
    changed file. A checkpoint written before digests were recorded is taken as whole."""
    try:
        state = json.loads((folder / state_name).read_text())
    except (OSError, ValueError) as e:
        return f"{state_name} is unreadable ({type(e).__name__})"
    for name, (size, expected) in (state.get(DIGESTS) or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} were written (truncated or replaced)"
        if digest(path) != expected:
            return f"{name} does not match the digest recorded when it was written"
    return None


def clean_leftovers(folder: Path, state_name: str, log) -> None:
    """Remove what a killed run leaves in ``checkpoints/``: half-written ``.tmp-step-*`` folders, ``.trash-*``
    folders of an interrupted prune, and ``step-*`` folders without their state file (never finished)."""
    if not folder.is_dir():
        return
    debris = [p for p in folder.iterdir() if p.is_dir() and (p.name.startswith((".tmp-step-", ".trash-"))
                                                               or (p.name.startswith("step-")
                                                                   and not (p / state_name).is_file()))]
    for path in debris:
        shutil.rmtree(path, ignore_errors=True)
    if debris:
        log(f"checkpoints: removed {len(debris)} unfinished folder(s) a stopped run left ({debris[0].name}, ...)")
