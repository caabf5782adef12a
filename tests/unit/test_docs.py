"""docs/configuration.rst names every option the code reads."""

import os

import attr
import pytest

from antenna_tw.config import SETTINGS_CLASSES

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.rst")
KEYS = [field.metadata["key"] for cls in SETTINGS_CLASSES.values() for field in attr.fields(cls)]


@pytest.mark.parametrize("key", KEYS)
def test_option_documented(key):
    with open(DOCS, encoding="utf-8") as docs:
        assert f"``{key}``" in docs.read()
