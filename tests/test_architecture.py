"""The package's shape, checked on its source: what import-linter's contract (pyproject.toml) cannot say.

- every module of ``prodmatch`` is placed in a layer of the contract, so none escapes it;
- no file in ``src/`` is over 600 lines;
- no module imports another's private (``_``) names;
- at most 10 ``prodmatch`` imports sit inside functions (the lazy ones guard optional extras);
- no module outside ``prodmatch.models`` probes a model with ``hasattr``/``getattr`` (capabilities are declared in
  :mod:`prodmatch.models.base`).

The contract itself runs in ``make test`` (``lint-imports``); the last test here runs it too when it is installed.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prodmatch"
MAX_LINES = 600
MAX_FUNCTION_IMPORTS = 10


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _prodmatch_imports(tree: ast.Module):
    """(node, imported module, names, inside a function) of every import of prodmatch."""
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("prodmatch"):
            yield node, node.module, [a.name for a in node.names], id(node) in inside
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prodmatch"):
                    yield node, alias.name, [], id(node) in inside


def test_every_module_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    placed = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    top = {".".join(m.split(".")[:2]) for m in MODULES if m != "prodmatch"}
    assert not sorted(top - placed), f"modules in no layer of the import contract: {sorted(top - placed)}"


def test_no_file_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := p.read_text().count("\n")) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines): {long}"


def test_no_private_names_cross_modules():
    private = [
        f"{module}: from {target} import {name}"
        for module, tree in MODULES.items()
        for _, target, names, _ in _prodmatch_imports(tree)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, f"imports of another module's private names: {private}"


def test_few_imports_inside_functions():
    """Outside the command line: each command imports what it runs inside its own function, so that --help and
    --version start in a fraction of a second (test_cli.test_help_and_version_import_no_heavy_library)."""
    lazy = [
        f"{module}:{node.lineno} {target}"
        for module, tree in MODULES.items()
        for node, target, _, inside in _prodmatch_imports(tree)
        if inside and not module.startswith("prodmatch.cli")
    ]
    assert len(lazy) <= MAX_FUNCTION_IMPORTS, f"{len(lazy)} prodmatch imports inside functions: {lazy}"


def test_no_model_probes_outside_models():
    probes = []
    for module, tree in MODULES.items():
        if module.startswith("prodmatch.models"):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
                and node.args
                and "model" in ast.unparse(node.args[0]).lower()
            ):
                probes.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not probes, f"declare these as capabilities in prodmatch.models.base instead: {probes}"


@pytest.mark.skipif(
    shutil.which("lint-imports") is None and not Path(sys.executable).with_name("lint-imports").exists(),
    reason="import-linter is not installed",
)
def test_import_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
