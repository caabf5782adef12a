"""
The metrics registry (antenna_tw.metricnames) is the one list of metrics:
every ``incr``/``gauge``/``timing``/``histogram`` call in antenna_tw/ names a
registered metric with its registered type, every registered metric is
emitted somewhere, and a checked Metrics refuses anything else.
"""

import ast
import os

import pytest

import antenna_tw
from antenna_tw import metricnames
from antenna_tw.metricnames import REGISTRY, MetricSpec, UnregisteredMetric
from antenna_tw.metrics import Metrics

PACKAGE = os.path.dirname(os.path.abspath(antenna_tw.__file__))
METHODS = set(metricnames.TYPES)


def metric_calls(source, filename="<source>"):
    """``(method, first argument node, line)`` of each ``<x>.incr(...)``-like call."""
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in METHODS and node.args):
            yield node.func.attr, node.args[0], node.lineno


def registered_name(arg):
    """The registered name an argument stands for (a registry constant or literal), else None."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value if arg.value in REGISTRY else None
    if (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name)
            and arg.value.id == "metricnames"):
        value = getattr(metricnames, arg.attr, None)
        return value if value in REGISTRY else None
    return None


def problems_in(source, filename="<source>"):
    """What is wrong with the metric calls of one module, and the names it emits."""
    problems, emitted = [], set()
    for method, arg, line in metric_calls(source, filename):
        name = registered_name(arg)
        where = f"{filename}:{line}"
        if name is None:
            problems.append(f"{where}: {method}({ast.unparse(arg)}) is not a registered metric")
        elif REGISTRY[name].type != method:
            problems.append(
                f"{where}: {name} is registered as {REGISTRY[name].type}, called as {method}")
        else:
            emitted.add(name)
    return problems, emitted


def package_sources():
    for directory, _, files in os.walk(PACKAGE):
        for filename in sorted(files):
            if filename.endswith(".py"):
                path = os.path.join(directory, filename)
                with open(path, encoding="utf-8") as source_file:
                    yield os.path.relpath(path, os.path.dirname(PACKAGE)), source_file.read()


def test_every_metric_call_in_the_package_names_a_registered_metric():
    problems, emitted = [], set()
    for filename, source in package_sources():
        found, names = problems_in(source, filename)
        problems += found
        emitted |= names
    assert problems == []
    assert sorted(set(REGISTRY) - emitted) == [], "registered but never emitted"


@pytest.mark.parametrize("source,complaint", [
    ('self.metrics.incr("breakpad_resource.nope")',
     "incr('breakpad_resource.nope') is not a registered metric"),
    ("self.metrics.incr(metricnames.NOPE)", "incr(metricnames.NOPE) is not a registered metric"),
    ("self.metrics.incr(name)", "incr(name) is not a registered metric"),
    ('self.metrics.incr(f"health.{page}.count")', "is not a registered metric"),
    ("self.metrics.timing(metricnames.INCOMING_CRASH, 1.0)",
     "breakpad_resource.incoming_crash is registered as incr, called as timing"),
])
def test_the_static_check_catches_unregistered_calls(source, complaint):
    problems, _ = problems_in(source)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_the_static_check_accepts_constants_and_registered_literals():
    source = ("self.metrics.incr(metricnames.INCOMING_CRASH)\n"
              'm.gauge("breakpad_resource.save_queue_size", 3)\n')
    assert problems_in(source) == ([], {metricnames.INCOMING_CRASH, metricnames.SAVE_QUEUE_SIZE})


def test_registry_entries_are_well_formed():
    for spec in metricnames.METRICS:
        assert isinstance(spec, MetricSpec)
        assert spec.doc.endswith(".") and not spec.name.startswith("antenna")
        assert all(tag and ":" not in tag for tag in spec.tags)
    with pytest.raises(ValueError):
        MetricSpec("x", "counter")


class Recording:
    """A markus-style backend that keeps every record."""

    def __init__(self):
        self.records = []

    def emit_to_backend(self, record):
        self.records.append(record)


def test_a_checked_metrics_passes_registered_metrics_through():
    backend = Recording()
    metrics = Metrics([backend], checked=True)
    metrics.incr(metricnames.THROTTLE, tags=["result:accept"])
    metrics.timing(metricnames.ON_POST_TIME, 2.5)
    metrics.gauge(metricnames.SAVE_QUEUE_SIZE, 0)
    assert [(r.stat_type, r.key, r.value, r.tags) for r in backend.records] == [
        ("incr", metricnames.THROTTLE, 1, ["result:accept"]),
        ("timing", metricnames.ON_POST_TIME, 2.5, []),
        ("gauge", metricnames.SAVE_QUEUE_SIZE, 0, []),
    ]


@pytest.mark.parametrize("emit,message", [
    (lambda m: m.incr("breakpad_resource.nope"), "'breakpad_resource.nope' is not in"),
    (lambda m: m.gauge(metricnames.INCOMING_CRASH, 1),
     "is registered as incr, emitted as gauge"),
    (lambda m: m.incr(metricnames.THROTTLE), "has tags ['result'], emitted with []"),
    (lambda m: m.incr(metricnames.THROTTLE, tags=["result:accept", "host:x"]),
     "emitted with ['host', 'result']"),
    (lambda m: m.incr(metricnames.INCOMING_CRASH, tags=["rule:x"]), "emitted with ['rule']"),
])
def test_a_checked_metrics_refuses_what_is_not_registered(emit, message):
    backend = Recording()
    with pytest.raises(UnregisteredMetric) as error:
        emit(Metrics([backend], checked=True))
    assert message in str(error.value)
    assert backend.records == []


def test_an_unchecked_metrics_sends_any_name():
    backend = Recording()
    Metrics([backend]).incr("anything.at_all")
    assert [r.key for r in backend.records] == ["anything.at_all"]


def docs_extension():
    """docs/_ext/antenna_metrics.py, imported the way docs/conf.py does."""
    pytest.importorskip("sphinx")
    import importlib.util

    path = os.path.join(os.path.dirname(PACKAGE), "docs", "_ext", "antenna_metrics.py")
    spec = importlib.util.spec_from_file_location("antenna_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_has_a_row_for_every_registered_metric():
    extension = docs_extension()
    rows = [line for line in extension.table_lines() if line.startswith("   * - ``")]
    assert rows == [f"   * - ``{spec.name}``" for spec in metricnames.METRICS]
    assert extension.metric_problems(metricnames.METRICS) == []
    assert extension.metric_problems([MetricSpec("x.y", "incr")]) == ["x.y has no doc"]
