"""
The real ``twistd -n antenna`` process with its defaults (filesystem storage):
it starts, takes a crash over HTTP, stores it, logs mozlog JSON, and stops
cleanly on SIGTERM.
"""

import json
import signal
import time

from antenna_tw.send_crash import build_multipart, post
from tests.helpers import minidump

MOZLOG_KEYS = {"Timestamp", "Type", "Logger", "Hostname", "EnvVersion", "Severity", "Pid",
               "Fields"}


def test_twistd_collects_a_crash_and_stops_on_sigterm(tmp_path, collectors):
    collector = collectors.start(tmp_path, {
        "CRASHSTORAGE_FS_ROOT": str(tmp_path / "crashes"),
        "CRASHSTORAGE_SECRET_ACCESS_KEY": "do-not-log-me",
        "HOST_ID": "test-host",
    })
    try:
        body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                             {"upload_file_minidump": minidump()})
        status, answer = post(collector.submit_url, body, content_type)
        assert status == 200
        crash_id = answer.decode().strip()[len("CrashID=bp-"):]
        day = tmp_path / "crashes" / ("20" + crash_id[-6:])
        raw_crash_path = day / "raw_crash" / f"{crash_id}.json"
        for _ in range(100):
            if raw_crash_path.exists():
                break
            time.sleep(0.05)
        raw_crash = json.loads(raw_crash_path.read_bytes())
        assert raw_crash["uuid"] == crash_id
        assert json.loads((day / "dump_names" / f"{crash_id}.json").read_bytes()) == [
            "upload_file_minidump"]
        assert (day / "upload_file_minidump" / crash_id).read_bytes() == minidump()
        assert collector.heartbeat()[0] == 200
    finally:
        collector.process.send_signal(signal.SIGTERM)
        exit_status = collector.wait_exit(timeout=20)

    # twistd re-raises SIGTERM on purpose after a clean shutdown
    assert exit_status in (-signal.SIGTERM, 143)
    lines = (tmp_path / "stdout").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(MOZLOG_KEYS <= set(record) for record in records)
    assert {record["Logger"] for record in records} == {"antenna"}
    assert all(record["Fields"]["host_id"] == "test-host" for record in records)
    messages = [record["Fields"]["msg"] for record in records]
    # The options: one line, those not at their defaults, secrets masked.
    [summary] = [message for message in messages if message.startswith("configuration: ")]
    assert "CRASHSTORAGE_SECRET_ACCESS_KEY=*****" in summary.split()
    assert "HOST_ID=test-host" in summary.split()
    assert not any("do-not-log-me" in line for line in lines)
    assert f"{crash_id}: matched by accept_everything; returned ACCEPT" in messages
    assert f"{crash_id} saved" in messages
    types = {record["Fields"]["msg"]: record["Type"] for record in records}
    # Antenna's logger names, not our class paths.
    assert types[f"{crash_id}: matched by accept_everything; returned ACCEPT"] == \
        "antenna.breakpad_resource"
    assert types[f"{crash_id} saved"] == "antenna.crashmover"
    assert "Server Shut Down." in messages
    assert (tmp_path / "stderr").read_text() == ""


def test_bad_option_stops_start_up_with_one_line(tmp_path, collectors):
    collector = collectors.spawn(tmp_path, {"CONCURRENT_CRASHMOVERS": "many"})
    assert collector.wait_exit(timeout=20) != 0
    output = collector.output().strip().splitlines()
    assert output == ["antenna: cannot start: CONCURRENT_CRASHMOVERS='many' is invalid: "
                      "invalid literal for int() with base 10: 'many'"]


def test_env_file_option(tmp_path, collectors):
    env_file = tmp_path / "collector.env"
    env_file.write_text(f"CRASHSTORAGE_FS_ROOT={tmp_path / 'from-env-file'}\n"
                        "DUMP_ID_PREFIX=xx-\n")
    collector = collectors.start(tmp_path, {"ANTENNA_ENV": str(env_file)})
    try:
        body, content_type = build_multipart({"ProductName": "Test"}, {})
        status, answer = post(collector.submit_url, body, content_type)
        assert status == 200 and answer.startswith(b"CrashID=xx-")
    finally:
        collector.stop()
    assert (tmp_path / "from-env-file").is_dir()
