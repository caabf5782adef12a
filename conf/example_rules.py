"""
An operator's own throttle rules: an example to copy (docs/throttling.rst).

Say you collect crashes for two products:

* ``Beacon``, an in-house tool with few users: keep every crash.
* ``Voyager``, shipped to many people: keep 5% of its release-channel crashes
  (that is plenty to see the top crashes) and every crash from its other
  channels (beta, nightly: fewer, and the ones developers look at first).

Everything else is rejected, and the answer says which rule did it
(``Discarded=rule_reject_everything_else``).

This directory is not a package: put it on the Python path and name the
attributes by dotted path::

    PYTHONPATH=conf THROTTLE_RULES=example_rules.RULES PRODUCTS=example_rules.PRODUCTS \\
        twistd -n --pidfile= antenna
"""

from antenna_tw.throttler import ACCEPT, REJECT, Rule, always_match

# Products this collector takes; what others send is rejected by
# reject_everything_else anyway, but PRODUCTS also lets rules ask
# ``value in throttler.products``.
PRODUCTS = ["Beacon", "Voyager"]


def is_voyager_release(throttler, crash):
    """Voyager on the release channel (key ``*``: the rule sees the whole crash)."""
    return crash.get("ProductName") == "Voyager" and crash.get("ReleaseChannel") == "release"


RULES = [
    # Keyed rules only run when the annotation is there, and get it as a string.
    Rule("beacon_everything", "ProductName", lambda throttler, value: value == "Beacon", ACCEPT),
    # A draw of random() * 100 <= 5 accepts; the other 95% are rejected.
    Rule("voyager_release_5pct", "*", is_voyager_release, (5, ACCEPT, REJECT)),
    Rule("voyager_prerelease", "ProductName", lambda throttler, value: value == "Voyager",
         ACCEPT),
    # Without this, unmatched crashes would be rejected as rule NO_MATCH.
    Rule("reject_everything_else", "*", always_match, REJECT),
]
