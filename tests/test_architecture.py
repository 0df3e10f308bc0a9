"""The house as docs/architecture.md draws it: each module imports only its own layer and the layers below, and no
function of the package grows past what a reader takes in at once. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "quickdraw_mobile"
MAX_FUNCTION_LINES = 80

# Lowest first; a module belongs to the first entry whose name is it or its package (longest match wins).
LAYERS = [
    ("foundation", ["quickdraw_mobile", "errors", "options", "artifact_names", "fileio", "figures", "device"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("runs", ["runfolder", "results", "inference"]),
    ("training step", ["train.config", "train.distill", "train.mixing", "train.ema", "train.step",
                       "train.distributed"]),
    ("model reference", ["modelref"]),
    ("training", ["train", "train.loop", "train.teachers"]),
    ("evaluation", ["evaluate"]),
    ("artifacts", ["export"]),  # lowering, files, runtimes, verification
    ("measurement", ["bench.latency", "bench.memory", "bench.native"]),
    ("quantization", ["quant"]),
    ("verbs", ["export.pipeline", "bench", "predict", "extend", "teach"]),
    ("report", ["report"]),
    ("serving", ["serve"]),
    ("pipeline", ["pipeline"]),
    ("cli", ["cli"]),
]
RANK = {("quickdraw_mobile" if name == "quickdraw_mobile" else f"quickdraw_mobile.{name}"): rank
        for rank, (_, names) in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    name = module
    while name not in RANK:
        assert "." in name, f"{module}: in no layer of LAYERS (add it, and to docs/architecture.md)"
        name = name.rsplit(".", 1)[0]
    return RANK[name]


def _imports(path: Path) -> set[str]:
    """Package modules that ``path`` imports, at the top or inside functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:  # "from . import runfolder" names a module, "from .x import f" a name
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                found.add(candidate if is_module else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "quickdraw_mobile"}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_imports_only_its_layer_and_below():
    upward = []
    for path in _sources():
        module = _module_name(path)
        for target in _imports(path):
            if _layer(target) > _layer(module):
                upward.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} "
                              f"({LAYERS[_layer(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_the_check_sees_an_upward_import():
    assert _layer("quickdraw_mobile.export.pipeline") > _layer("quickdraw_mobile.quant.registry")
    assert _layer("quickdraw_mobile.train.teachers") > _layer("quickdraw_mobile.modelref")
    assert "quickdraw_mobile.quant.registry" in _imports(PACKAGE / "export" / "pipeline.py")
    assert _layer("quickdraw_mobile.data.store") < _layer("quickdraw_mobile.quant.compare")


def test_no_function_is_longer_than_a_screen():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in _sources() for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)
