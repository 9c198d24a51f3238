"""The dependency rule of docs/architecture.md, enforced on the source: every import points down.

floor 4 occ -> floor 3 aaa, billing -> floor 2 balance -> floor 1 rating_core (pure: no I/O libraries).
Every import statement counts, including those inside functions and ``if TYPE_CHECKING:`` blocks: a
lazy or type-only import upwards is still a dependency upwards.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROJECT = ("occ", "aaa", "billing", "balance", "rating_core")
IO_LIBRARIES = ("asyncio", "redis", "asyncpg", "uvloop", "hiredis", "socket", "selectors")

# package -> top-level modules it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "rating_core": frozenset({"occ", "aaa", "billing", "balance", *IO_LIBRARIES}),
    "balance": frozenset({"occ", "aaa", "billing"}),
    "aaa": frozenset({"occ", "billing"}),
    "billing": frozenset({"occ", "aaa"}),
}


def imported_modules(source: str, filename: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``; relative imports stay in the package
    and are skipped."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(package_dir: Path, forbidden: frozenset[str]) -> list[str]:
    found = []
    for file in sorted(package_dir.rglob("*.py")):
        for line, module in sorted(imported_modules(file.read_text(encoding="utf-8"), str(file))):
            if module.split(".")[0] in forbidden:
                found.append(f"{file.relative_to(package_dir.parent)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    package_dir = REPO / package
    assert package_dir.is_dir(), f"package {package} missing"
    assert violations(package_dir, FORBIDDEN[package]) == []


def test_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Guards the guard: a checker that found nothing would pass on any tree."""
    pkg = tmp_path / "rating_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import sub\nfrom .sub import x\n")
    (pkg / "sub" / "__init__.py").write_text(
        "import asyncio.subprocess\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from balance.store import BalanceStore\n"
        "def f():\n"
        "    import redis.asyncio as r\n"
        "    from occ import daemon\n"
    )
    found = violations(pkg, FORBIDDEN["rating_core"])
    assert found == [
        "rating_core/sub/__init__.py:1: imports asyncio.subprocess",
        "rating_core/sub/__init__.py:4: imports balance.store",
        "rating_core/sub/__init__.py:6: imports redis.asyncio",
        "rating_core/sub/__init__.py:7: imports occ",
    ]


def test_every_project_package_has_a_rule_or_is_the_top() -> None:
    assert set(FORBIDDEN) | {"occ"} == set(PROJECT)


# Sans-IO protocol modules (STYLE.md #1): bytes in, events and bytes out; the transports do the I/O.
PURE_PROTOCOL_MODULES = (
    "occ/diameter/codec.py",
    "occ/diameter/dictionary.py",
    "occ/diameter/peer.py",
    "occ/diameter/cc_request.py",
    "occ/diameter/cc_answer.py",
)


@pytest.mark.parametrize("module", PURE_PROTOCOL_MODULES)
def test_protocol_codecs_and_state_machines_do_no_io(module: str) -> None:
    file = REPO / module
    imports = [
        f"{module}:{line}: imports {name}"
        for line, name in imported_modules(file.read_text(encoding="utf-8"), module)
        if name.split(".")[0] in (*IO_LIBRARIES, "balance", "billing", "aaa")
    ]
    assert imports == []
