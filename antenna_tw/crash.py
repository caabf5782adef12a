"""
The raw crash (docs/intake.rst, *The raw crash*), the accepted crash that gets
stored, and the same crash as the spool holds it (files).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attr

RAW_CRASH_VERSION = 2

# Removed from saved crashes after throttling (rules still see them).
BAD_FIELDS = ("Email", "TelemetryClientId", "TelemetryServerURL", "TelemetrySessionId")

Piece = bytes | bytearray | memoryview
# A dump: bytes, or the pieces it arrived in (written out without joining them).
Dump = Piece | Sequence[Piece]
RawCrash = dict[str, Any]


@attr.s(slots=True)
class Crash:
    """
    An accepted crash in memory: its id, the raw crash mapping and the dumps
    by name, each bytes or a list of bytes pieces as they arrived.
    """

    crash_id: str = attr.ib()
    raw_crash: RawCrash = attr.ib()
    dumps: Mapping[str, Dump] = attr.ib(factory=dict)  # read only: a report's lists fit
    _serialized: bytes | None = attr.ib(default=None, eq=False, repr=False)

    def dump_names(self) -> list[str]:
        """The dump names, sorted."""
        return sorted(self.dumps)

    def dump_bytes(self, name: str) -> bytes:
        """One dump as bytes, joining its pieces if it has several."""
        dump = self.dumps[name]
        if isinstance(dump, bytes):
            return dump
        if isinstance(dump, (bytearray, memoryview)):
            return bytes(dump)
        return b"".join(dump)

    def dump_pieces(self, name: str) -> Sequence[Piece]:
        """One dump as a list of bytes-like pieces."""
        dump = self.dumps[name]
        return [dump] if isinstance(dump, (bytes, bytearray, memoryview)) else dump

    def serialized_raw_crash(self) -> bytes:
        """The raw crash as stored (JSON, sorted keys, UTF-8), serialized once."""
        if self._serialized is None:
            self._serialized = serialize_raw_crash(self.raw_crash)
        return self._serialized


@attr.s(frozen=True, slots=True)
class SpooledCrash:
    """
    A crash as the spool holds it, for storage that places files
    (``IFileCrashStorage``): ``raw_crash_file`` holds exactly what
    ``Crash.serialized_raw_crash()`` would give, ``dump_files`` maps each
    dump name to the file holding that dump. Nothing is read into memory.
    """

    crash_id: str = attr.ib()
    raw_crash_file: str = attr.ib()
    dump_files: Mapping[str, str] = attr.ib(factory=dict)

    def dump_names(self) -> list[str]:
        """The dump names, sorted."""
        return sorted(self.dump_files)


def format_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and ``+00:00``."""
    return moment.isoformat(timespec="microseconds")


class ParsedReport(Protocol):
    """What ``build_raw_crash`` reads of a parsed upload (the intake's CrashReport)."""

    # Read-only members: a report's own fields are mutable dicts and lists.
    @property
    def annotations(self) -> Mapping[str, Any]: ...
    @property
    def dump_checksums(self) -> Mapping[str, str]: ...
    @property
    def notes(self) -> Sequence[str]: ...
    @property
    def payload(self) -> str: ...
    @property
    def payload_compressed(self) -> bool: ...
    @property
    def payload_size(self) -> int: ...


def build_raw_crash(report: ParsedReport, submitted: datetime, user_agent: str | None,
                    query_annotations: Iterable[tuple[str, str]] = ()) -> RawCrash:
    """
    The annotations plus the collector's own fields, before throttling.

    ``query_annotations`` (from the URL) fill in keys the body did not send.
    Collector-owned keys sent by the client are overwritten.
    """
    raw_crash = dict(report.annotations)
    for key, value in query_annotations:
        raw_crash.setdefault(key, value)
    raw_crash["submitted_timestamp"] = format_timestamp(submitted)
    raw_crash["version"] = RAW_CRASH_VERSION
    raw_crash["metadata"] = {
        "payload": report.payload,
        "payload_compressed": "1" if report.payload_compressed else "0",
        "payload_size": report.payload_size,
        "collector_notes": list(report.notes),
        "dump_checksums": dict(report.dump_checksums),
        "user_agent": user_agent if user_agent is not None else "None",
    }
    return raw_crash


def finish_raw_crash(raw_crash: RawCrash, crash_id: str, rule_name: str) -> RawCrash:
    """Stamp the id and rule, and remove BAD_FIELDS with a note for each."""
    metadata = raw_crash["metadata"]
    for field in BAD_FIELDS:
        if field in raw_crash:
            del raw_crash[field]
            metadata["collector_notes"].append(f"Removed {field} from raw crash.")
    raw_crash["uuid"] = crash_id
    metadata["throttle_rule"] = rule_name
    return raw_crash


def serialize_raw_crash(raw_crash: Mapping[str, Any]) -> bytes:
    """JSON with sorted keys, as Antenna writes it, in UTF-8."""
    return json.dumps(raw_crash, sort_keys=True).encode("utf-8")


def serialize_dump_names(names: Iterable[str]) -> bytes:
    """The ``dump_names`` file: a JSON list of the names, sorted, in UTF-8."""
    return json.dumps(sorted(names)).encode("utf-8")
