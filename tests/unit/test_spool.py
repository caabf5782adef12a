"""
The spool on disk: round trips, what start-up moves aside, fsync, failed
writes, the bytes admission sees, and the writability probe.
"""

import hashlib
import os

import attr
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool

from antenna_tw import spool as spool_module
from antenna_tw.crash import Crash
from antenna_tw.spool import CORRUPT_DIR, STORED_SUFFIX, CorruptEntry, Spool

CRASH_ID = "de1bb258-cbbf-4589-a673-34f800160918"
DUMPS = ["browser", "memory_report", "upload_file_minidump"]


def make_crash(crash_id=CRASH_ID, size=5000):
    dumps = {"upload_file_minidump": [os.urandom(size // 2), os.urandom(size - size // 2)],
             "memory_report": b"", "browser": os.urandom(size // 2)}
    checksums = {name: hashlib.sha256(b"".join(pieces) if isinstance(pieces, list)
                                      else pieces).hexdigest()
                 for name, pieces in dumps.items()}
    raw_crash = {"ProductName": "Test", "uuid": crash_id, "Note": "ünï",
                 "metadata": {"dump_checksums": checksums}}
    return Crash(crash_id, raw_crash, dumps)


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


def spool_files(directory, crash, stamp):
    """Write a crash's entry as the spool's writer does; its file names."""
    entry = Spool(str(directory), reactor, None)._put(crash, stem_for(crash, stamp))
    return [entry.filename] + [entry.dump_filename(name) for name in entry.dump_names]


def stem_for(crash, stamp):
    return f"{stamp:020d}-{crash.crash_id}"


def name_for(crash, stamp):
    return stem_for(crash, stamp) + ".crash"


def joined(crash):
    return {name: crash.dump_bytes(name) for name in crash.dumps}


def test_an_entry_is_its_dumps_then_the_raw_crash_as_stored(tmp_path):
    crash = make_crash()
    names = spool_files(tmp_path, crash, 7)
    stem = stem_for(crash, 7)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [stem + ".crash"] + [f"{stem}.{name}.dump" for name in DUMPS])
    assert (tmp_path / names[0]).read_bytes() == crash.serialized_raw_crash()
    for name in DUMPS:
        assert (tmp_path / f"{stem}.{name}.dump").read_bytes() == crash.dump_bytes(name)


def test_open_lists_entries_oldest_first_and_counts_their_bytes(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    crashes = [make_crash(f"{n}e1bb258-cbbf-4589-a673-34f800160918") for n in range(3)]
    sizes = []
    for stamp, crash in zip((300, 100, 200), crashes):
        sizes.append(sum(os.path.getsize(directory / name)
                         for name in spool_files(directory, crash, stamp)))
    spool = Spool(str(directory), reactor, None)
    entries = spool.open()
    assert [entry.crash_id for entry in entries] == [crashes[1].crash_id, crashes[2].crash_id,
                                                     crashes[0].crash_id]
    assert [entry.created for entry in entries] == [100e-9, 200e-9, 300e-9]
    assert [entry.dump_names for entry in entries] == [tuple(DUMPS)] * 3
    assert all(entry.recovered for entry in entries)
    assert spool.total_bytes == sum(sizes) == sum(entry.size for entry in entries)


def test_open_moves_aside_what_is_not_a_complete_entry(tmp_path, log_messages):
    directory = tmp_path / "spool"
    directory.mkdir()
    good = make_crash()
    moved = []

    def broken(n, damage):
        crash = make_crash(f"{n}" + CRASH_ID[1:])
        names = spool_files(directory, crash, n)
        moved.extend(damage(crash, names))

    def half_written(crash, names):  # killed before the rename
        os.rename(directory / names[0], directory / (".tmp-" + names[0]))
        return [".tmp-" + names[0]] + names[1:]

    def dump_missing(crash, names):
        os.unlink(directory / names[1])
        return [names[0], names[2], names[3]]

    def unreadable(crash, names):
        write_entry(directory, names[0], b"{not json")
        return names

    def not_an_object(crash, names):
        write_entry(directory, names[0], b"[1, 2]")
        return names

    def other_crash(crash, names):  # holds another crash than its name says
        write_entry(directory, names[0], good.serialized_raw_crash())
        return names

    def extra_dump(crash, names):  # a dump its raw crash does not list
        write_entry(directory, names[0].replace(".crash", ".stray.dump"), b"x")
        return names + [names[0].replace(".crash", ".stray.dump")]

    for n, damage in enumerate([half_written, dump_missing, unreadable, not_an_object,
                                other_crash, extra_dump], 1):
        broken(n, damage)
    orphan = make_crash("9" + CRASH_ID[1:])  # dumps whose crash file never came
    orphan_names = spool_files(directory, orphan, 9)
    os.unlink(directory / orphan_names[0])
    moved += orphan_names[1:]
    kept = spool_files(directory, good, 10)
    write_entry(directory, "README.txt", b"left alone")

    spool = Spool(str(directory), reactor, None)
    entries = spool.open()

    assert [entry.filename for entry in entries] == [name_for(good, 10)]
    assert sorted(os.listdir(directory / CORRUPT_DIR)) == sorted(moved)
    assert sorted(os.listdir(directory)) == sorted([CORRUPT_DIR, "README.txt"] + kept)
    for name in moved:
        assert any(message.startswith(f"spool entry {name} moved aside to corrupt: ")
                   for message in log_messages), (name, log_messages)
    for reason in ("half-written", "dumps missing: browser", "unreadable raw crash",
                   "not an object", "holds crash", "dumps its raw crash does not list",
                   "a dump without its crash file: its write"):
        assert any(reason in message for message in log_messages), reason


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
    assert entry.dump_names == tuple(DUMPS) and not entry.recovered
    files = [entry.filename] + [entry.dump_filename(name) for name in DUMPS]
    assert sorted(os.listdir(spool.directory)) == sorted([CORRUPT_DIR] + files)
    assert spool.total_bytes == entry.size == sum(
        os.path.getsize(os.path.join(spool.directory, name)) for name in files)
    assert spool.writing_bytes == 0
    loaded = await spool.load(entry)
    assert (loaded.crash_id, loaded.raw_crash, loaded.dumps) == (
        crash.crash_id, crash.raw_crash, joined(crash))
    assert loaded.serialized_raw_crash() == crash.serialized_raw_crash()
    assert spool.load_blocking(entry) == loaded
    linkable = spool.load_files_blocking(entry)
    assert (linkable.crash_id, linkable.dump_names()) == (CRASH_ID, DUMPS)
    assert linkable.raw_crash_file == os.path.join(spool.directory, entry.filename)
    assert open(linkable.raw_crash_file, "rb").read() == crash.serialized_raw_crash()
    assert {name: open(path, "rb").read() for name, path in linkable.dump_files.items()} == \
        joined(crash)
    # what a restart would find
    assert Spool(spool.directory, reactor, None).open() == [
        attr.evolve(entry, recovered=True)]
    await spool.remove(entry)
    assert spool.total_bytes == 0
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]


@pytest.mark.parametrize("load", ["load_blocking", "load_files_blocking"])
@pytest_twisted.ensureDeferred
async def test_a_damaged_dump_found_at_start_up_is_refused_and_quarantined(
        tmp_path, threadpool, load):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    entry = await spool.put(make_crash())
    path = os.path.join(spool.directory, entry.dump_filename("browser"))
    with open(path, "r+b") as dump_file:  # same size, one bit flipped
        dump_file.seek(100)
        byte = dump_file.read(1)
        dump_file.seek(100)
        dump_file.write(bytes([byte[0] ^ 0x40]))
    assert getattr(spool, load)(entry) is not None  # not checked: written by this process
    [recovered] = Spool(spool.directory, reactor, None).open()  # sizes are right
    with pytest.raises(CorruptEntry, match="dump 'browser' is damaged"):
        getattr(spool, load)(recovered)
    await spool.quarantine(recovered, "damaged")
    assert sorted(os.listdir(os.path.join(spool.directory, CORRUPT_DIR))) == sorted(
        [entry.filename] + [entry.dump_filename(name) for name in DUMPS])
    assert spool.total_bytes == 0


@pytest.mark.parametrize("in_pool", [True, False])
@pytest_twisted.ensureDeferred
async def test_each_verb_counts_the_bytes_in_either_form(tmp_path, threadpool, in_pool):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    stored = await spool.put(make_crash())
    unusable = await spool.put(make_crash("1" + CRASH_ID[1:], size=7000))
    assert spool.total_bytes == stored.size + unusable.size
    if in_pool:
        await spool.remove(stored)
    else:
        spool.remove_blocking(stored)
    assert spool.total_bytes == unusable.size
    if in_pool:
        await spool.quarantine(unusable, "unusable")
    else:
        spool.quarantine_blocking(unusable, "unusable")
    assert spool.total_bytes == 0
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]
    assert sorted(os.listdir(os.path.join(spool.directory, CORRUPT_DIR))) == sorted(
        [unusable.filename] + [unusable.dump_filename(name) for name in DUMPS])


@pytest.mark.parametrize("direct_io", [False, True])
@pytest_twisted.ensureDeferred
async def test_fsync_syncs_the_file_and_the_directory(tmp_path, threadpool, monkeypatch,
                                                      direct_io):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool, fsync=True,
                  direct_io=direct_io)
    spool.open()
    await spool.put(make_crash())
    assert spool.writes_direct == direct_io
    # Each dump, the raw crash, then the directory after the rename.
    assert synced == [False, False, False, False, True]

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
async def test_a_write_failing_at_the_raw_crash_leaves_nothing_behind(tmp_path, threadpool,
                                                                        monkeypatch):
    spool = Spool(str(tmp_path / "spool"), reactor, threadpool)
    spool.open()
    real_replace = os.replace

    def broken_rename(source, target):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool_module.os, "replace", broken_rename)
    with pytest.raises(OSError, match="Input/output"):
        await spool.put(make_crash())
    monkeypatch.setattr(spool_module.os, "replace", real_replace)
    assert sorted(os.listdir(spool.directory)) == [CORRUPT_DIR]


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


