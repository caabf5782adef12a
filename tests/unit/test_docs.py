"""
The documentation builds, its option reference is complete, and no page
copies it.

The docs are built once per run with ``sphinx-build -W`` (what ``make docs``
does), so a warning anywhere, such as an option declared without a doc, a
broken ``:envvar:`` or ``:doc:`` reference, fails the test suite too.
"""

import html
import os
import re
import subprocess
import sys
import textwrap

import attr
import docutils.core
import pytest
from docutils import nodes

from antenna_tw import config, storage, throttler

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCS = os.path.join(ROOT, "docs")
sys.path.insert(0, os.path.join(DOCS, "_ext"))

import antenna_options  # noqa: E402  (docs/_ext is not a package)

FIELDS = config.all_fields()
KEYS = [field.metadata["key"] for field in FIELDS]
OPTION_NAMES = set(KEYS) | {"ANTENNA_ENV"}


def sphinx_build(source, out):
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", os.path.join(out, "doctrees"), source, os.path.join(out, "html")],
        capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("docs"))
    return sphinx_build(DOCS, out), os.path.join(out, "html")


def test_docs_build_without_a_warning(built):
    result, _ = built
    assert result.returncode == 0, result.stderr


def squeezed(text):
    """Text with every space gone, so markup-made gaps and line breaks do not matter."""
    return "".join(text.replace("\u2019", "'").replace("\u00b6", "").split())


def page_text(path):
    with open(path, encoding="utf-8") as page:
        return squeezed(html.unescape(re.sub(r"<[^>]+>", "", page.read())))


def plain(rst):
    """
    A pattern for reStructuredText as the page shows it: roles and literals
    reduced to their text, a :doc: link to whatever title the page has.
    """
    pieces = re.split(r":doc:`[^`]*`", rst)
    return ".+?".join(
        re.escape(squeezed(re.sub(r":\w+:`([^`]*)`", r"\1", piece).replace("``", "")))
        for piece in pieces)


def test_the_reference_lists_every_option_with_its_doc_and_default(built):
    result, out = built
    assert result.returncode == 0, result.stderr
    with open(os.path.join(out, "configuration.html"), encoding="utf-8") as page:
        markup = page.read()
    text = page_text(os.path.join(out, "configuration.html"))
    for field in FIELDS:
        key = field.metadata["key"]
        assert f'id="envvar-{key}"' in markup, key
        assert field.metadata["doc"].strip(), f"{key} has no doc"
        entry = (f"{re.escape(key)}{plain(field.metadata['doc'])}"
                 f"Type:{plain(config.type_name(field))}"
                 f"Default:{plain(antenna_options.shown_default(field))}")
        assert re.search(entry, text), key


def test_the_reference_shows_every_alternate_name(built):
    result, out = built
    assert result.returncode == 0, result.stderr
    text = page_text(os.path.join(out, "configuration.html"))
    with_alternates = [field for field in FIELDS if field.metadata["alternates"]]
    assert with_alternates
    for field in with_alternates:
        key = field.metadata["key"]
        names = ",".join(re.escape(name) for name in field.metadata["alternates"])
        assert re.search(f"{re.escape(key)}.+?Alternatenames:{names}\\(", text), key


def test_the_alternate_names_shown_are_the_ones_load_config_reads():
    for field in FIELDS:
        lines = antenna_options.option_lines(field)
        shown = [line for line in lines if ":Alternate names:" in line]
        alternates = field.metadata["alternates"]
        assert bool(shown) == bool(alternates), field.metadata["key"]
        for name in alternates:
            assert f"``{name}``" in shown[0]
            assert name in config.known_names()


def test_the_migration_guide_names_what_is_read_and_what_is_not():
    """
    docs/migrating.rst names every alternate, and each collector-like name it
    shows is either read or one the start-up warning calls Antenna's.
    """
    with open(os.path.join(DOCS, "migrating.rst"), encoding="utf-8") as page:
        text = page.read()
    named = set(re.findall(r"``([A-Z][A-Z0-9_]+[A-Z0-9])(?:=[^`]*)?``", text))
    alternates = {name for field in FIELDS for name in field.metadata["alternates"]}
    assert alternates <= named, sorted(alternates - named)
    prefixes = tuple(config.collector_prefixes())
    unexplained = {name for name in named if name.startswith(prefixes)} \
        - config.known_names() - set(config.ANTENNA_ONLY_NAMES)
    assert unexplained == set()


def test_a_secret_default_is_never_shown():
    field = attr.fields(attr.make_class("Secretive", {"token": config.option(
        "TOKEN", "hunter2", secret=True, doc="A token.")}))[0]
    assert "hunter2" not in "\n".join(antenna_options.option_lines(field))


def test_defaults_read_as_an_operator_writes_them():
    shown = {field.metadata["key"]: antenna_options.shown_default(field) for field in FIELDS}
    assert shown["MAX_PAYLOAD_SIZE"] == "``25MiB``"
    assert shown["SPOOL_MAX_BYTES"] == "``10GiB``"
    assert shown["SPOOL_FSYNC"] == "``false``"
    assert shown["REQUEST_TIMEOUT"] == "``60``"
    assert shown["HOST_ID"] == "empty"


