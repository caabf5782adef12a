"""The crash console: pages and a JSON API over what the collector received (docs/console.rst)."""
