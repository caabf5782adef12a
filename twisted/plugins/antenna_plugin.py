"""Registers ``twistd antenna``: the antenna-tw crash report collector."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class _AntennaServiceMaker:
    tapname = "antenna"
    description = "Breakpad/Crashpad crash report collector"

    @property
    def options(self):
        # Imported lazily so `twistd --help` stays quick.
        from antenna_tw.tap import Options

        return Options

    def makeService(self, options):
        from antenna_tw.tap import makeService

        return makeService(options)


serviceMaker = _AntennaServiceMaker()
