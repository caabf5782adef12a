"""``twistd antenna``: command-line options and the service maker."""

from __future__ import annotations

import sys

from twisted.python import usage

from antenna_tw.app import StartupError, build_collector
from antenna_tw.config import ConfigError, load_config
from antenna_tw.logs import make_observer
from antenna_tw.service import CollectorService


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Breakpad/Crashpad crash report collector. Settings come from the "
        "environment and from the env file named by --env or ANTENNA_ENV."
    )
    optParameters = [
        ["port", "p", "tcp:8000:interface=127.0.0.1",
         "strports description of the listening port"],
        ["env", "e", None, "env file with KEY=value settings (the environment wins)"],
    ]


def makeService(options, environ=None, stream=None):
    """Build the collector; a bad option or unusable storage exits with one line."""
    stream = stream or sys.stdout  # captured before twistd redirects stdout
    try:
        config = load_config(environ, options["env"])
        from twisted.internet import reactor

        collector = build_collector(config, reactor)
        entries = collector.prepare()
    except (ConfigError, StartupError) as error:
        raise SystemExit(f"antenna: cannot start: {error}") from None
    observer = make_observer(stream, config.app.logging_level, config.app.host_id)
    return CollectorService(collector, options["port"], entries, observer)
