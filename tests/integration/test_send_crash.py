"""
``antenna-send-crash`` (``antenna_tw.send_crash.main``) against a listening
collector: with no dump it sends a tiny generated minidump, which the
collector accepts and stores byte for byte, with any of its framings.
"""

import configparser
import os
import struct
from importlib import import_module

import pytest
import pytest_twisted

from antenna_tw import send_crash
from tests.helpers import MINIDUMPS, crash_id_from, in_thread, minidump

HEADER = struct.Struct("<4sIIIIIQ")  # MINIDUMP_HEADER
DIRECTORY_ENTRY = struct.Struct("<III")  # MINIDUMP_DIRECTORY: type, data size, data offset
STAMP = 1795800000


def header_problems(data):
    """What is wrong with a minidump's header and stream directory (empty: nothing)."""
    if len(data) < HEADER.size:
        return ["shorter than a header"]
    signature, version, streams, directory, _, _, _ = HEADER.unpack_from(data)
    problems = []
    if signature != b"MDMP":
        problems.append(f"signature {signature!r}")
    if version & 0xFFFF != 0xA793:
        problems.append(f"version {version:#x}")
    if directory < HEADER.size or directory + streams * DIRECTORY_ENTRY.size > len(data):
        problems.append(f"directory at {directory} of {streams} streams is outside the file")
        return problems
    for index in range(streams):
        _, size, offset = DIRECTORY_ENTRY.unpack_from(data, directory + index * 12)
        if offset + size > len(data):
            problems.append(f"stream {index} is outside the file")
    return problems


@pytest.mark.parametrize("name", ["linux-mini.dmp", "test.dmp", "simple-crashpad.dmp",
                                  "pipeline-inlines-macos-segv.dmp"])
def test_the_header_check_passes_real_dumps(name):
    assert header_problems(minidump(name)) == []


def test_the_header_check_finds_broken_dumps():
    tiny = send_crash.tiny_minidump(STAMP)
    assert header_problems(b"XDMP" + tiny[4:])
    assert header_problems(tiny[:12] + struct.pack("<I", 33) + tiny[16:])
    assert header_problems(tiny[:8] + struct.pack("<I", 1) + tiny[12:])
    assert header_problems(tiny[:20])


def test_the_generated_minidump_is_well_formed():
    tiny = send_crash.tiny_minidump(STAMP)
    assert len(tiny) == 32
    assert header_problems(tiny) == []
    assert HEADER.unpack(tiny)[2] == 0  # no streams
    assert HEADER.unpack(tiny)[5] == STAMP


@pytest.fixture
def fixed_clock(monkeypatch):
    """The generated dump's time stamp, fixed so the test knows its bytes."""
    monkeypatch.setattr(send_crash.time, "time", lambda: STAMP + 0.5)
    return send_crash.tiny_minidump(STAMP)


async def run_main(capsys, *args):
    """main() in a thread (it blocks on its HTTP call): (exit status, printed answer)."""
    code = await in_thread(send_crash.main, list(args))
    return code, capsys.readouterr().out


@pytest_twisted.ensureDeferred
async def test_no_arguments_send_a_sample_crash(collector, fixed_clock, capsys):
    code, out = await run_main(capsys, "--url", collector.submit_url)
    assert code == 0, out
    status, _, answer = out.partition(" ")
    assert status == "200"
    raw_crash, dump_names, dumps = await collector.wait_stored(crash_id_from(answer))
    assert dump_names == ["upload_file_minidump"]
    assert dumps == {"upload_file_minidump": fixed_clock}
    assert raw_crash["ProductName"] == "Test"
    assert raw_crash["Version"] == "1.0"


@pytest.mark.parametrize("framing", [[], ["--gzip"], ["--chunked"], ["--gzip", "--chunked"],
                                     ["--json"], ["--crashpad", "--gzip", "--chunked"]])
@pytest_twisted.ensureDeferred
async def test_the_generated_dump_keeps_the_options(collector, fixed_clock, capsys, framing):
    code, out = await run_main(capsys, "--url", collector.submit_url, "--dump-name", "other_dump",
                               "--annotation", "ProductName=Mine", *framing)
    assert code == 0, out
    raw_crash, dump_names, dumps = await collector.wait_stored(
        crash_id_from(out.partition(" ")[2]))
    assert dumps == {"other_dump": fixed_clock}
    assert raw_crash["ProductName"] == "Mine"
    assert "Version" not in raw_crash  # the sample annotations only come with no annotation
    assert raw_crash["metadata"]["payload_compressed"] == ("1" if "--gzip" in framing else "0")


@pytest_twisted.ensureDeferred
async def test_a_given_dump_is_sent_instead(collector, capsys):
    path = os.path.join(MINIDUMPS, "linux-mini.dmp")
    code, out = await run_main(capsys, "--url", collector.submit_url, "--dump", path,
                               "--annotation", "ProductName=Test")
    assert code == 0, out
    _, _, dumps = await collector.wait_stored(crash_id_from(out.partition(" ")[2]))
    assert dumps == {"upload_file_minidump": minidump("linux-mini.dmp")}


def test_the_console_script_runs_main():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(__file__), "..", "..", "setup.cfg"))
    scripts = dict(line.split(" = ") for line in
                   setup["options.entry_points"]["console_scripts"].strip().splitlines())
    module, _, function = scripts["antenna-send-crash"].partition(":")
    assert getattr(import_module(module), function) is send_crash.main
