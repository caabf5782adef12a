"""antenna-tw: a Breakpad/Crashpad crash report collector built on Twisted."""

__version__ = "0.1.0"
