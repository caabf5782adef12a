"""Registers ``twistd antenna``: the antenna-tw crash report collector."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.python.usage import Options


@implementer(IServiceMaker, IPlugin)
class _AntennaServiceMaker:
    tapname = "antenna"
    description = "Breakpad/Crashpad crash report collector"

    @property
    def options(self) -> type[Options]:
        # Imported lazily so `twistd --help` stays quick.
        from antenna_tw.tap import Options

        return Options

    def makeService(self, options: Options) -> IService:
        from antenna_tw.tap import makeService

        return makeService(options)


serviceMaker = _AntennaServiceMaker()
