"""Lines in the runner's log, tagged with the VU id (``print`` works too)."""

from wit_world.imports import types as _types
from wit_world.imports import vu as _wit


def trace(message):
    """A trace line."""
    _wit.log(_types.Level.TRACE, str(message))


def debug(message):
    """A debug line."""
    _wit.log(_types.Level.DEBUG, str(message))


def info(message):
    """An info line."""
    _wit.log(_types.Level.INFO, str(message))


def warn(message):
    """A warning."""
    _wit.log(_types.Level.WARN, str(message))


def error(message):
    """An error line."""
    _wit.log(_types.Level.ERROR, str(message))
