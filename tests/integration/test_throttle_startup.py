"""Start-up with throttle settings: bad ones stop twistd with one line, good env files load."""

import io
import os
import sys

import pytest
from twisted.internet import reactor

from antenna_tw.app import StartupError, build_collector
from antenna_tw.config import load_config
from antenna_tw.tap import Options, makeService
from antenna_tw.throttler import (
    MOZILLA_PRODUCT_PACKAGENAMES,
    MOZILLA_PRODUCTS,
    MOZILLA_RULES,
)
from tests.helpers import test_environ

CONF = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "conf"))


def make_service(environ, *args):
    options = Options()
    options.parseOptions(["--workers", "0", *args])
    return makeService(options, environ=environ, stream=io.StringIO())


@pytest.mark.parametrize("overrides,reason", [
    ({"THROTTLE_RULES": "my_missing_rules.RULES"},
     "THROTTLE_RULES=my_missing_rules.RULES: cannot import my_missing_rules: "
     "ModuleNotFoundError: No module named 'my_missing_rules'"),
    ({"THROTTLE_RULES": "antenna_tw.throttler.MOZILLA_PRODUCTS"},
     "THROTTLE_RULES=antenna_tw.throttler.MOZILLA_PRODUCTS: 'Fenix' is not a Rule"),
    ({"PRODUCTS": "antenna.throttler.NO_PRODUCTS"},
     "PRODUCTS=antenna.throttler.NO_PRODUCTS: antenna_tw.throttler has no attribute "
     "NO_PRODUCTS"),
])
def test_twistd_start_fails_with_one_line(tmp_path, overrides, reason):
    with pytest.raises(SystemExit) as caught:
        make_service(test_environ(tmp_path, **overrides))
    assert str(caught.value) == f"antenna: cannot start: {reason}"


def test_an_invalid_rule_in_an_operator_module_stops_start_up(tmp_path, monkeypatch):
    (tmp_path / "site_rules.py").write_text(
        "from antenna_tw.throttler import Rule, ACCEPT\n"
        "RULES = [Rule('keep_half', '*', lambda throttler, crash: True, (50, ACCEPT))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "site_rules", raising=False)
    config = load_config(test_environ(tmp_path, THROTTLE_RULES="site_rules.RULES"), None)
    with pytest.raises(StartupError) as caught:
        build_collector(config, reactor)
    message = str(caught.value)
    assert message.startswith("THROTTLE_RULES=site_rules.RULES: cannot import site_rules: "
                              "RuleError: rule keep_half: a sampled result is")
    assert "\n" not in message


def test_mozilla_env_sets_up_mozillas_rules(tmp_path):
    # The environment wins over the file: keep files and metrics local to the test.
    service = make_service(test_environ(tmp_path), "--env", os.path.join(CONF, "mozilla.env"))
    throttler = service.collector.throttler
    assert throttler.rules == MOZILLA_RULES
    assert throttler.products == MOZILLA_PRODUCTS
    assert throttler.product_packagenames == MOZILLA_PRODUCT_PACKAGENAMES


def test_example_rules_load_with_conf_on_the_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(CONF)
    monkeypatch.delitem(sys.modules, "example_rules", raising=False)
    service = make_service(test_environ(tmp_path, THROTTLE_RULES="example_rules.RULES",
                                        PRODUCTS="example_rules.PRODUCTS"))
    throttler = service.collector.throttler
    assert [rule.rule_name for rule in throttler.rules] == [
        "beacon_everything", "voyager_release_5pct", "voyager_prerelease",
        "reject_everything_else"]
    assert throttler.products == ["Beacon", "Voyager"]
