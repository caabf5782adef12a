"""
The option reference, generated from antenna_tw/config.py.

``.. antenna-options::`` renders one section per settings class (its
docstring as the intro) and, for each option, an ``.. envvar::`` entry with
its doc, type, default, the other names it is read from and the other
values it accepts, so pages can refer
to an option as :envvar:`NAME`. An option without a doc, or whose parser
has no readable type, is reported as a build error: ``sphinx-build -W``
then fails, and the reference never has a hole.
"""

from __future__ import annotations

import inspect

import attr
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.parsing import nested_parse_to_nodes

from antenna_tw import config

log = logging.getLogger(__name__)

UNIT = 1024
SIZE_SUFFIXES = [("GiB", UNIT**3), ("MiB", UNIT**2), ("KiB", UNIT)]


def shown_default(field):
    """The default as an operator would write it; a secret's only when empty."""
    value = field.default
    parser = field.metadata["parser"]
    if field.metadata["secret"] and value:
        return "set (not shown)"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif parser is config.parse_bytes:
        text = next((f"{value // size}{suffix}" for suffix, size in SIZE_SUFFIXES
                     if value and value % size == 0), str(value))
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"``{text}``"


def option_problems(cls):
    """What keeps an option of ``cls`` out of the reference, one line each."""
    problems = []
    for field in config.fields_of(cls):
        key = field.metadata["key"]
        if not field.metadata["doc"].strip():
            problems.append(f"{key} ({cls.__name__}) has no doc=")
        try:
            config.type_name(field)
        except KeyError:
            problems.append(f"{key} ({cls.__name__}): its parser has no entry in "
                            "config.PARSER_TYPES and no type_name=")
    return problems


def option_lines(field):
    """The reStructuredText of one option."""
    metadata = field.metadata
    lines = [f".. envvar:: {metadata['key']}", ""]
    lines += [f"   {line}" for line in metadata["doc"].strip().splitlines()]
    try:
        kind = config.type_name(field)
    except KeyError:  # reported by option_problems
        kind = "unknown"
    lines += ["", f"   :Type: {kind}", f"   :Default: {shown_default(field)}"]
    if metadata["secret"]:
        lines.append("   :Secret: yes; shown as ``*****`` in the start-up log and never in an error")
    alternates = metadata["alternates"]
    if alternates:
        shown = ", ".join(f"``{name}``" for name in alternates)
        lines.append(f"   :Alternate names: {shown} (read in this order when "
                     f"``{metadata['key']}`` is not set)")
    aliases = metadata["aliases"]
    if aliases:
        shown = "; ".join(f"``{name}`` (read as ``{meaning}``)"
                          for name, meaning in aliases.items())
        lines.append(f"   :Also accepted: {shown}")
    return lines + [""]


def settings_lines(cls, title):
    """One section: the class docstring, then each of its options."""
    lines = [title, "-" * len(title), "", inspect.cleandoc(cls.__doc__ or ""), ""]
    for field in config.fields_of(cls):
        lines += option_lines(field)
    return lines


# Section titles; a settings class added to config.SETTINGS_CLASSES without
# one is titled by its name.
TITLES = {
    "app": "Process",
    "intake": "Intake (/submit)",
    "throttle": "Throttling",
    "storage": "Storage",
    "spool": "Spool and crash movers",
    "console": "Console",
}


def reference_lines(classes=None):
    """The whole reference, as lines of reStructuredText."""
    classes = config.SETTINGS_CLASSES if classes is None else classes
    lines = []
    for name, cls in classes.items():
        lines += settings_lines(cls, TITLES.get(name, name.capitalize()))
    return lines


class AntennaOptions(SphinxDirective):
    """``.. antenna-options::``: every option of antenna_tw.config, by settings class."""

    has_content = False

    def run(self):
        for cls in config.SETTINGS_CLASSES.values():
            for problem in option_problems(cls):
                log.error("option reference: %s", problem, location=self.get_location())
        self.env.note_dependency(config.__file__)
        return nested_parse_to_nodes(self.state, "\n".join(reference_lines()),
                                     source="antenna_tw/config.py")


def setup(app):
    app.add_directive("antenna-options", AntennaOptions)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
