"""
Throttling: ordered rules decide what happens to each crash (docs/throttling.rst).

A rule looks at one annotation (or the whole crash, key ``*``) and returns a
result: ACCEPT, DEFER, REJECT, FAKEACCEPT, or a ``(percent, result_le,
result_gt)`` sample whose result may be CONTINUE (go on to the next rule).
The first decisive rule wins; no match is REJECT by ``NO_MATCH``.

Rule sets are plain lists of ``Rule`` in any importable module; the
``THROTTLE_RULES``, ``PRODUCTS`` and ``PRODUCT_PACKAGENAMES`` options name
them by dotted path (docs/throttling.rst).
"""

from __future__ import annotations

import datetime
import importlib
import json
import random
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attr
from twisted.internet import defer

if TYPE_CHECKING:
    from antenna_tw.config import ThrottleSettings

ACCEPT = 0  # save and process
DEFER = 1  # save, do not process
REJECT = 2  # do not save
FAKEACCEPT = 3  # answer as if accepted, save nothing
CONTINUE = 4  # keep going to the next rule

RESULT_NAMES = {ACCEPT: "ACCEPT", DEFER: "DEFER", REJECT: "REJECT",
                FAKEACCEPT: "FAKEACCEPT", CONTINUE: "CONTINUE"}

_RULE_NAME = re.compile(r"^[a-z0-9_]+$", re.IGNORECASE)

# A crash as rules see it: annotation name -> value (a string, or any JSON
# value from an ``extra`` part).
Crash = Mapping[str, Any]
# A result, or a sample: (percent, result when at or under it, result over it).
Result = int | tuple[float, int, int]
# condition(throttler, value): value is str(crash[key]), or the crash for key "*".
Condition = Callable[["Throttler", Any], object]
# (result, rule name, percent) of a decision.
Decision = tuple[int, str, float]


class RuleError(ValueError):
    """A rule or rule set is not usable."""


def _check_result(result: object) -> None:
    if isinstance(result, tuple):
        if len(result) != 3:
            raise RuleError(f"a sampled result is (percent, result_le, result_gt), not {result!r}")
        percent, result_le, result_gt = result
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) \
                or not 0 <= percent <= 100:
            raise RuleError(f"percent must be between 0 and 100, not {percent!r}")
        for each in (result_le, result_gt):
            if each not in RESULT_NAMES:
                raise RuleError(f"unknown result {each!r}")
    elif result not in RESULT_NAMES or result == CONTINUE:
        raise RuleError(f"unknown result {result!r}")


def text(crash: Crash, key: str, default: object = "") -> str:
    """
    ``crash[key]`` as a string, ``default`` when absent.

    Conditions compare strings (annotations are strings), but a JSON
    ``extra`` part may carry numbers or null; ``str()`` makes those
    comparable the way Antenna does (null becomes ``"None"``).
    """
    return str(crash.get(key, default))


