"""Sphinx configuration: ``make docs`` builds HTML into docs/_build with -W."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # antenna_tw, for the generated pages
sys.path.insert(0, os.path.join(HERE, "_ext"))

from antenna_tw import __version__  # noqa: E402

project = "antenna-tw"
copyright = "antenna-tw contributors"
version = release = __version__

# antenna_options renders the option reference from antenna_tw/config.py,
# antenna_metrics the metrics registry from antenna_tw/metricnames.py.
extensions = ["antenna_options", "antenna_metrics"]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
