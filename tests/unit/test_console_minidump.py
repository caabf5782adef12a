"""The console's minidump summary on the real dumps of tests/data and on hostile bytes."""

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antenna_tw.console.minidump import Limits, MinidumpSummary, summarize
from tests.helpers import minidump

REAL_DUMPS = ["test.dmp", "linux-mini.dmp", "pipeline-inlines-macos-segv.dmp",
              "simple-crashpad.dmp"]


def module_names(summary):
    return [m.name for m in summary.modules]


def test_windows_dump():
    summary = summarize(minidump("test.dmp"))
    assert summary.error is None
    assert summary.crash_reason == "EXCEPTION_ACCESS_VIOLATION"
    assert summary.crash_address == 0x40429E
    assert summary.crashing_thread == 0xBF4
    assert (summary.os, summary.os_version) == ("Windows NT", "5.1.2600 Service Pack 2")
    assert (summary.cpu_arch, summary.cpu_count) == ("x86", 1)
    assert len(summary.modules) == 13
    first = summary.modules[0]
    assert (first.name, first.base, first.size) == ("c:\\test_app.exe", 0x400000, 184320)
    ntdll = [m for m in summary.modules if m.name.endswith("ntdll.dll")][0]
    assert ntdll.version == "5.1.2600.2180"
    # Breakpad's own stackwalker puts this crash at test_app.exe + 0x429e.
    frame = summary.frames[0]
    assert (frame.module, frame.offset, frame.trust) == ("test_app.exe", 0x429E, "context")
    assert {f.trust for f in summary.frames[1:]} == {"scan"}
    assert "ntdll.dll" in {f.module for f in summary.frames[1:]}


def test_linux_dump():
    summary = summarize(minidump("linux-mini.dmp"))
    assert summary.error is None
    assert (summary.crash_reason, summary.crash_address) == ("SIGSEGV", 0x45)
    assert (summary.os, summary.cpu_arch, summary.cpu_count) == ("Linux", "amd64", 4)
    assert "4.9.60-linuxkit-aufs" in summary.os_version
    assert "/lib/x86_64-linux-gnu/libc-2.23.so" in module_names(summary)
    assert (summary.frames[0].module, summary.frames[0].offset) == ("crash", 0x1D72)
    assert "libc-2.23.so" in {f.module for f in summary.frames[1:]}


def test_macos_segv_dump():
    summary = summarize(minidump("pipeline-inlines-macos-segv.dmp"))
    assert summary.error is None
    assert summary.crash_reason == "EXC_BAD_ACCESS / KERN_INVALID_ADDRESS"
    assert (summary.os, summary.os_version) == ("macOS", "11.6.7 20G630")
    assert (summary.cpu_arch, summary.cpu_count) == ("amd64", 8)
    assert len(summary.modules) == 47
    assert (summary.frames[0].module, summary.frames[0].offset) == ("crash-client", 0x14CD4)


def test_crashpad_abort_dump():
    summary = summarize(minidump("simple-crashpad.dmp"))
    assert summary.error is None
    assert summary.crash_reason == "EXC_CRASH / SIGABRT"
    assert (summary.os, summary.os_version, summary.cpu_count) == ("macOS", "10.15.7 19H114", 12)
    system = [m for m in summary.modules if m.name == "/usr/lib/libSystem.B.dylib"][0]
    assert system.version == "1281.100.1.0"
    assert summary.frames[0].module == "libsystem_kernel.dylib"
    assert "crashy" in {f.module for f in summary.frames}


def test_to_json():
    summary = summarize(minidump("test.dmp"))
    value = json.loads(json.dumps(summary.to_json()))
    assert value["crash_address"] == "0x40429e"
    assert value["modules"][0] == {"name": "c:\\test_app.exe", "base": "0x400000",
                                   "size": 184320, "version": None}
    assert value["frames"][0] == {"index": 0, "address": "0x40429e", "module": "test_app.exe",
                                  "offset": "0x429e", "trust": "context"}
    assert value["error"] is None


def test_summary_is_frozen():
    summary = summarize(minidump("test.dmp"))
    with pytest.raises(AttributeError):
        summary.error = "changed"


@pytest.mark.parametrize("name", ["invalid-range.dmp", "invalid-record-count.dmp"])
def test_corrupt_dumps_give_an_error(name):
    summary = summarize(minidump(name))
    assert "runs past the end of the file" in summary.error


@pytest.mark.parametrize("data", [b"", b"MDMP", b"not a dump at all" * 10, b"\0" * 4096])
def test_not_a_minidump(data):
    assert summarize(data).error is not None


def test_only_bytes():
    with pytest.raises(TypeError):
        summarize("MDMP")


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_truncated_dumps(name):
    data = minidump(name)
    for length in list(range(0, 200, 7)) + list(range(200, len(data), 331)):
        summary = summarize(data[:length])
        assert isinstance(summary, MinidumpSummary)
        json.dumps(summary.to_json())
    half = summarize(data[: len(data) // 2])
    assert half.error is not None


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(REAL_DUMPS), st.lists(st.tuples(st.integers(0), st.integers(0, 255)),
                                               min_size=1, max_size=20))
def test_corrupted_bytes_never_raise(name, changes):
    data = bytearray(minidump(name))
    for position, value in changes:
        data[position % len(data)] = value
    json.dumps(summarize(bytes(data)).to_json())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_after_the_signature(garbage):
    assert isinstance(summarize(b"MDMP" + garbage), MinidumpSummary)


def dump_with_modules(count, declared=None):
    """A minidump holding only a module list of ``count`` records (declaring ``declared``)."""
    records = b"".join(struct.pack("<QIIII", 0x10000 * (i + 1), 0x1000, 0, 0, 0) + b"\0" * 84
                       for i in range(count))
    stream = struct.pack("<I", count if declared is None else declared) + records
    header = b"MDMP" + struct.pack("<HHIIIIQ", 0xA793, 0, 1, 32, 0, 0, 0)
    directory = struct.pack("<III", 4, len(stream), 44)
    return header + directory + stream


def test_a_module_count_larger_than_its_stream():
    summary = summarize(dump_with_modules(2, declared=0xFFFFFFFF))
    assert "module list of 4294967295 modules" in summary.error
    assert summary.modules == ()


def test_modules_are_capped():
    summary = summarize(dump_with_modules(30), Limits(max_modules=10))
    assert summary.error is None
    assert len(summary.modules) == 10
    assert summary.modules_truncated
    assert summary.modules[9].base == 0xA0000


def test_frames_are_capped():
    summary = summarize(minidump("test.dmp"), Limits(max_frames=3))
    assert len(summary.frames) == 3
    assert summary.frames_truncated


def test_stack_bytes_scanned_are_capped():
    few = summarize(minidump("test.dmp"), Limits(max_stack_bytes=64))
    assert len(few.frames) < len(summarize(minidump("test.dmp")).frames)


def test_dump_size_is_capped():
    summary = summarize(minidump("test.dmp"), Limits(max_dump_bytes=1000))
    assert "over the 1000 bytes" in summary.error
    assert summary.modules == ()


def test_long_module_names_are_cut():
    name = ("x" * 5000).encode("utf-16-le")
    data = bytearray(dump_with_modules(1))
    data[32 + 12 + 4 + 20:32 + 12 + 4 + 24] = struct.pack("<I", len(data))  # ModuleNameRva
    data += struct.pack("<I", len(name)) + name
    summary = summarize(bytes(data), Limits(max_name_chars=100))
    assert summary.modules[0].name == "x" * 100
