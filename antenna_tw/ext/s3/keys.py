"""Where each file of a crash goes in the bucket: Antenna's layout (docs/s3.rst)."""

from __future__ import annotations

from antenna_tw.crashid import date_from_crash_id

# Dump names stored under the key of the main minidump, as Antenna does.
MAIN_DUMP_NAMES = ("upload_file_minidump", "")


def raw_crash_key(crash_id):
    """``v2/raw_crash/<first 3 chars of id>/<YYYYMMDD>/<id>``"""
    return f"v2/raw_crash/{crash_id[:3]}/{date_from_crash_id(crash_id)}/{crash_id}"


def dump_names_key(crash_id):
    """``v1/dump_names/<id>``"""
    return f"v1/dump_names/{crash_id}"


def dump_key(crash_id, name):
    """``v1/<name>/<id>``; ``upload_file_minidump`` and ``""`` are ``v1/dump/<id>``."""
    if name in MAIN_DUMP_NAMES:
        name = "dump"
    return f"v1/{name}/{crash_id}"
