"""
bench/s3_mode.py's reading of whether the spool backlog grows under load:
the least-squares slope of every sample from 10 s to the end, and the
medians of seconds 5-15 and of the last 10 s, beside the two samples.
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from s3_mode import backlog_trend  # noqa: E402


def series(level, growth_per_s=0.0, spikes=(), seed=7, secs=60):
    noise = random.Random(seed)
    samples = []
    for t in range(secs + 1):
        spool = level + growth_per_s * t + noise.randint(-4, 4)
        samples.append({"t": float(t), "spool": int(spool) + (200 if t in spikes else 0)})
    return samples


def test_a_flat_backlog_has_a_slope_near_nothing_even_when_its_last_sample_is_higher():
    samples = series(30, spikes=(59, 60))  # a burst at the very end
    trend = backlog_trend(samples)
    assert samples[-1]["spool"] > samples[10]["spool"]  # the two-sample reading fails
    assert abs(trend["backlog_slope_per_min"]) < 200
    assert 25 <= trend["backlog_median_5_15s"] <= 35
    assert 25 <= trend["backlog_median_last_10s"] <= 35


def test_a_growing_backlog_shows_as_crashes_per_minute():
    trend = backlog_trend(series(30, growth_per_s=100))
    assert 5_900 <= trend["backlog_slope_per_min"] <= 6_100
    assert trend["backlog_median_last_10s"] > trend["backlog_median_5_15s"] + 4_000


def test_too_few_samples_give_no_slope():
    trend = backlog_trend(series(30, secs=11))
    assert trend["backlog_slope_per_min"] is None
    assert trend["backlog_median_5_15s"] is not None
