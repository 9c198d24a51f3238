"""rating_core is pure: no I/O libraries imported, no file access except ``load_tariff_file``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "rating_core"
FORBIDDEN = {"asyncio", "redis", "asyncpg", "uvloop", "hiredis", "socket", "selectors", "subprocess"}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes"}


def modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert found, PACKAGE
    return found


def test_no_io_library_is_imported() -> None:
    offenders = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN
            ]
    assert offenders == []


def test_importing_the_package_loads_no_io_library() -> None:
    code = "import sys, rating_core; print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))"
    out = subprocess.run(
        [sys.executable, "-c", code % (FORBIDDEN,)], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_only_load_tariff_file_touches_files() -> None:
    touching = set()
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call):
                    name = (
                        node.func.attr
                        if isinstance(node.func, ast.Attribute)
                        else getattr(node.func, "id", "")
                    )
                    if name in FILE_CALLS:
                        touching.add(f"{path.name}:{function.name}")
    assert touching == {"tariff_file.py:load_tariff_file"}
