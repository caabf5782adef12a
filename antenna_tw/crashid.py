"""Mint, validate and read crash ids (SPEC.md section 3)."""

import re
import uuid

# Throttle digits that end up in a crash id.
ACCEPT_DIGIT = 0
DEFER_DIGIT = 1
FAKEACCEPT_DIGIT = 3

# The last group is 12 characters: 5 hex, the throttle digit, YYMMDD. (SPEC.md's
# regex shows 6 hex before the digit, one too many for a uuid; Antenna's own
# check, followed here, is 6 hex-or-digit then 6 digits with the 7th character
# from the end 0 or 1 in strict mode.)
_STRICT = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{5}[01][0-9]{6}$"
)
_LOOSE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{6}[0-9]{6}$"
)


def create_crash_id(timestamp, throttle_digit, make_uuid=uuid.uuid4):
    """
    A uuid4 whose last 7 characters are the throttle digit and the UTC date
    of ``timestamp`` (an aware datetime) as YYMMDD.
    """
    prefix = str(make_uuid())[:-7]
    return f"{prefix}{throttle_digit:d}{timestamp:%y%m%d}"


def is_valid_crash_id(crash_id, strict=True):
    """True for a well-formed id; strict mode also wants throttle digit 0 or 1."""
    pattern = _STRICT if strict else _LOOSE
    return isinstance(crash_id, str) and pattern.match(crash_id) is not None


def date_from_crash_id(crash_id):
    """The storage date folder, ``YYYYMMDD``, from the id's last 6 digits."""
    return "20" + crash_id[-6:]
