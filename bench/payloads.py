"""Reading the shared harness's payloads (``make_payloads.py``): for the bench scripts."""

from __future__ import annotations

from pathlib import Path


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
