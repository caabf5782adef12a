"""
What inflating an upload costs, in one process, without a server (not run by CI).

Feeds the payloads of a folder (``--payloads``, see bench/payloads.py)
through ``UploadReader`` in 256 KiB pieces, as the collector reads them (``UPLOAD_READ_SIZE``), and prints the CPU time
per crash: the whole parse (``UploadReader`` feed + finish) and the inflate
alone (``Decompressor`` feed + close). With ``--backend`` it compares inflate
backends (``zlib``, ``zlib-ng``) where the code has more than one. Each
figure is the best and the median of ``--rounds`` rounds of a few hundred
milliseconds, so the whole run takes a few seconds. Rounds
alternate between backends, so other load on the machine hits them alike.

    .venv/bin/python -m tests.payload_maker /tmp/inflate-payloads
    .venv/bin/python bench/inflate_micro.py --payloads /tmp/inflate-payloads \
        [--names 400k 400k_gz 3m 3m_gz] [--backend zlib zlib-ng] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from antenna_tw.intake import payload  # noqa: E402
from bench.payloads import header_map, read_payload, require_payloads  # noqa: E402

try:
    from antenna_tw.intake import inflate  # noqa: E402
except ImportError:  # code from before the inflate backends
    inflate = None

READ_SIZE = 256 * 1024
LIMITS = dict(max_payload_size=25 * 1024 * 1024,
              max_decompressed_size=100 * 1024 * 1024, max_parts=256)


def load(directory, name):
    body, headers = read_payload(directory, name)
    return body, header_map(headers)


def pieces(body):
    return [body[i:i + READ_SIZE] for i in range(0, len(body), READ_SIZE)]


def parse(chunks, headers):
    reader = payload.UploadReader(
        headers.get("content-type"), headers.get("content-encoding"),
        sum(map(len, chunks)), **LIMITS)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


def inflate_only(chunks, encoding):
    decompressor = payload.Decompressor(encoding, LIMITS["max_decompressed_size"])
    size = 0
    for chunk in chunks:
        for piece in decompressor.feed(chunk):
            size += len(piece)
    for piece in decompressor.close():
        size += len(piece)
    return size


def measure(functions, rounds, budget=0.25):
    """
    Best and median ms per call of each function. The rounds alternate
    between the functions, so a change in the machine's other load hits
    them alike.
    """
    calls = []
    for function in functions:
        function()  # warm up; also checks that it works
        started = time.process_time()
        function()
        calls.append(max(1, int(budget / max(time.process_time() - started, 1e-5))))
    per_call = [[] for _ in functions]
    for _ in range(rounds):
        for function, count, times in zip(functions, calls, per_call):
            started = time.process_time()
            for _ in range(count):
                function()
            times.append((time.process_time() - started) / count * 1000)
    return [(min(times), statistics.median(times)) for times in per_call]


def in_backend(name, default, function):
    """``function`` run with the inflate backend ``name`` (None: the code's choice)."""
    if name is None:
        return function
    if inflate is None:
        raise SystemExit("this code has a single inflate backend (zlib); drop --backend")
    if name not in inflate.BACKENDS:
        raise SystemExit(f"backend {name} is not installed here")

    def run():
        inflate.DEFAULT_BACKEND = name
        try:
            return function()
        finally:
            inflate.DEFAULT_BACKEND = default
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", type=Path, default=None,
                        help="a folder of <name>.body and <name>.headers files")
    parser.add_argument("--names", nargs="+", default=["400k", "400k_gz", "3m", "3m_gz"])
    parser.add_argument("--backend", nargs="+", default=[None],
                        help="inflate backends to compare (default: the one the code picks)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    require_payloads(args.payloads, args.names)

    default = inflate.DEFAULT_BACKEND if inflate is not None else "zlib"
    print(f"inflate backend picked by the code: {default}; CPU ms per crash, "
          f"best / median of {args.rounds} rounds")
    print(f"{'payload':10} {'backend':8} {'wire KB':>8} {'parse':>17} {'inflate alone':>17}")
    for name in args.names:
        body, headers = load(args.payloads, name)
        chunks = pieces(body)
        encoding = payload.check_content_encoding(headers.get("content-encoding"))
        backends = args.backend if encoding != "identity" else [None]
        functions = []
        for backend in backends:
            functions.append(in_backend(backend, default, lambda: parse(chunks, headers)))
            if encoding != "identity":
                functions.append(in_backend(
                    backend, default, lambda: inflate_only(chunks, encoding)))
        assert parse(chunks, headers).dumps, name
        figures = iter(measure(functions, args.rounds))
        for backend in backends:
            whole = next(figures)
            alone = ""
            if encoding != "identity":
                alone = "%7.3f / %7.3f" % next(figures)
            label = backend or default if encoding != "identity" else "-"
            print(f"{name:10} {label:8} {len(body) / 1000:8.1f} "
                  f"{whole[0]:7.3f} / {whole[1]:7.3f} {alone:>17}")

if __name__ == "__main__":
    main()