# -- dumps written with O_DIRECT ---------------------------------------------


@pytest.mark.parametrize("sizes", [[], [0], [1], [4095], [4096], [4097], [3000, 5000, 1],
                                   [spool_module._DIRECT_STEP - 1, 2],
                                   [spool_module._DIRECT_STEP * 2 + 5]])
def test_direct_writes_give_the_exact_bytes(tmp_path, sizes):
    pieces = [os.urandom(size) for size in sizes]
    writer = spool_module.DirectWriter()
    path = str(tmp_path / "dump")
    assert writer.write(path, pieces, fsync=False)
    assert writer.supported
    assert (tmp_path / "dump").read_bytes() == b"".join(pieces)


def test_a_spool_with_direct_io_opens_dumps_with_o_direct(tmp_path, monkeypatch):
    flags = {}
    real_open = os.open

    def recording_open(path, flag, *args):
        flags[os.path.basename(path)] = flag
        return real_open(path, flag, *args)

    monkeypatch.setattr(spool_module.os, "open", recording_open)
    spool = Spool(str(tmp_path / "spool"), reactor, None, direct_io=True)
    spool.open()
    crash = make_crash()
    entry = spool._put(crash, "00000000000000000001-" + CRASH_ID)
    assert spool.writes_direct
    for name in DUMPS:
        assert flags[entry.dump_filename(name)] & os.O_DIRECT
        with open(os.path.join(spool.directory, entry.dump_filename(name)), "rb") as dump:
            assert dump.read() == crash.dump_bytes(name)
    assert not flags[".tmp-" + entry.filename] & os.O_DIRECT  # the small raw crash is not
    assert Spool(spool.directory, reactor, None).open()[0].size == entry.size


