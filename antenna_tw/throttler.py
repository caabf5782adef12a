"""
Throttling: ordered rules decide what happens to each crash (SPEC.md section 4).

A rule looks at one annotation (or the whole crash, key ``*``) and returns a
result: ACCEPT, DEFER, REJECT, FAKEACCEPT, or a ``(percent, result_le,
result_gt)`` sample whose result may be CONTINUE (go on to the next rule).
The first decisive rule wins; no match is REJECT by ``NO_MATCH``.
"""

from __future__ import annotations

import importlib
import random
import re

import attr
from twisted.internet import defer

ACCEPT = 0  # save and process
DEFER = 1  # save, do not process
REJECT = 2  # do not save
FAKEACCEPT = 3  # answer as if accepted, save nothing
CONTINUE = 4  # keep going to the next rule

RESULT_NAMES = {ACCEPT: "ACCEPT", DEFER: "DEFER", REJECT: "REJECT",
                FAKEACCEPT: "FAKEACCEPT", CONTINUE: "CONTINUE"}

_RULE_NAME = re.compile(r"^[a-z0-9_]+$", re.IGNORECASE)


class RuleError(ValueError):
    """A rule or rule set is not usable."""


def _check_result(result):
    if isinstance(result, tuple):
        if len(result) != 3:
            raise RuleError(f"a sampled result is (percent, result_le, result_gt), not {result!r}")
        percent, result_le, result_gt = result
        if not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise RuleError(f"percent must be between 0 and 100, not {percent!r}")
        for each in (result_le, result_gt):
            if each not in RESULT_NAMES:
                raise RuleError(f"unknown result {each!r}")
    elif result not in RESULT_NAMES or result == CONTINUE:
        raise RuleError(f"unknown result {result!r}")


@attr.s(frozen=True)
class Rule:
    """``condition(throttler, value)`` decides whether ``result`` applies."""

    rule_name = attr.ib()
    key = attr.ib()
    condition = attr.ib()
    result = attr.ib()

    @rule_name.validator
    def _check_name(self, attribute, value):
        if not isinstance(value, str) or not _RULE_NAME.match(value):
            raise RuleError(f"rule name {value!r} must match [a-z0-9_]+")

    @condition.validator
    def _check_condition(self, attribute, value):
        if not callable(value):
            raise RuleError(f"rule {self.rule_name}: condition must be callable")

    @result.validator
    def _check_result(self, attribute, value):
        try:
            _check_result(value)
        except RuleError as error:
            raise RuleError(f"rule {self.rule_name}: {error}") from None

    def match(self, throttler, crash):
        """True when this rule applies to ``crash``."""
        if self.key == "*":
            return bool(self.condition(throttler, crash))
        if self.key not in crash:
            return False
        return bool(self.condition(throttler, str(crash[self.key])))


def always_match(throttler, crash):
    return True


ACCEPT_ALL = [Rule("accept_everything", "*", always_match, ACCEPT)]
ALL_PRODUCTS = []
ALL_PRODUCT_PACKAGENAMES = {}


@attr.s
class Throttler:
    """
    Runs a rule set over a crash.

    ``throttle`` returns a Deferred so that a rule set may one day consult
    something outside the process without changing callers.
    """

    rules = attr.ib(converter=list)
    products = attr.ib(factory=list)
    product_packagenames = attr.ib(factory=dict)
    random = attr.ib(default=attr.Factory(random.Random), repr=False)

    @rules.validator
    def _check_rules(self, attribute, rules):
        for rule in rules:
            if not isinstance(rule, Rule):
                raise RuleError(f"{rule!r} is not a Rule")

    def decide(self, crash):
        """``(result, rule_name, percent)`` for ``crash``, synchronously."""
        for rule in self.rules:
            if not rule.match(self, crash):
                continue
            result = rule.result
            percent = 100
            if isinstance(result, tuple):
                percent, result_le, result_gt = result
                result = result_le if self.random.random() * 100 <= percent else result_gt
            if result == CONTINUE:
                continue
            return result, rule.rule_name, percent
        return REJECT, "NO_MATCH", 0

    def throttle(self, crash):
        """A Deferred of ``(result, rule_name, percent)``."""
        return defer.maybeDeferred(self.decide, crash)


# Antenna's dotted paths, so an operator's Antenna env file keeps working.
ANTENNA_ALIASES = {"antenna.throttler.": "antenna_tw.throttler."}


def load_dotted(path):
    """Import ``package.module.ATTRIBUTE`` and return the attribute."""
    for old, new in ANTENNA_ALIASES.items():
        if path.startswith(old):
            path = new + path[len(old):]
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise RuleError(f"{path!r} is not a dotted path to an attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RuleError(f"cannot import {module_name}: {error}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RuleError(f"{module_name} has no attribute {attribute}") from None


def build_throttler(settings, rng=None):
    """A Throttler from ThrottleSettings; RuleError on a bad path or rule."""
    throttler = Throttler(
        rules=load_dotted(settings.throttle_rules),
        products=list(load_dotted(settings.products)),
        product_packagenames=dict(load_dotted(settings.product_packagenames)),
    )
    if rng is not None:
        throttler.random = rng
    return throttler
