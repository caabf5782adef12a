"""
``antenna_tw.workers`` is one seam: only the composition root (``app.py``),
``twistd antenna`` (``tap.py``) and its plugin import it, and only from the
package itself, never from its modules. The rest of the collector knows
nothing of workers.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "antenna_tw"
WORKERS = PACKAGE / "workers"
PLUGIN = ROOT / "twisted" / "plugins" / "antenna_plugin.py"
ALLOWED = {PACKAGE / "app.py", PACKAGE / "tap.py", PLUGIN}
SOURCES = [path for path in sorted(PACKAGE.rglob("*.py")) + [PLUGIN]
           if WORKERS not in path.parents]


def workers_imports(path: pathlib.Path) -> list[str]:
    """Every module of ``antenna_tw.workers`` that ``path`` imports, as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "antenna_tw":
                modules = [f"antenna_tw.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{node.lineno}: {module}" for module in modules
                  if module == "antenna_tw.workers" or module.startswith("antenna_tw.workers.")]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_only_the_composition_root_and_the_plugin_use_workers(path: pathlib.Path) -> None:
    imports = workers_imports(path)
    if path in ALLOWED:
        assert [line for line in imports if not line.endswith(": antenna_tw.workers")] == []
    else:
        assert imports == []


def test_the_seam_is_used(tmp_path: pathlib.Path) -> None:
    # The check finds what it looks for: app.py and tap.py do use the seam.
    assert workers_imports(PACKAGE / "app.py")
    assert workers_imports(PACKAGE / "tap.py")
    planted = tmp_path / "planted.py"
    planted.write_text("import antenna_tw.workers.listener\n"
                       "from antenna_tw import workers\n"
                       "from antenna_tw.workers.shardstatus import waiting_in\n"
                       "from antenna_tw.workersish import x\n"
                       "def f():\n"
                       "    from antenna_tw.workers import Worker\n")
    assert workers_imports(planted) == [
        "1: antenna_tw.workers.listener", "2: antenna_tw.workers",
        "3: antenna_tw.workers.shardstatus", "6: antenna_tw.workers"]


def test_importing_the_seam_loads_neither_the_reactor_nor_the_web_stack() -> None:
    # The --workers parent imports it first; it must stay small (footprint.py).
    code = ("import sys, antenna_tw.tap, antenna_tw.workers\n"
            "print(' '.join(sorted(name for name in sys.modules if name in {"
            "'twisted.internet.reactor', 'twisted.internet.posixbase', 'OpenSSL', "
            "'twisted.web.server', 'klein', 'antenna_tw.health', 'antenna_tw.spool', "
            "'twisted.internet.endpoints', 'antenna_tw.workers.shardstatus'})))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_the_parent_opens_its_listening_socket_without_endpoints_or_pyopenssl(tmp_path) -> None:
    # The --workers parent, as twistd builds it: it checks the storage, opens
    # the one listening socket its workers share, and still has loaded
    # neither Twisted's endpoints (they import pyOpenSSL) nor pyOpenSSL.
    code = (
        "import json, sys\n"
        "from antenna_tw.tap import Options, makeService\n"
        "options = Options()\n"
        "options.parseOptions(['--workers', '2', '--port', 'tcp:0:interface=127.0.0.1'])\n"
        "service = makeService(options, environ=json.loads(sys.argv[1]))\n"
        "print(json.dumps({'listening': service.listeners[0].getsockname()[0],\n"
        "                  'loaded': sorted(name for name in sys.modules if name in {\n"
        "                      'twisted.internet.endpoints', 'OpenSSL', 'twisted.web.server',\n"
        "                      'antenna_tw.spool', 'antenna_tw.workers.shardstatus'})}))\n")
    # (not tests.helpers: it imports the web stack)
    environ = {"CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"), "METRICS_CLASS": "none",
               "SPOOL_DIR": str(tmp_path / "spool"), "SPOOL_MIN_FREE_BYTES": "0"}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(environ)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"listening": "127.0.0.1",
                                                          "loaded": []}
