"""The package layers, checked on the source: a lower layer never imports a higher one.

``lte_core`` is the stream's pure maths (the worker imports it, so it must never pull in
torch or any process plumbing); ``serving`` runs without the worker's code installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "lte_core": {
        "torch",
        "offline",
        "streams",
        "serving",
        "lte_runtime",
        "lte_cli",
        "aiokafka",
        "faust",
        "redis",
        "aiohttp",
        "rocksdict",
    },
    "offline": {"streams", "serving", "lte_cli"},
    "lte_runtime": {"streams", "serving", "lte_cli", "offline"},
    "serving": {"streams", "lte_cli"},
    "streams": {"serving", "lte_cli"},
}


#: Process entry points may reach up to the command line that configures them:
#: ``faust -A streams.app worker`` builds its settings exactly as ``lte worker`` does.
ENTRY_POINTS = {"streams/app.py": {"lte_cli"}}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_higher_layer(package: str) -> None:
    offenders = {
        name: sorted(_imported_roots(path) & FORBIDDEN[package] - ENTRY_POINTS.get(name, set()))
        for path in sorted((ROOT / package).rglob("*.py"))
        if (name := str(path.relative_to(ROOT)))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_checker_sees_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import torch.nn\nfrom streams.worker import Worker\nfrom . import x\n")
    assert _imported_roots(module) == {"torch", "streams"}
