"""
Realistic crash-report bodies for tests, made on the spot and the same on
every run: Firefox-like annotations (text parts, or one JSON ``extra``
part) and a made-up minidump whose bytes mix random runs, zero runs and
repeated words, so gzip shrinks it about 2x as it does real dumps.

    python -m tests.payload_maker OUT_DIR [--json-extra]

writes each payload as ``<name>.body`` and ``<name>.headers`` (one
``Name: value`` line each), the layout ``bench/payloads.py`` reads.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
from pathlib import Path

import attr

from antenna_tw.send_crash import build_multipart

KIB = 1024
MIB = 1024 * KIB

# name -> (exact body size before gzip, dump part names)
SHAPES = {
    "100k": (100 * KIB, ["upload_file_minidump"]),
    "400k": (400 * KIB, ["upload_file_minidump"]),  # about a median crash report
    "400k_multi": (400 * KIB, ["upload_file_minidump", "upload_file_minidump_browser",
                               "memory_report"]),
    "3m": (3 * MIB, ["upload_file_minidump"]),  # about the largest that matters
}
# every shape plain and gzipped
NAMES = sorted(name + suffix for name in SHAPES for suffix in ("", "_gz"))


@attr.s(frozen=True)
class Payload:
    name: str = attr.ib()
    headers: dict = attr.ib()  # Content-Type, and Content-Encoding when gzipped
    body: bytes = attr.ib()
    dumps: dict = attr.ib()  # part name -> dump bytes, as the collector must store them

    def dump_sha256(self):
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.dumps.items()}


def annotations(rng):
    """Annotations a Firefox nightly sends, which the Mozilla throttle rules accept."""
    build_id = f"20261120{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    crash_time = 1795800000 + rng.randrange(600000)
    environment = {
        "build": {"applicationName": "Firefox", "buildId": build_id, "version": "147.0a1",
                  "architecture": "x86-64"},
        "system": {"memoryMB": 15872, "cpu": {"count": 8, "vendor": "GenuineIntel"},
                   "os": {"name": "Linux", "version": "6.8", "locale": "en-US"}},
        "addons": {f"addon{i:02d}@example.org": {"version": f"1.{i}.{rng.randrange(10)}"}
                   for i in range(6)},
    }
    pairs = {
        "ProductName": "Firefox",
        "ProductID": "{ec8030f7-c20a-464f-9b0e-13a3a9e97384}",
        "Vendor": "Mozilla",
        "Version": "147.0a1",
        "BuildID": build_id,
        "ReleaseChannel": "nightly",
        "CrashTime": str(crash_time),
        "StartupTime": str(crash_time - 5400),
        "InstallTime": str(crash_time - 3 * 86400),
        "SubmittedFrom": "Auto",
        "Throttleable": "1",
        "ProcessType": "content",
        "Notes": "FP(D00-L1000-W00000000-T010) WR? WR+ EGL? EGL+ ",
        "MozCrashReason": "MOZ_RELEASE_ASSERT(isSome())",
        "AvailablePhysicalMemory": "3912216576",
        "TotalPhysicalMemory": "16642998272",
        "AdapterVendorID": "0x8086",
        "GraphicsCriticalError": "|[0][GFX1-]: Failed to create shared memory",
        "ThreadIdNameMapping": ",".join(f'{4000 + i}:"Thread{i}"' for i in range(24)),
        "URL": "https://example.com/ünïcode?q=1",
        "TelemetryEnvironment": json.dumps(environment, separators=(",", ":")),
    }
    return pairs


def fake_minidump(rng, size):
    """``size`` bytes starting with the minidump signature, compressible like a real dump."""
    out = bytearray(b"MDMP\x93\xa7\x00\x00")
    while len(out) < size:
        run = rng.randrange(64, 4096)
        kind = rng.random()
        if kind < 0.45:
            out += rng.randbytes(run)  # code, heap, pointers
        elif kind < 0.75:
            out += bytes(run)  # padding, unused stack
        else:
            out += rng.randbytes(8) * (run // 8)  # pointer tables, fill patterns
    return bytes(out[:size])


def make_shape(name, json_extra=False, seed=20261120, shape=None):
    """
    The plain payload of shape ``name`` (or ``shape``: ``(size, dump names)``):
    exactly its size, its dumps sharing what is left.
    """
    size, dump_names = shape or SHAPES[name]
    rng = random.Random(f"{seed}/{name}/{json_extra}")
    boundary = "------------------------%016x" % rng.getrandbits(64)
    pairs = annotations(rng)

    def build(dumps):
        return build_multipart(pairs, dumps, use_json=json_extra, boundary=boundary)

    room = size - len(build({dump_name: b"" for dump_name in dump_names})[0])
    # the first dump is the big one; the others take an eighth each
    small = room // 8 if len(dump_names) > 1 else 0
    sizes = [room - small * (len(dump_names) - 1)] + [small] * (len(dump_names) - 1)
    dumps = {dump_name: fake_minidump(rng, dump_size)
             for dump_name, dump_size in zip(dump_names, sizes)}
    body, content_type = build(dumps)
    assert len(body) == size, (name, len(body), size)
    return Payload(name, {"Content-Type": content_type}, body, dumps)


def make_payloads(json_extra=False, seed=20261120):
    """Every payload of ``NAMES``, in that order."""
    made = []
    for name in SHAPES:
        plain = make_shape(name, json_extra, seed)
        zipped = Payload(name + "_gz", {**plain.headers, "Content-Encoding": "gzip"},
                         gzip.compress(plain.body, compresslevel=6, mtime=0), plain.dumps)
        made += [plain, zipped]
    return sorted(made, key=lambda payload: payload.name)


def write(directory, payloads):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for payload in payloads:
        (directory / f"{payload.name}.body").write_bytes(payload.body)
        (directory / f"{payload.name}.headers").write_text(
            "".join(f"{key}: {value}\n" for key, value in payload.headers.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write test crash-report payloads.")
    parser.add_argument("out_dir")
    parser.add_argument("--json-extra", action="store_true",
                        help="annotations as one JSON 'extra' part")
    args = parser.parse_args(argv)
    payloads = make_payloads(args.json_extra)
    write(args.out_dir, payloads)
    for payload in payloads:
        print(f"{payload.name}\t{len(payload.body)}")


if __name__ == "__main__":
    main()
