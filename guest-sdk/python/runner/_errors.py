"""Host errors as Python exceptions."""

import componentize_py_types


class RunnerError(Exception):
    """A failed request or messaging call. ``kind`` is the summary's name
    for it (``connection-refused``, ``timeout``, ``denied``...)."""

    def __init__(self, kind, message=""):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind, self.message = kind, message


def _kind(name):
    # Error_ConnectionRefused -> connection-refused
    base = name.split("_", 1)[-1]
    return "".join("-" + c.lower() if c.isupper() else c for c in base).lstrip("-")


def call(f, *args):
    """Calls a host function, turning its ``Err`` into a :class:`RunnerError`."""
    try:
        return f(*args)
    except componentize_py_types.Err as e:
        v = e.value
        raise RunnerError(_kind(type(v).__name__), str(getattr(v, "value", "") or "")) from None
