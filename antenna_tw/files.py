"""
Small helpers for files: removing and naming them (the spool, filesystem
storage), and whether the process that left some is still running (shard
status files, metric directories).
"""

from __future__ import annotations

import os


def unlink_if_present(path: str) -> None:
    """Remove ``path``; one already gone is fine (a crash may be removed twice)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def process_running(pid: int) -> bool:
    """True while process ``pid`` runs, as this user or another."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def absolute_path(path: str) -> str:
    """``os.path.abspath`` with a plain ``str`` signature, which mypy's attrs plugin can type."""
    return os.path.abspath(path)