def test_an_option_without_a_doc_fails_the_build(tmp_path):
    """A settings class with an undocumented option, added from conf.py, breaks -W."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(DOCS, "_ext")!r})
        import attr
        from antenna_tw import config

        @attr.s(frozen=True)
        class Undocumented:
            '''Settings nobody described.'''
            thing = config.option("SOME_THING", "")

        config.SETTINGS_CLASSES = dict(config.SETTINGS_CLASSES, extra=Undocumented)
        extensions = ["antenna_options"]
    """))
    (source / "index.rst").write_text("Options\n=======\n\n.. antenna-options::\n")
    result = sphinx_build(str(source), str(tmp_path / "out"))
    assert result.returncode != 0
    assert "SOME_THING (Undocumented) has no doc=" in result.stderr


def test_every_option_has_a_doc_and_a_readable_type():
    for cls in config.SETTINGS_CLASSES.values():
        assert antenna_options.option_problems(cls) == []


def test_the_alternates_shown_are_the_ones_the_code_reads():
    documented = config.STORAGE_CLASS_ALIASES
    read = {name: target for name, target in storage.STORAGE_ALIASES.items()
            if name.startswith("antenna.")}
    assert set(documented) == set(read)
    for name, short in documented.items():
        assert storage.STORAGE_ALIASES[short] == read[name]
    for name, short in config.METRICS_CLASS_ALIASES.items():
        assert config.metrics_class_names(name.upper()) == [short]
    assert throttler.ANTENNA_ALIASES == {
        old.replace("<NAME>", ""): new.replace("<NAME>", "")
        for old, new in config.THROTTLER_ALIASES.items()}


# -- no page copies the reference -------------------------------------------
#
# The rule: a table, a definition list, a bullet or enumerated list or a
# field list is a copy of the option reference when 3 or more of its rows,
# terms or items *describe an option*: they begin with an option's name
# (``SPOOL_DIR``, :envvar:`SPOOL_DIR`, `SPOOL_DIR` in Markdown) and the rest
# of the row or item does not refer to that option's entry in the reference
# (:envvar:`SPOOL_DIR`, or in Markdown a link to docs/configuration.rst).
# That is the shape of every hand-written option table, with or without a
# default column: a list of options with their meanings goes stale just like
# one with their defaults. What does not match: prose that names options; a
# table keyed by something else (a heartbeat check, a rejection reason)
# whose cells mention options; a table that maps other names to options and
# links each one (a migration guide: "Antenna's X | :envvar:`X`"); an item
# that sets an option (``NAME=value``: the settings a benchmark ran with);
# literal blocks (an example env file). reStructuredText is parsed with
# docutils, so any table syntax (simple, grid, list-table, csv-table)
# counts; Markdown tables and lists are read line by line.

LEAD = re.compile(r"(?::[\w:]+:)?[\s`*|\-]*([A-Z][A-Z0-9_]*[A-Z0-9])\b(?!=)")
LIMIT = 3


def describes_option(lead, rest=None):
    """The option a row or item describes without referring to its entry, or None."""
    match = LEAD.match(lead)
    if not match or match.group(1) not in OPTION_NAMES:
        return None
    name = match.group(1)
    rest = lead[match.end():] if rest is None else rest
    if f":envvar:`{name}`" in rest or "configuration.rst" in rest:
        return None
    return name


def rst_groups(text):
    """(first cell or term, the rest) of each row or term, or (item, None); one list per group."""
    doctree = docutils.core.publish_doctree(text, settings_overrides={
        "report_level": 5, "halt_level": 5, "file_insertion_enabled": False,
        "raw_enabled": False, "warning_stream": False})
    for table in doctree.findall(nodes.table):
        yield [(row.children[0].astext(), " ".join(cell.astext() for cell in row.children[1:]))
               for row in table.findall(nodes.row) if row.children]
    for cls in (nodes.definition_list, nodes.field_list):
        for pairs in doctree.findall(cls):
            yield [(item.children[0].astext(),
                    " ".join(child.astext() for child in item.children[1:]))
                   for item in pairs.children]
    for cls in (nodes.bullet_list, nodes.enumerated_list):
        for itemlist in doctree.findall(cls):
            yield [(item.astext(), None) for item in itemlist.children]


def markdown_groups(text):
    """Like rst_groups for Markdown: runs of table rows, runs of list items."""
    rows, items = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            cells = line.strip().strip("|").split("|")
            rows.append((cells[0], "|".join(cells[1:])))
            continue
        if rows:
            yield rows
            rows = []
        item = re.match(r"\s*(?:[-*+]|\d+[.)])\s+(.*)", line)
        if item:
            items.append((item.group(1), None))
        elif items and line.strip() and line[0].isspace():
            items[-1] = (items[-1][0] + " " + line.strip(), None)
        elif line.strip() and items:
            yield items
            items = []
    if items:
        yield items


