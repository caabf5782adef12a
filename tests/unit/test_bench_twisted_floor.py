"""
bench/twisted_floor.py's summary: the acceptance line 1.3 x (nginx floor +
work) from the floor's median in the same rounds, the Twisted floor plus the
same work against it, and each step's cost over the Twisted floor.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from twisted_floor import summarize  # noqa: E402


def run(target, round_, cpu_ms, payload="400k"):
    return {"target": target, "payload": payload, "round": round_, "rps": 1000.0,
            "cpu_ms_per_request": cpu_ms}


def lines(records, targets, work):
    args = argparse.Namespace(rounds=3, conc=32, secs=10, targets=targets)
    return summarize(args, ["400k"], records, work)


def test_the_line_and_each_step_come_from_the_medians_of_the_same_rounds():
    records = []
    for round_, (floor, bare, http, antenna) in enumerate(
            [(0.30, 0.29, 0.20, 1.30), (0.34, 0.32, 0.21, 1.40), (0.40, 0.31, 0.19, 1.35)]):
        records += [run("floor", round_, floor), run("twisted", round_, bare),
                    run("twisted-http", round_, http), run("antenna", round_, antenna)]
    out = lines(records, ["floor", "twisted", "twisted-http", "antenna"],
                {"400k": {"work_ms": 0.2}})
    text = "\n".join(out)
    # 1.3 x (median floor 0.34 + 0.2) = 0.702; the Twisted floor 0.31 + 0.2 = 0.51.
    assert "1.3 x (floor 0.340 + work 0.200) = 0.702 ms" in text
    assert "the Twisted floor plus the same work 0.510 ms (0.94x floor + work)" in text
    assert "antenna-tw 1.350 ms" in text
    assert "twisted-http -0.110 ms" in text and "antenna +1.040 ms" in text
    row = next(line for line in out if line.startswith("| 400k |"))
    assert row.endswith("| 0.94 (0.77..0.97) |")  # twisted/floor, round by round


def test_a_target_without_answers_is_left_out_of_the_medians():
    records = [run("floor", 0, 0.3), run("twisted", 0, 0.3), run("twisted-web", 0, None)]
    out = lines(records, ["floor", "twisted", "twisted-web"], {})
    row = next(line for line in out if line.startswith("| 400k |"))
    assert "| - |" in row
    assert not any("acceptance line" in line for line in out)  # no work figure given
