"""The raw crash (SPEC.md section 2) and the accepted crash that gets stored."""

from __future__ import annotations

import json

import attr

RAW_CRASH_VERSION = 2

# Removed from saved crashes after throttling (rules still see them).
BAD_FIELDS = ("Email", "TelemetryClientId", "TelemetryServerURL", "TelemetrySessionId")


@attr.s(slots=True)
class Crash:
    """An accepted crash: its id, the raw crash mapping and the dumps by name."""

    crash_id = attr.ib()
    raw_crash = attr.ib()
    dumps = attr.ib(factory=dict)

    def dump_names(self):
        return sorted(self.dumps)


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
