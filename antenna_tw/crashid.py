"""Mint, validate and read crash ids (docs/intake.rst, *Crash ids*)."""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable

# Throttle digits that end up in a crash id.
ACCEPT_DIGIT = 0
DEFER_DIGIT = 1
# Rejected: the crash is not kept; the id minted for its log lines says so.
REJECT_DIGIT = 2
FAKEACCEPT_DIGIT = 3

# The last group is 12 characters: 5 hex, the throttle digit, YYMMDD. (Antenna's own
# check, followed here, is 6 hex-or-digit then 6 digits with the 7th character
# from the end 0 or 1 in strict mode.)
_STRICT = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{5}[01][0-9]{6}$"
)
_LOOSE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{6}[0-9]{6}$"
)

# A uuid4's variant character is 8, 9, a or b: the top two bits of the nibble
# are 10 and the low two are random. This maps a random hex digit onto them.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _random_prefix() -> str:
    """
    The first 29 characters of a random uuid4 string, straight from
    ``os.urandom`` (what ``uuid.uuid4`` uses) without a UUID object: 8-4-4-4
    groups and 5 hex digits, with the version digit 4 and a variant digit.
    """
    bits = os.urandom(12).hex()  # 24 hex digits: 23 used as they are, 1 for the variant
    return (f"{bits[:8]}-{bits[8:12]}-4{bits[12:15]}-"
            f"{_VARIANT[bits[15]]}{bits[16:19]}-{bits[19:]}")


def date_digits(timestamp: datetime.datetime) -> str:
    """YYMMDD of ``timestamp`` (an aware UTC datetime), without strftime."""
    return "%02d%02d%02d" % (timestamp.year % 100, timestamp.month, timestamp.day)


def create_crash_id(timestamp: datetime.datetime, throttle_digit: int,
                    make_uuid: Callable[[], object] | None = None) -> str:
    """
    A uuid4 whose last 7 characters are the throttle digit and the UTC date
    of ``timestamp`` (an aware datetime) as YYMMDD. ``make_uuid`` (tests)
    returns the UUID to use instead of a random one.
    """
    if make_uuid is None:
        prefix = _random_prefix()
    else:
        prefix = str(make_uuid())[:-7]
    return f"{prefix}{throttle_digit:d}{date_digits(timestamp)}"


def is_valid_crash_id(crash_id: object, strict: bool = True) -> bool:
    """True for a well-formed id; strict mode also wants throttle digit 0 or 1."""
    pattern = _STRICT if strict else _LOOSE
    return isinstance(crash_id, str) and pattern.match(crash_id) is not None


def date_from_crash_id(crash_id: str) -> str:
    """The storage date folder, ``YYYYMMDD``, from the id's last 6 digits."""
    return "20" + crash_id[-6:]
