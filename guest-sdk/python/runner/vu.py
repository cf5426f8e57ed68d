"""This virtual user: identity, environment, clock and sleep."""

from wit_world.imports import vu as _wit


def id():  # noqa: A001 - the VU's id, as the other SDKs name it
    """This VU's number, unique within the run (0-based)."""
    return _wit.id()


def class_name():
    """The name of this VU's class."""
    return _wit.class_name()


def iteration():
    """The number of this VU's current iteration (0-based)."""
    return _wit.iteration()


def env(key, default=None):
    """A value given with ``runner run -e KEY=VALUE``, or ``default``."""
    value = _wit.env(key)
    return default if value is None else value


def now():
    """Seconds since the run started (monotonic)."""
    return _wit.now() / 1e9


def unix_time():
    """Wall-clock seconds since the Unix epoch, from the runner's clock."""
    return _wit.unix_time() / 1e9


def sleep(seconds):
    """Suspends this VU only; the others keep running. Prefer it to
    ``time.sleep``, whose time counts against the VU's CPU limit."""
    if seconds > 0:
        _wit.sleep(int(seconds * 1_000_000_000))
