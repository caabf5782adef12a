"""
The project speaks for itself: no file sends its reader somewhere a clone
of the repository does not have.

Every text file under antenna_tw/, docs/ (not docs/_build), tests/, bench/
(not bench/results, which holds raw outputs of past runs), .ci/, conf/, and
README.md, Makefile and setup.cfg is searched for:

- the team's workbench beside the repository (``WORKBENCH`` below): the
  folder one level up, its notes and its spec;
- an issue number: ``issue 3``, ``issues 3``, ``issue #3`` (any case), or a
  ``#`` followed by digits that starts a word (``#7``, ``(#12)``). A ``#``
  glued to a word or a hex colour (``#fff``, ``#1e8db4``) does not count:
  the digits must end the token, so ``#1e8db4`` and ``#!`` pass.

Write the contract or the reason into the docs and link the page instead.
This file is not searched (it has to name the patterns).
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TREES = ("antenna_tw", "docs", "tests", "bench", ".ci", "conf")
FILES = ("README.md", "Makefile", "setup.cfg")
SKIPPED_DIRS = (ROOT / "docs" / "_build", ROOT / "bench" / "results")
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".hypothesis"}
BINARY_SUFFIXES = {".pyc", ".png", ".jpg", ".gz", ".dmp", ".bin", ".ico", ".zip"}

# The workbench's folder, spelled once: its path does not appear in the repository.
WORKBENCH = "sha" + "red"

FORBIDDEN = re.compile(
    r"SPEC\.md"
    rf"|{WORKBENCH}/notes"
    r"|notes/antenna-reference"
    rf"|\.\./{WORKBENCH}"
    r"|\bissues? #?\d+\b"
    r"|(?<![\w&/#])#\d+(?![\w])",
    re.IGNORECASE,
)


def _files():
    this = Path(__file__).resolve()
    for name in FILES:
        path = ROOT / name
        if path.is_file():
            yield path
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if not path.is_file() or path.resolve() == this:
                continue
            if path.suffix in BINARY_SUFFIXES or SKIPPED_NAMES & set(path.parts):
                continue
            if any(skipped in path.parents for skipped in SKIPPED_DIRS):
                continue
            yield path


def offences(text):
    """Every forbidden mention in ``text``, as (line number, line)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if FORBIDDEN.search(line):
            found.append((number, line.strip()))
    return found


def test_no_file_points_outside_the_project():
    bad = []
    for path in _files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in offences(text):
            bad.append(f"{path.relative_to(ROOT)}:{number}: {line[:120]}")
    assert not bad, "mentions of files or issues outside the project:\n" + "\n".join(bad)


def test_the_rule_catches_what_it_should_and_nothing_else():
    for planted in (
        "see SPEC.md section 5",
        f"as in ../{WORKBENCH}/bench",
        "notes/antenna-reference.md 4.3",
        f"{WORKBENCH}/notes/x.md",
        "(issue 7)",
        "Issue 3, acceptance 4",
        "issues 5 and 6",
        "fixed in #12.",
        "see (#3)",
    ):
        assert offences(planted), planted
    for fine in (
        "color: #fff; background: #1e8db4",
        "#!/usr/bin/env bash",
        "HTTP/1.1 200 OK",
        "# a comment",
        "random.Random(seed=20261120)",
        "anchor page.html#section-2",
        "&#39; is an apostrophe",
    ):
        assert not offences(fine), fine
