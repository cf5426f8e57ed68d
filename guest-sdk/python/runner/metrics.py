"""Checks and custom metrics; each may carry tags (a dict)."""

from wit_world.imports import metrics as _wit

from . import _groups


def _tags(tags):
    pairs = [(str(k), str(v)) for k, v in (tags or {}).items()]
    group = _groups.current()
    if group is not None and not any(k == "group" for k, _ in pairs):
        pairs.append(("group", group))
    return pairs


def check(name, condition, tags=None):
    """Records a named pass/fail check; returns ``condition`` as a bool."""
    return _wit.check(str(name), bool(condition), _tags(tags))


def counter(name, delta=1, tags=None):
    """Adds ``delta`` to a counter."""
    _wit.counter(str(name), int(delta), _tags(tags))


def gauge(name, value, tags=None):
    """Sets a gauge (the summary keeps the last and the extremes)."""
    _wit.gauge(str(name), float(value), _tags(tags))


def timing(name, seconds, tags=None):
    """Records a duration in seconds into a latency-style histogram."""
    _wit.timing(str(name), max(0, int(seconds * 1_000_000_000)), _tags(tags))


def histogram(name, value, tags=None):
    """Records a non-negative integer into a histogram."""
    _wit.histogram(str(name), max(0, int(value)), _tags(tags))
