"""Write one ``## Section`` of a docs page, keeping the others (used by every bench script)."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(section: str, text: str, path: Path = DEFAULT) -> None:
    """Replace (or append) the section headed ``## {section}``; ``text`` starts with that heading."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")
