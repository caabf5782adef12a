"""
The spool on disk: round trips, what start-up moves aside, fsync, failed
writes, the bytes backpressure sees, and the writability probe.
"""

import os

import attr
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.python.threadpool import ThreadPool

from antenna_tw import spool as spool_module
from antenna_tw.crash import Crash
from antenna_tw.spool import (CORRUPT_DIR, Backpressure, CorruptEntry, Spool, decode_entry,
                              encode_entry)

CRASH_ID = "de1bb258-cbbf-4589-a673-34f800160918"


def make_crash(crash_id=CRASH_ID, size=5000):
    return Crash(crash_id, {"ProductName": "Test", "uuid": crash_id, "Note": "ünï"},
                 {"upload_file_minidump": os.urandom(size), "memory_report": b"",
                  "browser": os.urandom(size // 2)})


@pytest.fixture
def threadpool():
    pool = ThreadPool(minthreads=1, maxthreads=2, name="test-spool")
    pool.start()
    yield pool
    pool.stop()


def write_entry(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as spool_file:
        spool_file.write(data)
    return path


def entry_bytes(crash):
    return b"".join(encode_entry(crash))


def name_for(crash, stamp):
    return f"{stamp:020d}-{crash.crash_id}.crash"


def test_encoded_entries_decode_to_the_same_crash():
    crash = make_crash()
    assert decode_entry(entry_bytes(crash)) == crash


@pytest.mark.parametrize("damage,reason", [
    (lambda data: b"XX" + data[2:], "bad magic"),
    (lambda data: data[:20], "truncated header"),
    (lambda data: data[:-1], "truncated"),
    (lambda data: data + b"x", "trailing bytes"),
    (lambda data: data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "damaged"),
    (lambda data: data.replace(b'"dumps"', b'"dumpz"', 1), "unreadable header"),
])
def test_damaged_entries_do_not_decode(damage, reason):
    with pytest.raises(CorruptEntry, match=reason):
        decode_entry(damage(entry_bytes(make_crash())))


def test_open_lists_entries_oldest_first_and_counts_their_bytes(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    crashes = [make_crash(f"{n}e1bb258-cbbf-4589-a673-34f800160918") for n in range(3)]
    for stamp, crash in zip((300, 100, 200), crashes):
        write_entry(directory, name_for(crash, stamp), entry_bytes(crash))
    spool = Spool(str(directory), reactor, None)
    entries = spool.open()
    assert [entry.crash_id for entry in entries] == [crashes[1].crash_id, crashes[2].crash_id,
                                                     crashes[0].crash_id]
    assert [entry.created for entry in entries] == [100e-9, 200e-9, 300e-9]
    assert spool.total_bytes == sum(len(entry_bytes(crash)) for crash in crashes)
    assert spool.total_bytes == sum(entry.size for entry in entries)


def test_open_moves_aside_what_is_not_a_complete_entry(tmp_path, log_messages):
    directory = tmp_path / "spool"
    directory.mkdir()
    good = make_crash()
    data = entry_bytes(good)
    other = make_crash("0e1bb258-cbbf-4589-a673-34f800160918")
    bad = {
        ".tmp-" + name_for(good, 1): data[:100],  # killed while writing
        name_for(make_crash("1" + CRASH_ID[1:]), 2): data[:len(data) // 2],  # truncated dumps
        name_for(make_crash("2" + CRASH_ID[1:]), 3): data[:30],  # truncated header
        name_for(make_crash("3" + CRASH_ID[1:]), 4): b"",  # empty
        name_for(make_crash("4" + CRASH_ID[1:]), 5): b"garbage" * 10,  # not a spool file
        name_for(make_crash("5" + CRASH_ID[1:]), 6): data + b"extra",  # trailing bytes
        name_for(other, 7): data,  # holds another crash than its name says
        "notanumber-" + CRASH_ID + ".crash": data,  # a name that is not ours
    }
    for name, content in bad.items():
        write_entry(directory, name, content)
    write_entry(directory, name_for(good, 10), data)
    write_entry(directory, "README.txt", b"left alone")

    spool = Spool(str(directory), reactor, None)
    entries = spool.open()

    assert [entry.filename for entry in entries] == [name_for(good, 10)]
    assert spool.total_bytes == len(data)
    assert sorted(os.listdir(directory / CORRUPT_DIR)) == sorted(bad)
    assert sorted(os.listdir(directory)) == sorted([CORRUPT_DIR, name_for(good, 10), "README.txt"])
    for name in bad:
        assert any(message.startswith(f"spool entry {name} moved aside to corrupt: ")
                   for message in log_messages), (name, log_messages)
    assert any("half-written" in message for message in log_messages)
    assert any("truncated" in message for message in log_messages)


def test_open_creates_the_directory(tmp_path):
    spool = Spool(str(tmp_path / "a" / "spool"), reactor, None)
    assert spool.open() == []
    assert os.path.isdir(tmp_path / "a" / "spool" / CORRUPT_DIR)


@pytest_twisted.ensureDeferred
async def test_put_load_remove(tmp_path, threadpool):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool, clock_ns=lambda: 1234)
    spool.open()
    crash = make_crash()
    entry = await spool.put(crash)
    assert entry.filename == name_for(crash, 1234)
    assert sorted(os.listdir(spool.directory)) == sorted([CORRUPT_DIR, entry.filename])
    assert spool.total_bytes == entry.size == os.path.getsize(
        os.path.join(spool.directory, entry.filename))
    assert spool.writing_bytes == 0
    assert await spool.load(entry) == crash
    # what a restart would find
    assert Spool(spool.directory, reactor, None).open() == [entry]
    await spool.remove(entry)
    assert spool.total_bytes == 0
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]


@pytest_twisted.ensureDeferred
async def test_a_damaged_dump_is_found_when_loaded_and_quarantined(tmp_path, threadpool):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    entry = await spool.put(make_crash())
    path = os.path.join(spool.directory, entry.filename)
    with open(path, "r+b") as spool_file:  # same size, one bit flipped in a dump
        spool_file.seek(-100, os.SEEK_END)
        byte = spool_file.read(1)
        spool_file.seek(-100, os.SEEK_END)
        spool_file.write(bytes([byte[0] ^ 0x40]))
    assert Spool(spool.directory, reactor, None).open() == [entry]  # sizes are right
    with pytest.raises(CorruptEntry, match="damaged"):
        await spool.load(entry)
    await spool.quarantine(entry, "damaged")
    assert os.listdir(os.path.join(spool.directory, CORRUPT_DIR)) == [entry.filename]
    assert spool.total_bytes == 0


@pytest_twisted.ensureDeferred
async def test_fsync_syncs_the_file_and_the_directory(tmp_path, threadpool, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool, fsync=True)
    spool.open()
    await spool.put(make_crash())
    assert synced == [False, True]  # the file, then the directory after the rename

    synced.clear()
    spool.fsync = False
    await spool.put(make_crash("1" + CRASH_ID[1:]))
    assert synced == []


@pytest_twisted.ensureDeferred
async def test_a_failed_write_leaves_nothing_behind(tmp_path, threadpool, monkeypatch):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()

    def broken_disk(fd, pieces):
        os.write(fd, b"some")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_all", broken_disk)
    with pytest.raises(OSError, match="No space"):
        await spool.put(make_crash())
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]
    assert (spool.total_bytes, spool.writing_bytes) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_failed_directory_fsync_keeps_no_copy(tmp_path, threadpool, monkeypatch):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool, fsync=True)
    spool.open()

    def broken(directory):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool_module, "_fsync_directory", broken)
    with pytest.raises(OSError, match="Input/output"):
        await spool.put(make_crash())
    # the client hears "busy" and sends it again: no second copy may be uploaded
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]
    assert spool.total_bytes == 0


