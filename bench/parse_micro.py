"""
What the multipart body parse costs, in one process, without a server (not run by CI).

Parses the payloads of a folder (``--payloads``, see bench/payloads.py)
with ``payload.PayloadParser`` (the
collector's own ``antenna_tw.intake.formdata`` parser) and with
``tests.reference_payload.ReferencePayloadParser`` (the same parser on the
pure-Python ``multipart`` library, as it was before), alternately, so other
load on the machine hits both alike. Gzipped payloads are decompressed first:
this measures the multipart parse, dump checksums included, not the inflate
(bench/inflate_micro.py does that). The body is fed in 64 KiB pieces. Each
figure is CPU microseconds per body (``time.thread_time``), the best of
``--rounds`` rounds of ``--parses`` parses; ``sha256`` is the checksum of the
dumps alone, which no parser can avoid.

    .venv/bin/python -m tests.payload_maker /tmp/payloads
    .venv/bin/python bench/parse_micro.py --payloads /tmp/payloads \
        [--names 400k 400k_gz 3m] [--rounds 5] [--parses 300]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.intake import payload  # noqa: E402
from bench.payloads import header_map, read_payload, require_payloads  # noqa: E402
from tests.reference_payload import ReferencePayloadParser  # noqa: E402

CHUNK = 64 * 1024
LIMITS = dict(max_decompressed_size=100 * 1024 * 1024, max_parts=256)
PARSERS = {"new": payload.PayloadParser, "old": ReferencePayloadParser}


def load(directory, name):
    """(64 KiB pieces of the decompressed body, boundary)."""
    body, pairs = read_payload(directory, name)
    headers = header_map(pairs)
    if headers.get("content-encoding", "identity") != "identity":
        body = gzip.decompress(body)
    boundary = payload.parse_content_type(headers["content-type"])
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)], boundary


def parse(parser_class, chunks, boundary):
    parser = parser_class(boundary, **LIMITS)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.close()


def per_body(function, parses):
    started = time.thread_time()
    for _ in range(parses):
        function()
    return (time.thread_time() - started) / parses * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", type=Path, default=None,
                        help="a folder of <name>.body and <name>.headers files")
    parser.add_argument("--names", nargs="+", default=["400k", "400k_gz", "3m"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parses", type=int, default=300)
    args = parser.parse_args()
    require_payloads(args.payloads, args.names)
    print(f"{'payload':10} {'old µs':>9} {'new µs':>9} {'sha256 µs':>10} {'new/old':>8}")
    for name in args.names:
        chunks, boundary = load(args.payloads, name)
        old = parse(ReferencePayloadParser, chunks, boundary)
        new = parse(payload.PayloadParser, chunks, boundary)
        assert (new.annotations, new.dumps, new.dump_checksums, new.notes) == (
            old.annotations, old.dumps, old.dump_checksums, old.notes), name
        dumps = list(new.dump_pieces.values())

        def checksums():
            for pieces in dumps:
                digest = hashlib.sha256()
                for piece in pieces:
                    digest.update(piece)

        best = {"old": float("inf"), "new": float("inf"), "sha256": float("inf")}
        for _ in range(args.rounds):
            for key, parser_class in PARSERS.items():
                best[key] = min(best[key], per_body(
                    lambda: parse(parser_class, chunks, boundary), args.parses))
            best["sha256"] = min(best["sha256"], per_body(checksums, args.parses))
        print(f"{name:10} {best['old']:9.0f} {best['new']:9.0f} {best['sha256']:10.0f} "
              f"{best['new'] / best['old']:8.2f}")


if __name__ == "__main__":
    main()