@attr.s(frozen=True)
class Rule:
    """
    ``condition(throttler, value)`` decides whether ``result`` applies.

    ``value`` is ``str(crash[key])``, or the whole crash when ``key`` is
    ``*``; a rule with any other key never matches a crash without that key.
    """

    rule_name: str = attr.ib()
    key: str = attr.ib()
    condition: Condition = attr.ib()
    result: Result = attr.ib()

    @rule_name.validator
    def _check_name(self, attribute: attr.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not _RULE_NAME.match(value):
            raise RuleError(f"rule name {value!r} must match [a-z0-9_]+")

    @key.validator
    def _check_key(self, attribute: attr.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not value:
            raise RuleError(f"rule {self.rule_name}: key must be an annotation name or '*'")

    @condition.validator
    def _check_condition(self, attribute: attr.Attribute[Condition], value: object) -> None:
        if not callable(value):
            raise RuleError(f"rule {self.rule_name}: condition must be callable")

    @result.validator
    def _check_result(self, attribute: attr.Attribute[Result], value: object) -> None:
        try:
            _check_result(value)
        except RuleError as error:
            raise RuleError(f"rule {self.rule_name}: {error}") from None

    def match(self, throttler: Throttler, crash: Crash) -> bool:
        """True when this rule applies to ``crash``."""
        if self.key == "*":
            return bool(self.condition(throttler, crash))
        if self.key not in crash:
            return False
        return bool(self.condition(throttler, text(crash, self.key)))


def _list_of(value: Any, item: type, what: str, not_item: str) -> list[Any]:
    """``value`` as a list of ``item``; RuleError in one line (a dotted path may name anything)."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise RuleError(f"{what}, not {type(value).__name__}")
    items = list(value)
    for one in items:
        if not isinstance(one, item):
            raise RuleError(not_item.format(one))
    return items


def _rule_list(rules: Any) -> list[Rule]:
    return _list_of(rules, Rule, "a rule set is a list of Rule", "{!r} is not a Rule")


def _product_list(products: Any) -> list[str]:
    return _list_of(products, str, "products are a list of product names",
                    "product name {!r} is not a string")


def _packagename_map(mapping: Any) -> dict[str, list[str]]:
    if not isinstance(mapping, Mapping):
        raise RuleError(
            f"product packagenames are a dict of product -> package names, "
            f"not {type(mapping).__name__}")
    result: dict[str, list[str]] = {}
    for product, names in mapping.items():
        if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
            raise RuleError(f"package names of {product!r} must be a list of strings")
        result[product] = list(names)
    return result


@attr.s
class Throttler:
    """
    Runs a rule set over a crash.

    ``products`` and ``product_packagenames`` are there for rules to read
    (Mozilla's product checks do). ``random`` and ``now`` (a callable giving
    the local time as a naive datetime) are injected so sampling and
    date-based rules are deterministic in tests. ``throttle`` returns a
    Deferred so that a rule set may one day consult something outside the
    process without changing callers.
    """

    rules: list[Rule] = attr.ib(converter=_rule_list)
    products: list[str] = attr.ib(factory=list, converter=_product_list)
    product_packagenames: dict[str, list[str]] = attr.ib(factory=dict,
                                                         converter=_packagename_map)
    random: random.Random = attr.ib(default=attr.Factory(random.Random), repr=False)
    now: Callable[[], datetime.datetime] = attr.ib(default=datetime.datetime.now, repr=False)

    def decide(self, crash: Crash) -> Decision:
        """``(result, rule_name, percent)`` for ``crash``, synchronously."""
        for rule in self.rules:
            if not rule.match(self, crash):
                continue
            result: int
            percent: float = 100
            if isinstance(rule.result, tuple):
                percent, result_le, result_gt = rule.result
                result = result_le if self.random.random() * 100 <= percent else result_gt
            else:
                result = rule.result
            if result == CONTINUE:
                continue
            return result, rule.rule_name, percent
        return REJECT, "NO_MATCH", 0

    def throttle(self, crash: Crash) -> defer.Deferred[Decision]:
        """A Deferred of ``(result, rule_name, percent)``."""
        return defer.maybeDeferred(self.decide, crash)


def always_match(throttler: Throttler, crash: object) -> bool:
    """A condition that matches every crash."""
    return True


ACCEPT_ALL = [Rule("accept_everything", "*", always_match, ACCEPT)]

# An empty product list turns the product checks off.
ALL_PRODUCTS: list[str] = []
ALL_PRODUCT_PACKAGENAMES: dict[str, list[str]] = {}


# Mozilla's production rule set, as in Antenna today (docs/throttling.rst,
# *Mozilla's rules*).

MOZILLA_PRODUCTS = [
    "Fenix",
    "Firefox",
    "Firefox Enterprise",
    "Focus",
    "MozillaVPN",
    "ReferenceBrowser",
    "Thunderbird",
]

# Android products accept only their own package names (nightly, beta, release apps).
MOZILLA_PRODUCT_PACKAGENAMES = {
    "Fenix": ["org.mozilla.firefox", "org.mozilla.firefox_beta", "org.mozilla.fenix"],
    "Focus": ["org.mozilla.focus", "org.mozilla.focus.beta", "org.mozilla.focus.nightly",
              "org.mozilla.klar"],
    "ReferenceBrowser": ["org.mozilla.reference.browser"],
}

# Antenna's pattern, kept as is: "20", then 12 more digits.
_BUILDID = re.compile(r"^20\d{12}$")
OLD_BUILDID_DAYS = 730
WINDOWS_8_1_BUILD_NUMBER = 9600
INFOBAR_VERSIONS = tuple(f"{major}." for major in range(52, 60))


def _build_date(digits: str) -> datetime.datetime:
    """
    ``datetime.strptime(digits, "%Y%m%d")`` for 8 digits, without strptime's
    cost: for ASCII digits that is YYYY, MM and DD, a real date or a
    ValueError. Other digits (``\\d`` matches any script's) go to strptime.
    """
    if not digits.isascii():
        return datetime.datetime.strptime(digits, "%Y%m%d")
    return datetime.datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))


def match_old_buildid(throttler: Throttler, crash: Crash) -> bool:
    """A BuildID whose date is more than two years before ``throttler.now()``."""
    buildid = text(crash, "BuildID")
    if _BUILDID.match(buildid) is None:
        return False
    try:
        built = _build_date(buildid[:8])
    except ValueError:
        return False  # 14 digits that do not start with a date
    return built < throttler.now() - datetime.timedelta(days=OLD_BUILDID_DAYS)


def match_hangid_and_browser(throttler: Throttler, crash: Crash) -> bool:
    """The browser half of a hang report (the content half carries the signal)."""
    return "HangID" in crash and text(crash, "ProcessType", "browser") == "browser"


def match_infobar_true(throttler: Throttler, crash: Crash) -> bool:
    """Firefox 52-59 crashes resubmitted from the infobar (Mozilla bug 1426949)."""
    product = text(crash, "ProductName")
    infobar = text(crash, "SubmittedFromInfobar")
    version = text(crash, "Version")
    buildid = text(crash, "BuildID")
    if not (product and infobar and version and buildid):
        return False
    return (product == "Firefox" and infobar == "true"
            and version.startswith(INFOBAR_VERSIONS) and buildid < "20171226")


def match_b2g(throttler: Throttler, crash: Crash) -> bool:
    """B2G, unless listed as a product: it retries rejected crashes forever."""
    return "B2G" not in throttler.products and text(crash, "ProductName").lower() == "b2g"


def match_unsupported_product(throttler: Throttler, crash: Crash) -> bool:
    """A ProductName not in the throttler's (non-empty) product list."""
    products = throttler.products
    return bool(products) and text(crash, "ProductName") not in products


def match_unsupported_packagename(throttler: Throttler, crash: Crash) -> bool:
    """A product with a package list whose Android_PackageName is missing or not in it."""
    names = throttler.product_packagenames.get(text(crash, "ProductName"), [])
    # A missing package name reads "None", which no list contains.
    return bool(names) and text(crash, "Android_PackageName", None) not in names


def match_unsupported_windows(throttler: Throttler, crash: Crash) -> bool:
    """TelemetryEnvironment says Windows 8.1 or older (build number <= 9600)."""
    environment = text(crash, "TelemetryEnvironment")
    if not environment:
        return False
    try:
        data = json.loads(environment)
    except (ValueError, RecursionError):
        return False
    # Any shape is possible here: walk it without trusting it.
    system = data.get("system") if isinstance(data, dict) else None
    os_data = system.get("os") if isinstance(system, dict) else None
    if not isinstance(os_data, dict) or os_data.get("name") != "Windows_NT":
        return False
    build_number = os_data.get("windowsBuildNumber")
    if not build_number or not isinstance(build_number, int):
        return False
    return build_number <= WINDOWS_8_1_BUILD_NUMBER


def match_firefox_esr_unsupported_windows(throttler: Throttler, crash: Crash) -> bool:
    """Firefox ESR on Windows 8.1 or older."""
    return (text(crash, "ProductName") == "Firefox" and text(crash, "ReleaseChannel") == "esr"
            and match_unsupported_windows(throttler, crash))


def match_firefox_release(throttler: Throttler, crash: Crash) -> bool:
    """Firefox on the release channel."""
    return text(crash, "ProductName") == "Firefox" and text(crash, "ReleaseChannel") == "release"


BACKGROUND_PROCESSES = frozenset({"gpu", "plugin", "rdd", "socket", "utility"})

MOZILLA_RULES = [
    # Builds over two years old are not worth processing.
    Rule("has_old_buildid", "*", match_old_buildid, REJECT),
    Rule("has_hangid_and_browser", "*", match_hangid_and_browser, REJECT),
    Rule("infobar_is_true", "*", match_infobar_true, REJECT),
    Rule("b2g", "*", match_b2g, FAKEACCEPT),
    # Both product checks do nothing when their list is empty.
    Rule("unsupported_product", "*", match_unsupported_product, REJECT),
    Rule("unsupported_packagename", "*", match_unsupported_packagename, REJECT),
    # Sent by hand from about:crashes.
    Rule("throttleable_0", "Throttleable", lambda throttler, value: value == "0", ACCEPT),
    Rule("has_comments", "Comments", always_match, ACCEPT),
    Rule("has_phc", "PHCKind", always_match, ACCEPT),
    # Few enough that sampling would leave too little to work with.
    Rule("is_background", "ProcessType",
         lambda throttler, value: value in BACKGROUND_PROCESSES, ACCEPT),
    # Not really crashes, and very many: 10% go on to the rules below.
    Rule("is_shutdownkill", "ipc_channel_error",
         lambda throttler, value: value == "ShutDownKill", (10, CONTINUE, REJECT)),
    Rule("is_firefox_esr_unsupported_windows", "*", match_firefox_esr_unsupported_windows,
         (25, CONTINUE, REJECT)),
    Rule("is_alpha_beta_esr", "ReleaseChannel",
         lambda throttler, value: value in ("aurora", "beta", "esr"), ACCEPT),
    Rule("is_nightly", "ReleaseChannel",
         lambda throttler, value: value.startswith("nightly"), ACCEPT),
    Rule("is_firefox_desktop", "*", match_firefox_release, (10, ACCEPT, REJECT)),
    Rule("accept_everything", "*", always_match, ACCEPT),
]


# Antenna's dotted paths, so an operator's Antenna env file keeps working.
ANTENNA_ALIASES = {"antenna.throttler.": "antenna_tw.throttler."}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_dotted(path: str) -> Any:
    """Import ``package.module.ATTRIBUTE`` and return the attribute."""
    for old, new in ANTENNA_ALIASES.items():
        if path.startswith(old):
            path = new + path[len(old):]
    module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise RuleError(f"{path!r} is not a dotted path to an attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an operator's module may fail in any way
        raise RuleError(
            f"cannot import {module_name}: {type(error).__name__}: {_one_line(error)}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RuleError(f"{module_name} has no attribute {attribute}") from None


def build_throttler(settings: ThrottleSettings, rng: random.Random | None = None) -> Throttler:
    """A Throttler from ThrottleSettings; RuleError naming the option on a bad path or rule."""

    def load(key: str, path: str, check: Callable[[Any], Any]) -> Any:
        try:
            return check(load_dotted(path))
        except RuleError as error:
            raise RuleError(f"{key}={path}: {error}") from None

    throttler = Throttler(
        rules=load("THROTTLE_RULES", settings.throttle_rules, _rule_list),
        products=load("PRODUCTS", settings.products, _product_list),
        product_packagenames=load("PRODUCT_PACKAGENAMES", settings.product_packagenames,
                                  _packagename_map),
    )
    if rng is not None:
        throttler.random = rng
    return throttler