@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_a_filesystem_refusing_o_direct_gets_page_cache_writes(tmp_path, monkeypatch,
                                                               refused_at):
    real_open, real_write = os.open, os.write
    direct_fds = set()

    def open_(path, flag, *args):
        if flag & os.O_DIRECT:
            if refused_at == "open":
                raise OSError(22, "Invalid argument")
            fd = real_open(path, flag, *args)
            direct_fds.add(fd)
            return fd
        return real_open(path, flag, *args)

    def write(fd, data):
        if fd in direct_fds:
            raise OSError(22, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(spool_module.os, "open", open_)
    monkeypatch.setattr(spool_module.os, "write", write)
    spool = Spool(str(tmp_path / "spool"), reactor, None, direct_io=True)
    spool.open()
    crash = make_crash()
    entry = spool._put(crash, "00000000000000000001-" + CRASH_ID)
    assert not spool.writes_direct  # and it stays off
    for name in DUMPS:
        with open(os.path.join(spool.directory, entry.dump_filename(name)), "rb") as dump:
            assert dump.read() == crash.dump_bytes(name)
    assert sorted(os.listdir(spool.directory)) == sorted(
        [CORRUPT_DIR, entry.filename] + [entry.dump_filename(name) for name in DUMPS])


def test_stored_markers_are_read_at_start_up_and_removed_with_their_entry(tmp_path):
    directory = tmp_path / "spool"
    writer = Spool(str(directory), None, None)
    writer.open()
    marked = writer._put(Crash("marked", {"uuid": "marked"}, {"upload_file_minidump": b"M"}),
                         f"{1:020d}-marked")
    plain = writer._put(Crash("plain", {"uuid": "plain"}, {}), f"{2:020d}-plain")
    writer.mark_stored_blocking(marked)
    (directory / f"{3:020d}-gone{STORED_SUFFIX}").touch()  # its entry was removed
    spool = Spool(str(directory), None, None)
    found = {entry.crash_id: entry for entry in spool.open()}
    assert found["marked"].stored and not found["plain"].stored
    assert not (directory / f"{3:020d}-gone{STORED_SUFFIX}").exists()
    spool.remove_blocking(found["marked"])
    assert sorted(os.listdir(directory)) == sorted([CORRUPT_DIR, plain.filename])
    assert spool.total_bytes == plain.size
