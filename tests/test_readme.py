"""The README and the docs pages it links: its Python code blocks run as written, it stays short
and starts with the two commands (the test command is the one CI runs), every local link
resolves, each page opens with what it holds, and every table of measurements names its machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The pages the README's content moved to (docs/design.md and docs/tuner.md have their own
#: maintainers and are only link targets here).
PAGES = [ROOT / "docs" / name for name in ("usage.md", "performance.md", "numerics.md", "environment.md")]
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
#: Names that say which machine a figure comes from.
MACHINES = ("EPYC", "Xeon", "H200", "H100", "NVIDIA", "x86_64")


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python blocks"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, capsys):
    exec(compile(code, f"{README}:python-block", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "print(layer)" in code:
        assert "depends on the input size" in out and "kept=" in out


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```(\w*)\n(.*?)```", text, flags=re.S)
    assert first_block.group(1) == "bash"
    commands = [line.split("#")[0].strip() for line in first_block.group(2).strip().splitlines()]
    assert commands == [
        "bash scripts/setup.sh && python3 -m bltriton demo",
        "bash scripts/setup.sh && python3 -m pytest -q --benchmark-disable",
    ]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(), "CI must run the README's test command"
    assert text.index(first_block.group(0)) < text.index("\n## "), "the commands come before any section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_opens_with_what_it_holds(page):
    text = page.read_text()
    first_paragraph = text.split("\n\n")[1]
    assert first_paragraph.startswith("This page holds"), first_paragraph[:80]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_local_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _tables(text: str) -> list[tuple[int, str]]:
    """``(first line index, the table's text)`` of every markdown table."""
    lines, tables, start = text.splitlines(), [], None
    for i, line in enumerate([*text.splitlines(), ""]):
        if line.startswith("|") and start is None:
            start = i
        elif not line.startswith("|") and start is not None:
            tables.append((start, "\n".join(lines[start:i])))
            start = None
    return tables


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_table_of_measurements_names_its_machine(page):
    """A table with timings or ratios (``ms``, ``×``, ``%``) names the CPU or GPU it was measured
    on, in its rows or in the paragraph above it."""
    text = page.read_text()
    lines = text.splitlines()
    for start, table in _tables(text):
        if not re.search(r"\d\s*(×|ms\b|%)", table):
            continue
        above = "\n".join(lines[max(0, start - 12) : start])
        assert any(m in table or m in above for m in MACHINES), (
            f"{page.name}: the table at line {start + 1} names no machine"
        )
