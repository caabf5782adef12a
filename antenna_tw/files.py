"""Small filesystem helpers shared by the spool and filesystem storage."""

from __future__ import annotations

import os


def unlink_if_present(path: str) -> None:
    """Remove ``path``; one already gone is fine (a crash may be removed twice)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def absolute_path(path: str) -> str:
    """``os.path.abspath`` with a plain ``str`` signature, which mypy's attrs plugin can type."""
    return os.path.abspath(path)
