import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antenna_tw.crashid import create_crash_id, date_digits, date_from_crash_id, is_valid_crash_id

MOMENT = datetime(2026, 11, 27, 23, 59, 59, tzinfo=timezone.utc)


@pytest.mark.parametrize("digit", [0, 1, 3])
def test_minted_id_carries_digit_and_date(digit):
    fixed = uuid.UUID("0875e3d4-c33b-4e95-beab-c2b5abcdef12")
    crash_id = create_crash_id(MOMENT, digit, lambda: fixed)
    assert crash_id == f"0875e3d4-c33b-4e95-beab-c2b5a{digit}261127"
    assert date_from_crash_id(crash_id) == "20261127"
    assert is_valid_crash_id(crash_id) == (digit in (0, 1))
    assert is_valid_crash_id(crash_id, strict=False)


def test_random_ids_differ_and_keep_uuid4_version():
    ids = {create_crash_id(MOMENT, 0) for _ in range(100)}
    assert len(ids) == 100
    assert all(crash_id[14] == "4" and is_valid_crash_id(crash_id) for crash_id in ids)


def test_random_ids_are_uuid4_strings_up_to_the_digit():
    ids = [create_crash_id(MOMENT, 0) for _ in range(400)]
    for crash_id in ids:
        parsed = uuid.UUID(crash_id)
        assert str(parsed) == crash_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert crash_id.endswith("0261127")
    # All four variant characters turn up, and every random position varies.
    assert {crash_id[19] for crash_id in ids} == set("89ab")
    random_positions = [n for n in range(29) if n not in (8, 13, 14, 18, 19, 23)]
    for n in random_positions:
        assert len({crash_id[n] for crash_id in ids}) > 8, n


@given(st.datetimes(timezones=st.just(timezone.utc)))
def test_date_digits_are_strftime_yymmdd(moment):
    assert date_digits(moment) == moment.strftime("%y%m%d")
    assert create_crash_id(moment, 1).endswith("1" + moment.strftime("%y%m%d"))


@pytest.mark.parametrize("bad", [
    "", "not-a-crash-id", "0875E3D4-C33B-4E95-BEAB-C2B5A0261127",
    "0875e3d4c33b4e95beabc2b5a0261127", "0875e3d4-c33b-4e95-beab-c2b5a2261127",
    "0875e3d4-c33b-4e95-beab-c2b5a026112", "0875e3d4-c33b-4e95-beab-c2b5a02611270",
    None, 12,
])
def test_strict_validation_refuses(bad):
    assert not is_valid_crash_id(bad)
