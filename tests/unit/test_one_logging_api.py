"""
The collector logs through one API, ``antenna_tw.logs.Logger``: no module
but ``logs.py`` makes twisted's ``Logger`` or uses the legacy
``twisted.python.log``, so every line gets the same namespace handling
(mozlog's ``Type``) and the same path to the observers and to Sentry.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "antenna_tw"
SOURCES = sorted(PACKAGE.rglob("*.py")) + [ROOT / "twisted" / "plugins" / "antenna_plugin.py"]
CHECKED = [path for path in SOURCES if path != PACKAGE / "logs.py"]


def other_logging(source: str, where: str = "") -> list[str]:
    """Each use of twisted's Logger or of twisted.python.log in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "twisted.python.log" or (
                    node.module == "twisted.python"
                    and any(alias.name == "log" for alias in node.names)):
                found.append(f"{line} imports twisted.python.log")
            if node.module == "twisted.logger":
                found += [f"{line} imports twisted.logger.Logger"
                          for alias in node.names if alias.name == "Logger"]
        elif isinstance(node, ast.Import):
            found += [f"{line} imports twisted.python.log" for alias in node.names
                      if alias.name == "twisted.python.log"]
        elif (isinstance(node, ast.Attribute) and node.attr == "Logger"
              and ast.unparse(node.value) in ("twisted.logger", "logger")):
            found.append(f"{line} uses {ast.unparse(node)}")
    return found


def _id(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", CHECKED, ids=_id)
def test_only_the_project_logger(path: pathlib.Path) -> None:
    assert other_logging(path.read_text(), _id(path)) == []


def test_the_check_catches_each_other_api() -> None:
    planted = (
        "from twisted.logger import Logger, LogLevel\n"
        "from twisted.python import log, failure\n"
        "from twisted.python.log import err\n"
        "import twisted.python.log\n"
        "import twisted.logger\n"
        "from twisted import logger\n"
        "a = twisted.logger.Logger()\n"
        "b = logger.Logger()\n"
        "from twisted.logger import ILogObserver, formatEvent\n")
    assert len(other_logging(planted)) == 6, other_logging(planted)
