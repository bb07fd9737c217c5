"""Shared test helpers: run the CLI in a subprocess, find ../shared/data, keep caches per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenizer and packed-corpus caches live in a per-session temp folder, never in the user's home."""
    os.environ["PTCLI_CACHE_DIR"] = str(tmp_path_factory.mktemp("ptcli-cache"))
    yield


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m ptcli ARGS`` in a subprocess, as a user would run it; returns the completed process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("PTCLI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ptcli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, input=stdin)


def shared_data(relative: str) -> Path:
    """A file under ../shared/data; skips when absent, fails under PTCLI_REQUIRE_SHARED=1 (CI)."""
    path = SHARED_DATA / relative
    if not path.exists():
        reason = f"{path} is absent (real data lives in ../shared/data beside the repository)"
        if os.environ.get("PTCLI_REQUIRE_SHARED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
