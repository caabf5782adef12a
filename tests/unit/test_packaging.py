"""setup.cfg's package search finds every package of antenna_tw and the twistd plugin."""

import configparser
import pathlib

import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_package_is_found():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options"]["packages"].strip() == "find_namespace:"
    include = setup["options.packages.find"]["include"].split()
    found = set(setuptools.find_namespace_packages(where=str(ROOT), include=include))
    sources = {path.parent.relative_to(ROOT).as_posix().replace("/", ".")
               for path in (ROOT / "antenna_tw").rglob("*.py")}
    assert sources | {"twisted.plugins"} <= found
    assert not {name for name in found if name.startswith("tests")}
