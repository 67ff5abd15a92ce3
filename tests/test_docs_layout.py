"""README's "Layout" table and docs/architecture.md's module map name every module of the tree.

Catches: a module added, renamed or removed without the docs following (for example a
``transitions.py`` row left after the file became ``buffer.py``, or ``buffer.py`` missing).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tree() -> set[str]:
    """Top-level modules and subpackages of keras_trpo (``buffer.py``, ``cli/``), as the docs name them."""
    package = Path(importlib.util.find_spec("keras_trpo").submodule_search_locations[0])
    names = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    names |= {f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def named(table: str) -> set[str]:
    """Module names written in backticks in the table's first columns (``keras_trpo/x.py`` or ``x.py``)."""
    names = set()
    for line in table.splitlines():
        if not line.startswith("|"):
            continue
        cells = line.split("|")[1:-1]
        for cell in cells[:2]:
            for name in re.findall(r"`(?:keras_trpo/)?([\w/]+(?:\.py|/))`", cell):
                names.add(name)
    return names


@pytest.mark.parametrize(
    "document, heading",
    [("README.md", "## Layout"), ("docs/architecture.md", "## Module map")],
)
def test_the_docs_name_every_module_and_no_other(document, heading):
    table = section((ROOT / document).read_text(encoding="utf-8"), heading)
    documented, modules = named(table), tree()
    assert not modules - documented, f"{document} {heading!r} does not name {sorted(modules - documented)}"
    package = Path(importlib.util.find_spec("keras_trpo").submodule_search_locations[0])
    stale = {name for name in documented - modules if not (package / name).exists() and not (ROOT / name).exists()}
    assert not stale, f"{document} {heading!r} names modules that do not exist: {sorted(stale)}"
