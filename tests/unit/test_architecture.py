"""The architecture's rules, as tests: layers that point one way, no import circles, modules under 400 lines, one
caller of ``instantiate``, no test module importing another, and a config layer that never imports torch.

docs/architecture.md draws the layers; ``LAYERS`` below is the same table.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

PACKAGE = REPO / "ptcli"
# Lower numbers are lower layers: a module may import its own package and anything in a lower layer.
LAYERS = {
    "errors": 0, "__init__": 0,
    "config": 1,
    "data": 2, "models": 2, "processing": 2, "metrics": 2,
    "objectives": 3,
    "training": 4, "inference": 4, "compression": 4,
    "verbs": 5,
    "launch": 6,
    "cli": 7, "__main__": 8,
}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every ptcli module by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(path: Path, name: str) -> set[str]:
    """The ptcli modules a file imports, at module level or inside functions (lazy imports count too)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ptcli")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, node.level - 1 packages up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("ptcli"):
                known = modules()
                for alias in node.names:  # `from ptcli.data import records` imports the module ptcli.data.records
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    return top, LAYERS[top]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imported(path, name) if m in known and m != name} for name, path in known.items()}


def test_every_package_has_a_layer():
    assert {layer(m)[0] for m in modules()} <= set(LAYERS)


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        top, level = layer(module)
        for target in targets:
            other, other_level = layer(target)
            if other != top and other_level >= level:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that point up or sideways between packages:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    edges = graph()
    circles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt in on_stack:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    done: set = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [], set(), done)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_modules_stay_under_the_size_cap():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by job): {big}"


def test_only_config_build_calls_instantiate():
    callers = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "hydra.utils" \
                    and any(a.name == "instantiate" for a in node.names):
                callers.append(name)
            if isinstance(node, ast.Attribute) and node.attr == "instantiate":
                callers.append(name)
    assert set(callers) == {"ptcli.config.build"}, callers


def test_no_test_module_imports_another():
    offenders = []
    for path in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.startswith("tests.") and n.rpartition(".")[2].startswith("test_") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"test modules import other test modules (share through tests/support.py): {offenders}"


def test_the_config_layer_and_the_plugin_declarations_import_no_torch():
    """Pre-flight reads objectives' and data sources' settings: their modules must not import heavy libraries."""
    code = ("import sys\n"
            "import ptcli.config.validate, ptcli.config.build, ptcli.launch.entry, ptcli.cli\n"
            "import ptcli.objectives.clm, ptcli.objectives.mlm, ptcli.objectives.classification\n"
            "import ptcli.objectives.token_classification, ptcli.objectives.seq2seq, ptcli.objectives.sft\n"
            "import ptcli.objectives.image_classification, ptcli.objectives.mae\n"
            "import ptcli.objectives.span_corruption, ptcli.objectives.denoising, ptcli.objectives.noising\n"
            "import ptcli.data.sources.files, ptcli.data.sources.hub, ptcli.data.sources.embedded\n"
            "import ptcli.data.sources.images, ptcli.data.sources.audio, ptcli.objectives.audio_classification\n"
            "import ptcli.processing.audio, ptcli.data.wav\n"
            "import ptcli.objectives.contrastive, ptcli.objectives.retrieval\n"
            "import ptcli.objectives.electra\n"
            "print(sorted({'torch', 'transformers', 'datasets', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
