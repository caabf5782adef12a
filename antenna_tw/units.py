"""Parsers for option values that operators write by hand."""

from __future__ import annotations

_BYTE_SUFFIXES = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2,
                  "mb": 1024**2, "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}

_SECOND_SUFFIXES = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def _split_number(text: str) -> tuple[str, str]:
    text = text.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    return digits, text[len(digits):].strip()


def parse_bytes(value: int | str) -> int:
    """``26214400``, ``25m``, ``25MiB`` -> 26214400; never negative."""
    number: float
    if isinstance(value, int):
        number, suffix = value, ""
    else:
        digits, suffix = _split_number(value)
        if suffix not in _BYTE_SUFFIXES or not digits:
            raise ValueError("expected a size such as 26214400, 25m or 25MiB")
        number = float(digits)
    size = int(number * _BYTE_SUFFIXES[suffix])
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def parse_seconds(value: float | str) -> float:
    """``60``, ``1.5``, ``500ms``, ``10m`` -> seconds as a float; never negative."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        digits, suffix = _split_number(value)
        if suffix not in _SECOND_SUFFIXES or not digits:
            raise ValueError("expected a duration such as 60, 1.5, 500ms or 10m")
        seconds = float(digits) * _SECOND_SUFFIXES[suffix]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_bool(value: bool | str) -> bool:
    """true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on", "t", "y"):
        return True
    if text in ("0", "false", "no", "off", "f", "n", ""):
        return False
    raise ValueError("expected true or false")
