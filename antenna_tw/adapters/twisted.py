"""
What the collector relies on in Twisted beyond its public API.

Each function names the private attribute it reads or sets and why; the
tests in ``tests/unit/test_adapters_twisted.py`` pin that behaviour.
"""

from __future__ import annotations

# -- twisted.application: services -------------------------------------------


# -- twisted.web: the HTTP server (intake) -----------------------------------


# -- twisted.web: the HTTP client (S3) ---------------------------------------


# -- twisted.internet: transports and ports (workers) ------------------------