@pytest_twisted.ensureDeferred
async def test_writes_in_flight_are_reserved_and_idle_waits_for_them(tmp_path, threadpool):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    assert spool.idle().called
    crash = make_crash(size=100_000)
    put = spool.put(crash)
    assert spool.writing_bytes >= 150_000  # reserved before the thread runs
    idle = spool.idle()
    seen = []
    put.addCallback(lambda entry: seen.append(("put", spool.writing_bytes)) or entry)
    idle.addCallback(lambda _: seen.append(("idle", spool.writing_bytes)))
    entry = await put
    await idle
    assert seen == [("put", 0), ("idle", 0)]  # idle after the writer saw its entry
    assert spool.total_bytes == entry.size


@pytest_twisted.ensureDeferred
async def test_check_writable(tmp_path, threadpool):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    assert await spool.check_writable() is None
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]  # the probe cleans up
    os.rename(spool.directory, spool.directory + ".away")
    write_entry(tmp_path, "spool", b"a file where the spool was")
    message = await spool.check_writable()
    assert message.startswith(f"{spool.directory} is not writable: ")


@attr.s
class FakeSpool:
    total_bytes = attr.ib(default=0)
    writing_bytes = attr.ib(default=0)
    free = attr.ib(default=10**12)
    statvfs_calls = attr.ib(default=0)

    def free_bytes(self):
        self.statvfs_calls += 1
        if isinstance(self.free, Exception):
            raise self.free
        return self.free


def test_backpressure_reasons():
    clock = task.Clock()
    spool = FakeSpool()
    backpressure = Backpressure(spool, clock, max_bytes=1000, min_free_bytes=500)
    assert backpressure.busy() is None
    spool.total_bytes = 1001
    assert backpressure.busy() == "spool is over SPOOL_MAX_BYTES"
    spool.total_bytes, spool.writing_bytes = 600, 401  # writes in flight count
    assert backpressure.busy() == "spool is over SPOOL_MAX_BYTES"
    spool.writing_bytes = 400
    assert backpressure.busy() is None
    backpressure.close()
    assert backpressure.busy() == "shutting down"


def test_backpressure_reads_free_space_at_most_once_per_interval():
    clock = task.Clock()
    spool = FakeSpool(free=400)
    backpressure = Backpressure(spool, clock, max_bytes=1000, min_free_bytes=500)
    assert backpressure.busy() == "disk under the spool is nearly full"
    spool.free = 10_000
    assert backpressure.busy() == "disk under the spool is nearly full"  # cached
    assert spool.statvfs_calls == 1
    clock.advance(1.0)
    assert backpressure.busy() is None
    assert spool.statvfs_calls == 2
    spool.free = OSError("gone")
    clock.advance(1.0)
    assert backpressure.busy() == "disk under the spool is nearly full"
