"""The throttler: Mozilla's rules one by one, sampling, CONTINUE, loading rule sets."""

import datetime
import json
import random
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antenna_tw.config import ThrottleSettings
from antenna_tw.throttler import (
    ACCEPT,
    ACCEPT_ALL,
    CONTINUE,
    DEFER,
    FAKEACCEPT,
    MOZILLA_PRODUCT_PACKAGENAMES,
    MOZILLA_PRODUCTS,
    MOZILLA_RULES,
    REJECT,
    Rule,
    RuleError,
    Throttler,
    always_match,
    build_throttler,
    load_dotted,
)

# "Today" for every test, so has_old_buildid does not depend on the real date.
NOW = datetime.datetime(2025, 6, 15, 12, 0)
RECENT_BUILD = "20250601000000"


class Draw:
    """A random source that always draws ``value`` (in [0, 1))."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def mozilla_throttler(draw=0.5, products=MOZILLA_PRODUCTS):
    return Throttler(MOZILLA_RULES, products, MOZILLA_PRODUCT_PACKAGENAMES,
                     random=Draw(draw), now=lambda: NOW)


def crash(**annotations):
    """A crash from a supported product that only accept_everything takes, plus changes."""
    base = {"ProductName": "Thunderbird", "Version": "128.0", "BuildID": RECENT_BUILD}
    base.update(annotations)
    return {key: value for key, value in base.items() if value is not None}


def windows(build_number):
    return json.dumps({"system": {"os": {"name": "Windows_NT",
                                         "windowsBuildNumber": build_number}}})


FIREFOX_RELEASE = {"ProductName": "Firefox", "ReleaseChannel": "release"}

# In rule order: (rule, a crash it matches, what comes out, a crash it does
# not match, what comes out then). Draws are 0.5, so 10% and 25% samples take
# their "otherwise" result.
MOZILLA_TABLE = [
    ("has_old_buildid",
     crash(BuildID="20230616000000"), (REJECT, "has_old_buildid", 100),
     crash(BuildID="20230617000000"), (ACCEPT, "accept_everything", 100)),
    ("has_hangid_and_browser",
     crash(HangID="abc"), (REJECT, "has_hangid_and_browser", 100),
     crash(HangID="abc", ProcessType="content"), (ACCEPT, "accept_everything", 100)),
    # An 8-digit BuildID escapes has_old_buildid, which shadows this rule otherwise.
    ("infobar_is_true",
     crash(ProductName="Firefox", SubmittedFromInfobar="true", Version="57.0.1",
           BuildID="20171201"),
     (REJECT, "infobar_is_true", 100),
     crash(ProductName="Firefox", SubmittedFromInfobar="true", Version="60.0",
           BuildID="20171201"),
     (ACCEPT, "accept_everything", 100)),
    ("b2g",
     crash(ProductName="B2G"), (FAKEACCEPT, "b2g", 100),
     crash(ProductName="B2G OS"), (REJECT, "unsupported_product", 100)),
    ("unsupported_product",
     crash(ProductName="Nope"), (REJECT, "unsupported_product", 100),
     crash(ProductName="Firefox"), (ACCEPT, "accept_everything", 100)),
    ("unsupported_packagename",
     crash(ProductName="Fenix", Android_PackageName="org.example.fork"),
     (REJECT, "unsupported_packagename", 100),
     crash(ProductName="Fenix", Android_PackageName="org.mozilla.firefox"),
     (ACCEPT, "accept_everything", 100)),
    ("throttleable_0",
     crash(Throttleable="0", **FIREFOX_RELEASE), (ACCEPT, "throttleable_0", 100),
     crash(Throttleable="1", **FIREFOX_RELEASE), (REJECT, "is_firefox_desktop", 10)),
    ("has_comments",
     crash(Comments="", **FIREFOX_RELEASE), (ACCEPT, "has_comments", 100),
     crash(**FIREFOX_RELEASE), (REJECT, "is_firefox_desktop", 10)),
    ("has_phc",
     crash(PHCKind="FreedPage", **FIREFOX_RELEASE), (ACCEPT, "has_phc", 100),
     crash(**FIREFOX_RELEASE), (REJECT, "is_firefox_desktop", 10)),
    ("is_background",
     crash(ProcessType="utility", **FIREFOX_RELEASE), (ACCEPT, "is_background", 100),
     crash(ProcessType="content", **FIREFOX_RELEASE), (REJECT, "is_firefox_desktop", 10)),
    ("is_shutdownkill",
     crash(ipc_channel_error="ShutDownKill"), (REJECT, "is_shutdownkill", 10),
     crash(ipc_channel_error="ChannelError"), (ACCEPT, "accept_everything", 100)),
    ("is_firefox_esr_unsupported_windows",
     crash(ProductName="Firefox", ReleaseChannel="esr", TelemetryEnvironment=windows(9600)),
     (REJECT, "is_firefox_esr_unsupported_windows", 25),
     crash(ProductName="Firefox", ReleaseChannel="esr", TelemetryEnvironment=windows(10240)),
     (ACCEPT, "is_alpha_beta_esr", 100)),
    ("is_alpha_beta_esr",
     crash(ReleaseChannel="beta"), (ACCEPT, "is_alpha_beta_esr", 100),
     crash(ReleaseChannel="betas"), (ACCEPT, "accept_everything", 100)),
    ("is_nightly",
     crash(ProductName="Firefox", ReleaseChannel="nightly-cck"), (ACCEPT, "is_nightly", 100),
     crash(ProductName="Firefox", ReleaseChannel="Nightly"), (ACCEPT, "accept_everything", 100)),
    ("is_firefox_desktop",
     crash(**FIREFOX_RELEASE), (REJECT, "is_firefox_desktop", 10),
     crash(ReleaseChannel="release"), (ACCEPT, "accept_everything", 100)),
    # Nothing escapes the last rule: its "no match" case is the whole list above.
    ("accept_everything",
     crash(), (ACCEPT, "accept_everything", 100),
     None, None),
]


def rule_named(name):
    return next(rule for rule in MOZILLA_RULES if rule.rule_name == name)


def test_table_covers_every_mozilla_rule_in_order():
    assert [row[0] for row in MOZILLA_TABLE] == [rule.rule_name for rule in MOZILLA_RULES]
    assert len(MOZILLA_RULES) == 16


@pytest.mark.parametrize("name,matching,matched,other,other_outcome", MOZILLA_TABLE,
                         ids=[row[0] for row in MOZILLA_TABLE])
def test_mozilla_rule(name, matching, matched, other, other_outcome):
    throttler = mozilla_throttler()
    rule = rule_named(name)

    assert rule.match(throttler, matching)
    assert throttler.decide(matching) == matched
    if other is not None:
        assert not rule.match(throttler, other)
        assert throttler.decide(other) == other_outcome


def test_mozilla_lists():
    assert MOZILLA_PRODUCTS == ["Fenix", "Firefox", "Firefox Enterprise", "Focus", "MozillaVPN",
                                "ReferenceBrowser", "Thunderbird"]
    assert MOZILLA_PRODUCT_PACKAGENAMES == {
        "Fenix": ["org.mozilla.firefox", "org.mozilla.firefox_beta", "org.mozilla.fenix"],
        "Focus": ["org.mozilla.focus", "org.mozilla.focus.beta", "org.mozilla.focus.nightly",
                  "org.mozilla.klar"],
        "ReferenceBrowser": ["org.mozilla.reference.browser"],
    }


@pytest.mark.parametrize("annotations,outcome", [
    # the sampled share of ShutDownKill goes on: here to is_nightly
    ({"ipc_channel_error": "ShutDownKill", "ProductName": "Firefox",
      "ReleaseChannel": "nightly"}, (ACCEPT, "is_nightly", 100)),
    # ... and of old-Windows ESR to is_alpha_beta_esr
    ({"ProductName": "Firefox", "ReleaseChannel": "esr", "TelemetryEnvironment": windows(6002)},
     (ACCEPT, "is_alpha_beta_esr", 100)),
    ({"ProductName": "Firefox", "ReleaseChannel": "release"}, (ACCEPT, "is_firefox_desktop", 10)),
])
def test_mozilla_samples_that_are_kept(annotations, outcome):
    assert mozilla_throttler(draw=0.05).decide(crash(**annotations)) == outcome


@pytest.mark.parametrize("annotations", [
    {"ProductName": None},  # missing
    {"ProductName": 5},  # JSON number: "5"
    {"ProductName": "firefox"},  # case matters
])
def test_product_names_compare_as_exact_strings(annotations):
    assert mozilla_throttler().decide(crash(**annotations)) == (
        REJECT, "unsupported_product", 100)


def test_product_names_from_json_numbers_are_text():
    throttler = mozilla_throttler(products=["2048"])
    assert throttler.decide(crash(ProductName=2048)) == (ACCEPT, "accept_everything", 100)


@pytest.mark.parametrize("changes,matches", [
    ({}, True),
    ({"Version": "52.0"}, True),
    ({"Version": "51.0"}, False),
    ({"Version": "5.0"}, False),
    ({"BuildID": "20171225"}, True),
    ({"BuildID": "20171226"}, False),
    ({"SubmittedFromInfobar": "True"}, False),
    ({"ProductName": "Thunderbird"}, False),
    ({"BuildID": ""}, False),
    ({"SubmittedFromInfobar": None}, False),
])
def test_infobar_is_true(changes, matches):
    sample = {"ProductName": "Firefox", "SubmittedFromInfobar": "true", "Version": "59.0b3",
              "BuildID": "20171201"}
    sample.update(changes)
    sample = {key: value for key, value in sample.items() if value is not None}
    assert rule_named("infobar_is_true").match(mozilla_throttler(), sample) is matches


def test_missing_android_packagename_is_unsupported():
    assert mozilla_throttler().decide(crash(ProductName="Focus")) == (
        REJECT, "unsupported_packagename", 100)


def test_b2g_is_handled_normally_when_listed_as_a_product():
    throttler = mozilla_throttler(products=MOZILLA_PRODUCTS + ["B2G"])
    assert throttler.decide(crash(ProductName="B2G")) == (ACCEPT, "accept_everything", 100)
    assert mozilla_throttler().decide(crash(ProductName="b2g")) == (FAKEACCEPT, "b2g", 100)


def test_empty_product_lists_turn_product_checks_off():
    throttler = Throttler(MOZILLA_RULES, random=Draw(0.5), now=lambda: NOW)
    assert throttler.decide(crash(ProductName="Anything")) == (ACCEPT, "accept_everything", 100)
    assert throttler.decide(crash(ProductName="Fenix")) == (ACCEPT, "accept_everything", 100)


@pytest.mark.parametrize("buildid,old", [
    ("20230616235959", True),
    ("20000101000000", True),
    ("20230617000000", False),
    ("20231301000000", False),  # no month 13
    ("2023061500000", False),  # 13 digits
    ("202306150000000", False),  # 15 digits
    ("19990101000000", False),  # not 20...
    ("2023O615000000", False),
    ("", False),
])
def test_old_buildid_is_two_years_before_the_throttlers_clock(buildid, old):
    assert rule_named("has_old_buildid").match(mozilla_throttler(), {"BuildID": buildid}) is old


def test_old_buildid_follows_the_injected_clock():
    rule = rule_named("has_old_buildid")
    build = {"BuildID": "20230616000000"}
    # 730 days before 2025-06-15 00:00 is the build's own midnight: not older.
    earlier = Throttler(MOZILLA_RULES, now=lambda: datetime.datetime(2025, 6, 15))
    later = Throttler(MOZILLA_RULES, now=lambda: datetime.datetime(2025, 6, 15, 0, 0, 1))
    assert rule.match(later, build)
    assert not rule.match(earlier, build)


@pytest.mark.parametrize("environment", [
    "",
    "not json",
    "[]",
    json.dumps({"system": []}),
    json.dumps({"system": {"os": "Windows_NT"}}),
    json.dumps({"system": {"os": {"name": "Darwin", "windowsBuildNumber": 9600}}}),
    windows("9600"),
    windows(None),
    windows(0),
    "[" * 100000 + "]" * 100000,
])
def test_unsupported_windows_needs_a_windows_build_number(environment):
    sample = crash(ProductName="Firefox", ReleaseChannel="esr", TelemetryEnvironment=environment)
    assert not rule_named("is_firefox_esr_unsupported_windows").match(
        mozilla_throttler(), sample)


def test_keyed_conditions_see_strings():
    seen = []
    rule = Rule("look", "Throttleable", lambda throttler, value: seen.append(value), ACCEPT)
    rule.match(None, {"Throttleable": 0})
    rule.match(None, {"Throttleable": None})
    assert seen == ["0", "None"]
    assert mozilla_throttler().decide(crash(Throttleable=0)) == (ACCEPT, "throttleable_0", 100)


# Sampling and CONTINUE


def test_a_ten_percent_rule_keeps_about_ten_percent():
    throttler = Throttler([Rule("ten", "*", always_match, (10, ACCEPT, REJECT))],
                          random=random.Random(20250615))
    results = [throttler.decide({})[0] for _ in range(10_000)]
    assert 900 <= results.count(ACCEPT) <= 1100
    assert results.count(ACCEPT) + results.count(REJECT) == 10_000


@pytest.mark.parametrize("draw,result", [(0.0, ACCEPT), (0.10, ACCEPT), (0.1001, REJECT)])
def test_a_draw_at_the_percent_takes_the_first_result(draw, result):
    throttler = Throttler([Rule("ten", "*", always_match, (10, ACCEPT, REJECT))],
                          random=Draw(draw))
    assert throttler.decide({}) == (result, "ten", 10)


RULES_WITH_CONTINUE = [
    Rule("sampled", "*", always_match, (30, CONTINUE, REJECT)),
    Rule("deferred", "ProductName", lambda throttler, value: value == "Test", DEFER),
]


def test_continue_falls_through_to_the_next_rule():
    throttler = Throttler(RULES_WITH_CONTINUE, random=Draw(0.2))
    assert throttler.decide({"ProductName": "Test"}) == (DEFER, "deferred", 100)
    assert throttler.decide({"ProductName": "Other"}) == (REJECT, "NO_MATCH", 0)


def test_the_other_share_of_a_continue_rule_decides():
    throttler = Throttler(RULES_WITH_CONTINUE, random=Draw(0.5))
    assert throttler.decide({"ProductName": "Test"}) == (REJECT, "sampled", 30)


def test_no_match_is_reject():
    assert Throttler([]).decide({"ProductName": "Test"}) == (REJECT, "NO_MATCH", 0)


def test_accept_all_accepts_everything():
    assert Throttler(ACCEPT_ALL).decide({}) == (ACCEPT, "accept_everything", 100)


def test_throttle_returns_a_deferred_of_the_decision():
    fired = []
    mozilla_throttler().throttle(crash(ProductName="B2G")).addCallback(fired.append)
    assert fired == [(FAKEACCEPT, "b2g", 100)]


def test_a_failing_condition_fails_the_deferred():
    def broken(throttler, value):
        raise KeyError("oops")

    failures = []
    Throttler([Rule("broken", "*", broken, ACCEPT)]).throttle({}).addErrback(failures.append)
    assert failures and failures[0].check(KeyError)


# Rules and rule sets that are not usable


@pytest.mark.parametrize("args,message", [
    (("has space", "*", always_match, ACCEPT), "must match"),
    (("", "*", always_match, ACCEPT), "must match"),
    (("ok", "", always_match, ACCEPT), "key must be"),
    (("ok", None, always_match, ACCEPT), "key must be"),
    (("ok", "*", "Firefox", ACCEPT), "condition must be callable"),
    (("ok", "*", always_match, 7), "unknown result 7"),
    (("ok", "*", always_match, CONTINUE), "unknown result 4"),
    (("ok", "*", always_match, (10, ACCEPT)), "(percent, result_le, result_gt)"),
    (("ok", "*", always_match, (110, ACCEPT, REJECT)), "between 0 and 100"),
    (("ok", "*", always_match, ("10", ACCEPT, REJECT)), "between 0 and 100"),
    (("ok", "*", always_match, (10, ACCEPT, 9)), "unknown result 9"),
])
def test_invalid_rules_are_refused(args, message):
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Rule(*args)


@pytest.mark.parametrize("rules", ["antenna_tw", {"a": 1}, 5, [always_match]])
def test_a_rule_set_is_a_list_of_rules(rules):
    with pytest.raises(RuleError):
        Throttler(rules)


def test_load_dotted_maps_antenna_paths():
    assert load_dotted("antenna.throttler.MOZILLA_RULES") is MOZILLA_RULES
    assert load_dotted("antenna_tw.throttler.ACCEPT_ALL") is ACCEPT_ALL


def settings(**overrides):
    return ThrottleSettings(**overrides)


@pytest.mark.parametrize("overrides,start", [
    ({"throttle_rules": "no_such_module.RULES"},
     "THROTTLE_RULES=no_such_module.RULES: cannot import no_such_module: ModuleNotFoundError"),
    ({"throttle_rules": "antenna_tw.throttler.NO_SUCH_RULES"},
     "THROTTLE_RULES=antenna_tw.throttler.NO_SUCH_RULES: antenna_tw.throttler has no attribute"),
    ({"throttle_rules": "RULES"}, "THROTTLE_RULES=RULES: 'RULES' is not a dotted path"),
    ({"throttle_rules": "antenna_tw.throttler.Rule"},
     "THROTTLE_RULES=antenna_tw.throttler.Rule: a rule set is a list of Rule"),
    ({"products": "antenna_tw.throttler.MOZILLA_PRODUCT_PACKAGENAMES"},
     "PRODUCTS=antenna_tw.throttler.MOZILLA_PRODUCT_PACKAGENAMES: products are a list"),
    ({"product_packagenames": "antenna_tw.throttler.MOZILLA_PRODUCTS"},
     "PRODUCT_PACKAGENAMES=antenna_tw.throttler.MOZILLA_PRODUCTS: product packagenames are"),
])
def test_build_throttler_names_the_option_in_one_line(overrides, start):
    with pytest.raises(RuleError) as caught:
        build_throttler(settings(**overrides))
    message = str(caught.value)
    assert message.startswith(start)
    assert "\n" not in message


@pytest.mark.parametrize("source,expected", [
    ("RULES = [\n", "SyntaxError"),
    ("raise RuntimeError('no\\nway')", "RuntimeError: no way"),
    ("from antenna_tw.throttler import Rule, ACCEPT\n"
     "RULES = [Rule('bad name', '*', lambda t, c: True, ACCEPT)]\n", "RuleError: rule name"),
])
def test_a_broken_rules_module_is_one_line(tmp_path, monkeypatch, source, expected):
    (tmp_path / "broken_rules.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_rules", raising=False)
    with pytest.raises(RuleError) as caught:
        build_throttler(settings(throttle_rules="broken_rules.RULES"))
    message = str(caught.value)
    assert message.startswith("THROTTLE_RULES=broken_rules.RULES: cannot import broken_rules:")
    assert expected in message
    assert "\n" not in message


def test_build_throttler_loads_mozillas_set_by_antenna_paths():
    throttler = build_throttler(settings(
        throttle_rules="antenna.throttler.MOZILLA_RULES",
        products="antenna.throttler.MOZILLA_PRODUCTS",
        product_packagenames="antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES",
    ), rng=Draw(0.5))
    assert throttler.rules == MOZILLA_RULES
    assert throttler.products == MOZILLA_PRODUCTS
    assert throttler.product_packagenames == MOZILLA_PRODUCT_PACKAGENAMES
    assert throttler.decide(crash(**FIREFOX_RELEASE)) == (REJECT, "is_firefox_desktop", 10)


def test_defaults_accept_everything():
    throttler = build_throttler(settings())
    assert throttler.rules == ACCEPT_ALL
    assert throttler.products == []
    assert throttler.product_packagenames == {}


def reference_old_buildid(now, buildid):
    """has_old_buildid as it was written first, with strptime."""
    if re.match(r"^20\d{12}$", buildid) is None:
        return False
    try:
        built = datetime.datetime.strptime(buildid[:8], "%Y%m%d")
    except ValueError:
        return False
    return built < now - datetime.timedelta(days=730)


DIGITS = "0123456789" + "\u0660\u0661\u0662\u0669" + "\uff10\uff11\uff12\uff19"


@given(month=st.integers(0, 99), day=st.integers(0, 99), year=st.integers(0, 99),
       rest=st.text(DIGITS, min_size=6, max_size=6),
       date_text=st.none() | st.text(DIGITS, min_size=6, max_size=6),
       newline=st.booleans(),
       now=st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2100, 1, 1)))
def test_old_buildid_judges_dates_as_strptime_did(month, day, year, rest, date_text, newline,
                                                  now):
    digits = date_text if date_text is not None else f"{year:02d}{month:02d}{day:02d}"
    buildid = "20" + digits + rest + ("\n" if newline else "")
    throttler = Throttler(MOZILLA_RULES, now=lambda: now)
    assert (rule_named("has_old_buildid").match(throttler, {"BuildID": buildid})
            is reference_old_buildid(now, buildid))
