"""
conf/antenna-tw.service run as systemd would run it with conf/antenna-tw.socket
(docs/deploy.rst, *systemd*): its ExecStart, Environment and working
directory read from the unit, a listening socket like the socket unit's
handed over as descriptor 3 with ``LISTEN_FDS``/``LISTEN_PID``, and the
default ``--workers`` of the unit's command line. What differs, and why:
the socket is on 127.0.0.1 and a free port (tests listen on loopback only)
rather than 0.0.0.0:8000; the unit's paths (/opt/antenna-tw's twistd, the
state directory, the env file) are the virtualenv's and fresh directories.
"""

import os
import signal
import socket
import subprocess
import sys

from antenna_tw.workers import usable_cpus
from tests.deploy_files import unit_setting
from tests.system.collector_process import TWISTD, CollectorProcess
from tests.system.crash_clients import FSStore, make_crash, post_crash

STATE = "/var/lib/antenna-tw"
# Sets LISTEN_PID to its own pid, then becomes twistd: as systemd does.
AS_SYSTEMD = ("import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
              "os.execv(sys.argv[1], sys.argv[1:])")


def test_the_service_unit_serves_the_socket_units_socket(tmp_path, collectors):
    execstart = unit_setting("antenna-tw.service", "ExecStart")[0].split()
    assert execstart[0] == "/opt/antenna-tw/.venv/bin/twistd"
    (tmp_path / "antenna.env").write_text("METRICS_CLASS=none\nSPOOL_MIN_FREE_BYTES=0\n")
    argv = [TWISTD] + [str(tmp_path / "antenna.env") if argument == "/etc/antenna-tw/antenna.env"
                       else argument for argument in execstart[1:]]
    state = tmp_path / "state"
    state.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LISTEN_FDS": "1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for assignment in unit_setting("antenna-tw.service", "Environment"):
        key, _, value = assignment.partition("=")
        env[key] = value.replace(STATE, str(state))
    assert unit_setting("antenna-tw.service", "WorkingDirectory") == [STATE]

    # The socket unit's ListenStream, on loopback: AF_INET, as domain=INET says.
    assert unit_setting("antenna-tw.socket", "ListenStream")[0].startswith("0.0.0.0:")
    listening = socket.socket(socket.AF_INET)
    listening.bind(("127.0.0.1", 0))
    listening.listen(int(unit_setting("antenna-tw.socket", "Backlog")[0]))
    port = listening.getsockname()[1]
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", AS_SYSTEMD, *argv], cwd=state, env=env, stdout=out,
            stderr=err, pass_fds=(3,), preexec_fn=lambda: os.dup2(listening.fileno(), 3))
    listening.close()  # the service holds it now
    collector = CollectorProcess(process, port, tmp_path)
    collectors.started.append(collector)
    collector.wait_listening(30)

    answers = [post_crash(port, make_crash(sequence)) for sequence in range(4)]
    assert [answer.status for answer in answers] == [200] * 4, collector.output()
    store = FSStore(env["CRASHSTORAGE_FS_ROOT"])
    store.wait_stored([answer.crash_id for answer in answers], timeout=20)
    for answer in answers:
        store.check(answer)
    assert len(collector.worker_pids()) == usable_cpus()  # the unit gives no --workers

    # KillMode=mixed: SIGTERM to twistd alone, which stops its workers.
    assert unit_setting("antenna-tw.service", "KillSignal") == ["SIGTERM"]
    process.send_signal(signal.SIGTERM)
    assert collector.wait_exit(60) == -signal.SIGTERM
    assert collector.worker_pids() == []