def copied_tables(text, markdown=False):
    """The option names of each group that looks like a copy of the reference."""
    groups = markdown_groups(text) if markdown else rst_groups(text)
    found = []
    for group in groups:
        names = [name for name in (describes_option(*entry) for entry in group) if name]
        if len(names) >= LIMIT:
            found.append(names)
    return found


def doc_pages():
    pages = [os.path.join(ROOT, "README.md")]
    for folder, dirs, files in os.walk(DOCS):
        dirs[:] = [name for name in dirs if not name.startswith("_")]
        pages += [os.path.join(folder, name) for name in files if name.endswith(".rst")]
    return sorted(pages)


@pytest.mark.parametrize("path", doc_pages(), ids=lambda path: os.path.relpath(path, ROOT))
def test_no_page_carries_a_copy_of_the_option_table(path):
    with open(path, encoding="utf-8") as page:
        text = page.read()
    assert copied_tables(text, markdown=path.endswith(".md")) == [], (
        f"{os.path.relpath(path, ROOT)} lists options that docs/configuration.rst already "
        "documents (generated from antenna_tw/config.py): refer to them as :envvar:`NAME`")


PASTED = {
    "simple table": """
        ======================  ==================  ==========================
        Option                  Default             Meaning
        ======================  ==================  ==========================
        ``BASEDIR``             ``.``               Where version.json lives.
        ``LOGGING_LEVEL``       ``INFO``            The level.
        ``HOST_ID``             hostname            Goes into every log line.
        ======================  ==================  ==========================
        """,
    "grid table": """
        +--------------------+-----------+
        | ``SPOOL_DIR``      | spool     |
        +--------------------+-----------+
        | ``SPOOL_FSYNC``    | ``false`` |
        +--------------------+-----------+
        | ``SPOOL_MAX_AGE``  | ``600``   |
        +--------------------+-----------+
        """,
    "definition list": """
        ``THROTTLE_RULES`` (default ``antenna_tw.throttler.ACCEPT_ALL``)
            the list of rules.
        ``PRODUCTS`` (default ``antenna_tw.throttler.ALL_PRODUCTS``)
            the product names.
        :envvar:`PRODUCT_PACKAGENAMES`
            the package names.
        """,
    "bullet list": """
        - ``CRASHSTORAGE_REGION``: ``us-west-2``
        - ``CRASHSTORAGE_BUCKET_NAME``: required
        - ``CRASHSTORAGE_ENDPOINT_URL``: empty
        """,
}


@pytest.mark.parametrize("kind", sorted(PASTED))
def test_a_pasted_option_table_is_found(kind):
    assert len(copied_tables(textwrap.dedent(PASTED[kind]))) == 1


def test_a_pasted_markdown_table_is_found():
    table = ("Intro.\n\n| option | default |\n|---|---|\n| `SPOOL_DIR` | `./antenna_spool` |\n"
             "| `SPOOL_FSYNC` | `false` |\n| `MAX_PARTS` | `256` |\n\nAfter.\n")
    listed = "- `SPOOL_DIR`: spool\n- `MAX_PARTS`: 256\n  more\n- `HOST_ID`: hostname\n"
    assert len(copied_tables(table, markdown=True)) == 1
    assert len(copied_tables(listed, markdown=True)) == 1


def test_prose_and_tables_keyed_by_something_else_are_not_copies():
    text = textwrap.dedent("""
        ``SPOOL_DIR`` holds the spool; ``SPOOL_FSYNC`` makes it durable and
        ``SPOOL_MAX_AGE`` bounds the wait.

        ==============  =================================================
        name            when
        ==============  =================================================
        ``spool``       less than ``SPOOL_MIN_FREE_BYTES`` free
        ``crashmover``  older than ``SPOOL_MAX_AGE``, see ``SPOOL_DIR``
        ==============  =================================================

        - put ``SPOOL_DIR`` on a durable volume;
        - alert on ``SPOOL_MAX_AGE``;
        - keep ``SPOOL_MAX_BYTES`` small.

        ::

            SPOOL_DIR=/var/spool
            SPOOL_FSYNC=true
            MAX_PARTS=12
        """)
    assert copied_tables(text) == []


def test_a_table_that_links_each_option_is_not_a_copy():
    text = textwrap.dedent("""
        .. list-table::

           * - Antenna's ``BASEDIR``
             - :envvar:`BASEDIR`
           * - ``LOGGING_LEVEL`` (default ``DEBUG``)
             - :envvar:`LOGGING_LEVEL`
           * - ``HOST_ID``
             - :envvar:`HOST_ID`
           * - ``DUMP_FIELD``
             - :envvar:`DUMP_FIELD`
        """)
    assert copied_tables(text) == []
    unlinked = text.replace(":envvar:`LOGGING_LEVEL`", "``INFO``").replace(
        ":envvar:`HOST_ID`", "hostname").replace(":envvar:`DUMP_FIELD`", "unused")
    assert len(copied_tables(unlinked)) == 1


def test_a_list_of_settings_used_is_not_a_copy():
    text = "* ``LOGGING_LEVEL=INFO``;\n* ``SPOOL_FSYNC=false``;\n* ``METRICS_CLASS=none``.\n"
    assert copied_tables(text) == []
