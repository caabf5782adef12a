"""
The real ``twistd -n antenna`` with an env file in the names Antenna has
used since July 2021 (``CRASHMOVER_CRASHSTORAGE_*``, ``BREAKPAD_*``): it
reads them, stores where they say, and warns once about a misspelt name;
with ``CONFIG_STRICT`` the misspelling stops start-up with one line.
"""

import json
import os

from antenna_tw.config import unknown_name_messages
from antenna_tw.send_crash import build_multipart, post
from tests.helpers import crash_id_from, minidump
from tests.system.collector_process import wait_for


def test_namespaced_env_file_stores_under_its_fs_root(tmp_path, collectors):
    root = tmp_path / "namespaced-root"
    env_file = tmp_path / "antenna-2023.env"
    env_file.write_text(
        "CRASHMOVER_CRASHSTORAGE_CLASS=antenna.ext.fs.crashstorage.FSCrashStorage\n"
        f"CRASHMOVER_CRASHSTORAGE_FS_ROOT={root}\n"
        "CRASHMOVER_CONCURRENT_CRASHMOVERS=3\n"
        "BREAKPAD_THROTTLER_RULES=antenna.throttler.ACCEPT_ALL\n"
        "BREAKPAD_DUMP_FIELD=upload_file_minidump\n"
        "CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY=do-not-log-me\n"
        "CONCURENT_CRASHMOVERS=9\n")
    collector = collectors.start(tmp_path, {"ANTENNA_ENV": str(env_file)})
    try:
        body, content_type = build_multipart({"ProductName": "Test", "Version": "1.0"},
                                             {"upload_file_minidump": minidump()})
        status, answer = post(collector.submit_url, body, content_type)
        assert status == 200
        crash_id = crash_id_from(answer)
        raw_crash = root / ("20" + crash_id[-6:]) / "raw_crash" / f"{crash_id}.json"
        wait_for(raw_crash.exists, timeout=10)
        assert json.loads(raw_crash.read_bytes())["uuid"] == crash_id
    finally:
        collector.stop()
    assert not (tmp_path / "antenna_crashes").exists()
    lines = (tmp_path / "stdout").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    warnings = [record["Fields"]["msg"] for record in records
                if record["Type"] == "antenna.config" and record["Severity"] == 4]
    assert warnings == ["`CONCURENT_CRASHMOVERS` is not an option; "
                        "did you mean `CONCURRENT_CRASHMOVERS`?"]
    [summary] = [record["Fields"]["msg"].split() for record in records
                 if record["Fields"]["msg"].startswith("configuration: ")]
    assert f"CRASHSTORAGE_FS_ROOT={root}" in summary
    assert "CONCURRENT_CRASHMOVERS=3" in summary
    assert not any("do-not-log-me" in line for line in lines)


def test_config_strict_stops_start_up_on_a_misspelt_name(tmp_path, collectors):
    collector = collectors.spawn(tmp_path, {"CONFIG_STRICT": "true",
                                            "CRASHSTORAGE_FS_RROT": str(tmp_path)})
    assert collector.wait_exit(timeout=20) != 0
    output = collector.output().strip().splitlines()
    # The environment the tests run in may hold names that look like ours too.
    unknown = unknown_name_messages(dict(os.environ, CRASHSTORAGE_FS_RROT="x"))
    assert "`CRASHSTORAGE_FS_RROT` is not an option; did you mean `CRASHSTORAGE_FS_ROOT`?" \
        in unknown
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    assert output == [f"antenna: cannot start: {unknown[0]}{more}; CONFIG_STRICT is on"]
