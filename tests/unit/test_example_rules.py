"""conf/example_rules.py decides as its docstring and docs/throttling.rst say."""

import importlib
import os
import random
import sys

import pytest

from antenna_tw.throttler import ACCEPT, REJECT, Throttler

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "conf"))


class Draw:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


@pytest.fixture
def example_rules(monkeypatch):
    # conf/ is not a package: operators put it on PYTHONPATH, tests on sys.path.
    monkeypatch.syspath_prepend(CONF)
    monkeypatch.delitem(sys.modules, "example_rules", raising=False)
    return importlib.import_module("example_rules")


@pytest.mark.parametrize("annotations,draw,outcome", [
    ({"ProductName": "Beacon", "ReleaseChannel": "release"}, 0.9,
     (ACCEPT, "beacon_everything", 100)),
    ({"ProductName": "Beacon"}, 0.9, (ACCEPT, "beacon_everything", 100)),
    ({"ProductName": "Voyager", "ReleaseChannel": "release"}, 0.05,
     (ACCEPT, "voyager_release_5pct", 5)),
    ({"ProductName": "Voyager", "ReleaseChannel": "release"}, 0.0501,
     (REJECT, "voyager_release_5pct", 5)),
    ({"ProductName": "Voyager", "ReleaseChannel": "beta"}, 0.9,
     (ACCEPT, "voyager_prerelease", 100)),
    ({"ProductName": "Voyager"}, 0.9, (ACCEPT, "voyager_prerelease", 100)),
    ({"ProductName": "Firefox", "ReleaseChannel": "nightly"}, 0.0,
     (REJECT, "reject_everything_else", 100)),
    ({}, 0.0, (REJECT, "reject_everything_else", 100)),
])
def test_example_rules(example_rules, annotations, draw, outcome):
    throttler = Throttler(example_rules.RULES, example_rules.PRODUCTS, random=Draw(draw))
    assert throttler.decide(annotations) == outcome


def test_about_five_percent_of_voyager_release_is_kept(example_rules):
    throttler = Throttler(example_rules.RULES, example_rules.PRODUCTS,
                          random=random.Random(1))
    crash = {"ProductName": "Voyager", "ReleaseChannel": "release"}
    kept = [throttler.decide(crash)[0] for _ in range(10_000)].count(ACCEPT)
    assert 400 <= kept <= 600
