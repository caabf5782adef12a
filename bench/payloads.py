"""
Reading a folder of crash-report payloads for the bench scripts: each
``<name>.body`` with its ``<name>.headers``. ``python -m tests.payload_maker
DIR`` writes one (100k, 400k, 400k_multi, 3m, each also ``_gz``); so does
the load harness's payload maker (``make_payloads.py``), whose payloads the
load benchmark sends.
"""

from __future__ import annotations

from pathlib import Path

MAKE_THEM = ".venv/bin/python -m tests.payload_maker DIR"


def require_payloads(directory, names, option="--payloads"):
    """Exit with one line naming ``option`` unless every payload of ``names`` is in ``directory``."""
    if directory is None:
        raise SystemExit(f"bench: no payload folder given: pass {option} DIR (make one with "
                         f"{MAKE_THEM})")
    missing = [name for name in names
               if not (Path(directory) / f"{name}.body").is_file()
               or not (Path(directory) / f"{name}.headers").is_file()]
    if missing:
        raise SystemExit(f"bench: no payload {' '.join(missing)} in {directory} "
                         f"({option} DIR; make one with {MAKE_THEM})")


def read_payload(directory, name):
    """
    ``(body, headers)`` of payload ``name`` in ``directory``: the body's
    bytes and its ``<name>.headers`` as ``(name, value)`` pairs, as sent.
    """
    directory = Path(directory)
    body = (directory / f"{name}.body").read_bytes()
    headers = []
    for line in (directory / f"{name}.headers").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip():
            headers.append((key.strip(), value.strip()))
    return body, headers


def header_map(headers):
    """``(name, value)`` pairs -> {lower-cased name: value}."""
    return {key.lower(): value for key, value in headers}
