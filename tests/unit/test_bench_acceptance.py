"""
bench/run_bench.py's acceptance lines that compare antenna-tw with the nginx
floor in the same rounds (docs/performance.rst): CPU per crash against the
floor's CPU per request plus the work on the body, and the N-against-1
worker ratio against the floor's own.
"""

import argparse

from bench.run_bench import summarize


def hook(label, round_, cpu_ms, kind="collector"):
    return {"label": label, "kind": kind, "round": round_, "answered": 100, "stored": 100,
            "lost": 0, "orphaned": 0, "cpu_ms_per_crash": cpu_ms, "user_ms_per_crash": cpu_ms,
            "sys_ms_per_crash": 0.0, "other_cpu_pct": 5.0, "incomplete": 0, "tmp_left": 0,
            "sha_bad": 0, "drain_s": 0.5, "undrained": 0, "surplus": 0, "conc": 32}


def block(name, rounds):
    """A compare block: rounds of (antenna CPU ms, floor CPU ms)."""
    runs, hooks = [], []
    for i, (antenna_ms, floor_ms) in enumerate(rounds, 1):
        runs += [{"round": str(i), "target": "antenna", "rps": "500", "p99_ms": "40"},
                 {"round": str(i), "target": "floor", "rps": "3000", "p99_ms": "10"}]
        hooks += [hook("antenna", i, antenna_ms), hook("floor", i, floor_ms, kind="floor")]
    return {"block": f"{name}-c32", "name": name, "conc": 32, "runs": runs,
            "summary": {"antenna": (0.17, 0.16, 0.18)}, "sampler": None, "hooks": hooks}


def rows(lines):
    return {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}


def test_cpu_per_crash_is_compared_round_by_round_with_the_floor_plus_the_work():
    # round ratios 1.0 / (0.4 + 0.6) = 1.0, 1.5 / (0.4 + 0.6) = 1.5, 2.0 / (0.6 + 0.6) = 1.67
    results = [block("400k_gz", [(1.0, 0.4), (1.5, 0.4), (2.0, 0.6)])]
    work = {"400k_gz": {"sha256_ms": 0.2, "inflate_ms": 0.4, "work_ms": 0.6}}

    out = rows(summarize(argparse.Namespace(workers=2), results, None, None, work))

    line = out["2. CPU per crash against floor + work, 400k_gz-c32"]
    assert "1.50x (rounds 1.00..1.67" in line
    assert line.endswith("| FAIL |")


def test_workers_ratio_is_taken_against_the_floors_own_in_the_same_round():
    runs = []
    for i, (w1, w2, f1, f2) in enumerate([(100, 150, 200, 300), (100, 120, 200, 400)], 1):
        for target, rps in (("w1", w1), ("w2", w2), ("floor-w1", f1), ("floor-w2", f2)):
            runs.append({"round": str(i), "target": target, "rps": str(rps), "p99_ms": "9"})
    workers = {"block": "workers", "runs": runs, "summary": {"w2": (1.35, 1.2, 1.5)},
               "hooks": [hook("w1", 1, 1.0), hook("floor-w1", 1, 0.3, kind="floor")]}

    out = rows(summarize(argparse.Namespace(workers=2), [], workers, None, None))

    # per round (1.5 / 1.5) = 1.0 and (1.2 / 2.0) = 0.6: median 0.8
    line = out["3b. --workers 2/1 against the floor's 2/1 (400k, conc 32)"]
    assert "0.80x (rounds 0.60..1.00" in line
    assert line.endswith("| FAIL |")
    # the floors' answers are not crashes to be stored
    assert "100 stored for 100 answered" in out["every answered crash stored"]
