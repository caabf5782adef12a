"""
The metrics table, generated from the registry in antenna_tw/metricnames.py.

``.. antenna-metrics::`` renders one row per registered metric: its name
(without ``STATSD_NAMESPACE``), type and statsd packet type, tag names and
meaning. A metric without a meaning is reported as a build error, so
``sphinx-build -W`` fails rather than publish a blank row.
"""

from __future__ import annotations

from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.parsing import nested_parse_to_nodes

from antenna_tw import metricnames

log = logging.getLogger(__name__)

# What each type looks like in a statsd packet (``name:value|<kind>``).
PACKET_KINDS = {"incr": "c", "gauge": "g", "timing": "ms", "histogram": "h"}


def metric_problems(specs):
    """What keeps a metric out of the table, one line each."""
    return [f"{spec.name} has no doc" for spec in specs if not spec.doc.strip()]


def table_lines(specs=None):
    """The table, as lines of reStructuredText (a list-table)."""
    specs = metricnames.METRICS if specs is None else specs
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 12 10 48", "",
             "   * - Name", "     - Type", "     - Tags", "     - Meaning"]
    for spec in specs:
        tags = ", ".join(f"``{tag}``" for tag in spec.tags) or "none"
        lines += [f"   * - ``{spec.name}``",
                  f"     - {spec.type} (``{PACKET_KINDS[spec.type]}``)",
                  f"     - {tags}",
                  f"     - {' '.join(spec.doc.split())}"]
    return lines + [""]


class AntennaMetrics(SphinxDirective):
    """``.. antenna-metrics::``: every metric in antenna_tw.metricnames."""

    has_content = False

    def run(self):
        for problem in metric_problems(metricnames.METRICS):
            log.error("metrics table: %s", problem, location=self.get_location())
        self.env.note_dependency(metricnames.__file__)
        return nested_parse_to_nodes(self.state, "\n".join(table_lines()),
                                     source="antenna_tw/metricnames.py")


def setup(app):
    app.add_directive("antenna-metrics", AntennaMetrics)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
