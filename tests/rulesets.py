"""Rule sets for tests, loaded by dotted path like an operator's own module."""

from antenna_tw.throttler import DEFER, FAKEACCEPT, REJECT, Rule, always_match

REJECT_ALL = [Rule("reject_everything", "*", always_match, REJECT)]
FAKEACCEPT_ALL = [Rule("fake_everything", "*", always_match, FAKEACCEPT)]
DEFER_ALL = [Rule("defer_everything", "*", always_match, DEFER)]
