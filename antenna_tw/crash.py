"""The raw crash (docs/intake.rst, *The raw crash*) and the accepted crash that gets stored."""

from __future__ import annotations

import json

import attr

RAW_CRASH_VERSION = 2

# Removed from saved crashes after throttling (rules still see them).
BAD_FIELDS = ("Email", "TelemetryClientId", "TelemetryServerURL", "TelemetrySessionId")


@attr.s(slots=True)
class Crash:
    """
    An accepted crash: its id, the raw crash mapping and the dumps by name.

    A dump is bytes, or a list of bytes pieces as they arrived (written out
    without joining them). A crash read back from the spool for a backend
    that links files into place has ``dump_files`` (name -> path) instead of
    dump bytes, and ``raw_crash_file``, a file holding exactly
    ``serialized_raw_crash()``.
    """

    crash_id = attr.ib()
    raw_crash = attr.ib()
    dumps = attr.ib(factory=dict)
    dump_files = attr.ib(factory=dict, eq=False)
    raw_crash_file = attr.ib(default=None, eq=False)
    _serialized = attr.ib(default=None, eq=False, repr=False)

    def dump_names(self):
        return sorted(self.dump_files or self.dumps)

    def dump_bytes(self, name):
        """One dump as bytes, joining its pieces if it has several."""
        dump = self.dumps[name]
        return dump if isinstance(dump, bytes) else b"".join(dump)

    def dump_pieces(self, name):
        """One dump as a list of bytes-like pieces."""
        dump = self.dumps[name]
        return [dump] if isinstance(dump, (bytes, bytearray, memoryview)) else dump

    def serialized_raw_crash(self):
        """The raw crash as stored (JSON, sorted keys, UTF-8), serialized once."""
        if self._serialized is None:
            self._serialized = serialize_raw_crash(self.raw_crash)
        return self._serialized


def format_timestamp(moment):
    """UTC ISO 8601 with microseconds and ``+00:00``."""
    return moment.isoformat(timespec="microseconds")


def build_raw_crash(report, submitted, user_agent, query_annotations=()):
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


def finish_raw_crash(raw_crash, crash_id, rule_name):
    """Stamp the id and rule, and remove BAD_FIELDS with a note for each."""
    metadata = raw_crash["metadata"]
    for field in BAD_FIELDS:
        if field in raw_crash:
            del raw_crash[field]
            metadata["collector_notes"].append(f"Removed {field} from raw crash.")
    raw_crash["uuid"] = crash_id
    metadata["throttle_rule"] = rule_name
    return raw_crash


def serialize_raw_crash(raw_crash):
    """JSON with sorted keys, as Antenna writes it, in UTF-8."""
    return json.dumps(raw_crash, sort_keys=True).encode("utf-8")


def serialize_dump_names(names):
    return json.dumps(sorted(names)).encode("utf-8")
