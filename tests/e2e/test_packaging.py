"""The wheel ships ``configs/`` as ``ptcli.configs`` and the CLI works from an installed copy, away from the repo.

One module-scoped fixture builds the wheel (offline, no build isolation, from a copy of the repository's files so
that setuptools' ``build/`` and ``*.egg-info`` never land in the checkout), installs it with ``--no-deps`` into a
fresh venv and then makes the main venv's dependencies importable there through a plain ``.pth`` path line. A plain
path line does not process that folder's own ``.pth`` files, so ptcli's editable install stays inactive; the tests
check this by asserting ``ptcli.__file__`` lies inside the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow

BIN = "Scripts" if os.name == "nt" else "bin"


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"{proc.args} exited {proc.returncode}\n"
                                  f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def repo_files() -> list[str]:
    """The repository's files as a build sees them: tracked plus untracked-but-not-ignored (new work in progress)."""
    out = ok(run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)).stdout
    return sorted({f for f in out.split("\0") if f and (REPO / f).is_file()})


def repo_markers() -> dict[str, float | None]:
    """What a build in the checkout would create or touch: build/, dist/ and the egg-info (mtime or None)."""
    paths = [REPO / "build", REPO / "dist", *REPO.glob("*.egg-info")]
    return {p.name: (p.stat().st_mtime if p.exists() else None) for p in paths}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PTCLI_DEBUG", "PTCLI_CONFIG_PATH", "VIRTUAL_ENV")
           and not k.startswith("PIP_")}
    return {**env, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1",
            "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


class Installed:
    def __init__(self, files: list[str], wheel: Path, venv: Path, elsewhere: Path):
        self.files, self.wheel, self.venv, self.elsewhere = files, wheel, venv, elsewhere
        self.python = venv / BIN / ("python.exe" if os.name == "nt" else "python")
        self.ptcli = venv / BIN / ("ptcli.exe" if os.name == "nt" else "ptcli")
        self.env = clean_env(VIRTUAL_ENV=str(venv), PATH=f"{venv / BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run([self.ptcli, *args], cwd=self.elsewhere, env=self.env)

    def py(self, code: str) -> subprocess.CompletedProcess:
        return run([self.python, "-c", code], cwd=self.elsewhere, env=self.env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    before = repo_markers()

    # 1. Build from a copy of the repo's files: setuptools writes build/ and *.egg-info beside the sources.
    files = repo_files()
    src = tmp / "src"
    for rel in files:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    dist = tmp / "dist"
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "--no-cache-dir", "-w", dist, src], cwd=tmp, env=clean_env(), timeout=300))
    wheels = list(dist.glob("ptcli-*.whl"))
    assert len(wheels) == 1, wheels
    assert repo_markers() == before, "building the wheel wrote into the repository"

    # 3. A fresh venv; install the wheel with the venv's own pip *before* the main venv becomes visible, so pip
    #    never sees (nor tries to uninstall) the main venv's editable ptcli.
    venv = tmp / "venv"
    ok(run([sys.executable, "-m", "venv", venv], cwd=tmp, env=clean_env(), timeout=120))
    inst = Installed(files, wheels[0], venv, tmp / "elsewhere")
    inst.elsewhere.mkdir()
    ok(run([inst.python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", inst.wheel],
           cwd=tmp, env=inst.env, timeout=120))

    # The dependencies come from the main venv through a plain path line (its own .pth files stay unprocessed).
    fresh_site = Path(ok(inst.py("import sysconfig; print(sysconfig.get_paths()['purelib'])")).stdout.strip())
    assert fresh_site.resolve().is_relative_to(venv.resolve()), fresh_site
    main_sites = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (fresh_site / "zz_main_venv_deps.pth").write_text("".join(f"{p}\n" for p in main_sites))
    return inst


def test_wheel_contains_every_config(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert "ptcli/configs/pretrain.yaml" in names
    assert "ptcli/configs/model/gpt2-tiny.yaml" in names
    configs = [f for f in installed.files if f.startswith("configs/") and f.endswith(".yaml")]
    assert len(configs) >= 10, configs
    missing = [f for f in configs if f"ptcli/{f}" not in names]
    assert not missing, f"configs/ files missing from the wheel: {missing}"


def test_wheel_contains_every_module(installed):
    """``packages`` is listed by hand in pyproject.toml: a new ptcli/ subpackage must be added there too."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = [f for f in installed.files if f.startswith("ptcli/") and f.endswith(".py")]
    missing = [f for f in modules if f not in names]
    assert not missing, f"modules missing from the wheel (add their package to [tool.setuptools] packages): {missing}"


def test_installed_copy_is_imported_not_the_checkout(installed):
    proc = ok(installed.py("import ptcli, ptcli.config.paths as p; print(ptcli.__file__); "
                           "print(p.packaged_config_dir())"))
    module_file, config_dir = (Path(line) for line in proc.stdout.split())
    venv = installed.venv.resolve()
    assert module_file.resolve().is_relative_to(venv), f"ptcli imported from {module_file}, not the fresh venv"
    assert config_dir.resolve().is_relative_to(venv), f"configs found at {config_dir}, not in the fresh venv"
    assert (config_dir / "model" / "gpt2-tiny.yaml").is_file()
    assert not config_dir.resolve().is_relative_to(REPO.resolve())


def test_installed_cli_help(installed):
    proc = ok(installed.cli("--help"))
    for verb in ("pretrain", "finetune", "generate", "evaluate", "config"):
        assert verb in proc.stdout
    proc = ok(installed.cli("pretrain", "--help"))
    assert "gpt2-tiny" in proc.stdout


def test_installed_cli_composes_config(installed):
    proc = ok(installed.cli("config", "pretrain", "+objective=mlm"))
    assert "arch: bert" in proc.stdout


def test_installed_cli_dry_run(installed):
    proc = ok(installed.cli("pretrain", "--dry-run"))
    assert "# dry run" in proc.stdout
