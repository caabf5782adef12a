"""
The Docker image's command, run here as a process without a container
engine (docs/deploy.rst, *The container image*): its CMD/ENTRYPOINT, environment, working
directory, user, volumes, health check and stop signal are read from the
Dockerfile itself (tests/deploy_files.py), so this test runs what the image
runs. What differs from a container, and why:

- the volumes and the working directory are fresh directories here, the
  image's ENV paths mapped onto them;
- ``twistd`` and ``python`` are the virtualenv's (PATH), not /usr/local/bin's;
- the port: a free one on 127.0.0.1 in place of 8000 on 0.0.0.0 (tests listen
  on loopback only), in the command and the health check alike;
- the user: the image's numeric uid when the test runs as root and that
  uid can run the virtualenv's Python (not when Python lives under a home
  only root may enter, as with pyenv in /root); otherwise the test's own.
"""

import os
import signal
import subprocess
import tempfile
import time

import pytest

from tests.deploy_files import Image
from tests.s3server import free_port
from tests.system.collector_process import CollectorProcess
from tests.system.crash_clients import FSStore, make_crash, post_crash

VENV_BIN = os.path.dirname(os.path.abspath(os.sys.executable))


def on_free_port(argv, exposed, port):
    """``argv`` with the image's port and all-interfaces address made a loopback test port."""
    changed = [argument.replace(f":{exposed}", f":{port}")
               .replace("interface=0.0.0.0", "interface=127.0.0.1") for argument in argv]
    assert changed != argv, f"no port {exposed} to replace in {argv}"
    return changed


def as_image_user(user):
    """
    A preexec_fn taking the image's uid and gid when running as root and
    that user can run this Python; else None (the test's own user).
    """
    if os.geteuid() != 0:
        return None
    uid, _, gid = user.partition(":")

    def switch():
        os.setgroups([])
        os.setgid(int(gid or uid))
        os.setuid(int(uid))
    try:
        subprocess.run([os.path.join(VENV_BIN, "python"), "-c", ""], preexec_fn=switch,
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError):
        return None
    return switch


@pytest.fixture
def image_root():
    """A directory every user may enter (tmp_path is root's alone), removed after."""
    with tempfile.TemporaryDirectory(prefix="antenna-image-") as root:
        os.chmod(root, 0o755)
        yield root


def test_the_images_command_serves_a_crash(image_root, collectors, tmp_path):
    image = Image.read()
    uid, _, gid = image.user.partition(":")
    user = as_image_user(image.user)
    owner = int(uid) if user else os.geteuid()
    # The image's directories, here: its working directory is root's and read-only
    # to its user, as /app is in the image; the volumes are the user's.
    places = {image.workdir: os.path.join(image_root, "workdir")}
    for volume in image.volumes:
        places[volume] = os.path.join(image_root, "volume" + volume.replace("/", "-"))
    for place in places.values():
        os.makedirs(place, mode=0o755)
    for volume in image.volumes:
        os.chown(places[volume], owner, int(gid or uid) if user else os.getegid())
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "HOME": places[image.workdir]}
    for key, value in image.env.items():
        env[key] = places.get(value, value)
    port = free_port()
    command = on_free_port(image.command, image.exposed[0], port)
    healthcheck = on_free_port(image.healthcheck, image.exposed[0], port)

    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(command, cwd=places[image.workdir], env=env, stdout=out,
                                   stderr=err, preexec_fn=user)
    collector = CollectorProcess(process, port, tmp_path)
    collectors.started.append(collector)

    # Healthy by the image's own health check, within its start period.
    deadline = time.monotonic() + float(image.healthcheck_options["start-period"].rstrip("s"))
    while subprocess.run(healthcheck, env=env, capture_output=True,
                         preexec_fn=user).returncode != 0:
        assert process.poll() is None, collector.output()
        assert time.monotonic() < deadline, "unhealthy past the start period"
        time.sleep(0.2)

    answer = post_crash(port, make_crash(1))
    assert answer.status == 200, (answer, collector.output())
    store = FSStore(env["CRASHSTORAGE_FS_ROOT"])
    store.wait_stored([answer.crash_id], timeout=20)
    store.check(answer)
    # Written on the volumes, by the image's user.
    stored = os.path.join(store.day(answer.crash_id), "raw_crash", answer.crash_id + ".json")
    assert os.stat(stored).st_uid == owner
    assert os.listdir(places[image.workdir]) == []  # nothing written outside the volumes

    # The default --workers: the CPUs this process may use.
    from antenna_tw.workers import usable_cpus
    assert len(collector.worker_pids()) == usable_cpus()

    process.send_signal(getattr(signal, image.stop_signal))
    # twistd ends by the signal itself (status 143 to a shell or docker).
    assert collector.wait_exit(60) == -getattr(signal, image.stop_signal)
