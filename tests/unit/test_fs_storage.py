"""
Filesystem storage: the layout of docs/spool.rst, *Where crashes are stored*,
from dump bytes or from spooled files, which are hard-linked into place
(copied across filesystems).
"""

import errno
import json
import os

import pytest
from twisted.internet import reactor

from antenna_tw.crash import Crash
from antenna_tw.ext import fs
from antenna_tw.ext.fs import FSCrashStorage
from antenna_tw.spool import Spool

CRASH_ID = "de1bb258-cbbf-4589-a673-34f800160918"  # stored under 20160918
DUMPS = {"upload_file_minidump": [b"MDMP", b"-first-dump" * 1000], "memory_report": b"{}"}


def make_crash():
    return Crash(CRASH_ID, {"ProductName": "Test", "uuid": CRASH_ID}, dict(DUMPS))


def stored(root):
    day = root / "20160918"
    return (json.loads((day / "raw_crash" / f"{CRASH_ID}.json").read_bytes()),
            json.loads((day / "dump_names" / f"{CRASH_ID}.json").read_bytes()),
            {name: (day / name / CRASH_ID).read_bytes() for name in DUMPS})


def spooled(tmp_path):
    """The crash as the movers hand it over: its spooled files, not their bytes."""
    spool = Spool(str(tmp_path / "spool"), reactor, None)
    spool.open()
    entry = spool._put(make_crash(), "00000000000000000001-" + CRASH_ID)
    return spool.load_files_blocking(entry)


def expected():
    return ({"ProductName": "Test", "uuid": CRASH_ID}, sorted(DUMPS),
            {name: make_crash().dump_bytes(name) for name in DUMPS})


def test_a_crash_with_dump_bytes_is_written(tmp_path):
    storage = FSCrashStorage(str(tmp_path / "crashes"), reactor, None)
    storage.save_crash_blocking(make_crash())
    assert stored(tmp_path / "crashes") == expected()


def test_spooled_files_are_linked_into_place_not_copied(tmp_path):
    storage = FSCrashStorage(str(tmp_path / "crashes"), reactor, None)
    crash = spooled(tmp_path)
    storage.save_spooled_blocking(crash)
    assert stored(tmp_path / "crashes") == expected()
    day = tmp_path / "crashes" / "20160918"
    for name, source in crash.dump_files.items():
        assert os.stat(day / name / CRASH_ID).st_ino == os.stat(source).st_ino
    raw = day / "raw_crash" / f"{CRASH_ID}.json"
    assert os.stat(raw).st_ino == os.stat(crash.raw_crash_file).st_ino
    assert oct(os.stat(raw).st_mode & 0o777) == oct(0o644)


def test_storing_again_replaces_what_is_there(tmp_path):
    storage = FSCrashStorage(str(tmp_path / "crashes"), reactor, None)
    storage.save_crash_blocking(Crash(CRASH_ID, {"old": True},
                                      {name: b"old" for name in DUMPS}))
    storage.save_spooled_blocking(spooled(tmp_path))  # a client sent the same uuid again
    assert stored(tmp_path / "crashes") == expected()
    assert not [name for _, _, files in os.walk(tmp_path / "crashes") for name in files
                if name.startswith(".tmp-")]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM])
def test_without_hard_links_the_files_are_copied(tmp_path, monkeypatch, code):
    def no_link(source, target):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fs.os, "link", no_link)
    storage = FSCrashStorage(str(tmp_path / "crashes"), reactor, None)
    crash = spooled(tmp_path)
    storage.save_spooled_blocking(crash)
    assert stored(tmp_path / "crashes") == expected()
    day = tmp_path / "crashes" / "20160918"
    assert os.stat(day / "memory_report" / CRASH_ID).st_ino != os.stat(
        crash.dump_files["memory_report"]).st_ino


def test_a_storage_root_that_is_a_file_fails_the_save(tmp_path):
    (tmp_path / "crashes").write_bytes(b"not a directory")
    storage = FSCrashStorage(str(tmp_path / "crashes"), reactor, None)
    with pytest.raises(OSError):
        storage.save_spooled_blocking(spooled(tmp_path))
