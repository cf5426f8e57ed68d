"""Groups: ``with group("checkout"):`` tags what happens inside."""

import contextlib

from . import vu as _vu

_stack = []


def current():
    """The current group's full name (``outer::inner``), or None."""
    return _stack[-1] if _stack else None


@contextlib.contextmanager
def group(name):
    """Tags the requests, checks and custom metrics inside with
    ``group=NAME`` and records the group's time as ``group_duration``."""
    from . import metrics

    full = f"{_stack[-1]}::{name}" if _stack else name
    _stack.append(full)
    started = _vu.now()
    try:
        yield
    finally:
        _stack.pop()
        metrics.timing("group_duration", _vu.now() - started, tags={"group": full})
