"""Write load-test scenarios for `runner` in Python, as you would a locustfile.

A scenario is a module that imports this package and defines what each
virtual user (VU) does in one iteration::

    from runner import http, check, sleep, vu

    def default():
        r = http.get(vu.env("BASE_URL", "http://127.0.0.1:8080") + "/")
        check("status is 200", r.status == 200)
        sleep(0.1)

Build it into a component with componentize-py (``runner new --lang python``
writes a project that does) and run it with ``runner run app.wasm``. Each VU
runs in its own sandbox; an uncaught exception fails only that iteration,
its traceback in the runner's log.

Several VU classes, a run length and thresholds are declared with
:func:`options` (see :class:`Options`); a class named ``browse`` runs the
function registered with ``@vu_class("browse")``, or the module's function
named ``browse``.
"""

import gc
import sys
import traceback

import componentize_py_types
import wit_world
from wit_world.exports import scenario as _wit

from . import http, log, metrics, mqtt, nats, vu
from ._groups import group
from ._options import Class, Options, duration_ns
from .metrics import check
from .vu import sleep

__all__ = [
    "Class", "Options", "Scenario", "check", "group", "http", "log", "metrics",
    "mqtt", "nats", "options", "sleep", "vu", "vu_class",
]

_classes = {}
_options = []


def vu_class(name):
    """Registers the decorated function as the iteration of VU class ``name``."""
    def register(f):
        _classes[name] = f
        return f
    return register


def options(f):
    """Registers the decorated function as the source of the scenario's
    :class:`Options` (called once per VU instance)."""
    _options.append(f)
    return f


def _entry(name):
    if name in _classes:
        return _classes[name]
    # The scenario's own module: the one that imported our Scenario.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "runner").split(".")[0] == "runner":
            continue
        if getattr(module, "Scenario", None) is Scenario:
            f = getattr(module, name, None)
            if callable(f):
                _classes[name] = f
                return f
    return None


class Scenario(wit_world.exports.Scenario):
    """The component's export: the runner calls it. Import it into your
    module (``from runner import *`` does) so componentize-py finds it."""

    def options(self) -> _wit.ScenarioOptions:
        declared = _options[0]() if _options else Options()
        return declared._to_wit()

    def run(self, class_: str) -> None:
        f = _entry(class_)
        if f is None:
            raise componentize_py_types.Err(
                f"this scenario has no VU class {class_!r}: define a function "
                f"named {class_!r} or decorate one with @vu_class({class_!r})"
            )
        try:
            f()
        except componentize_py_types.Err:
            raise
        except Exception as e:  # noqa: BLE001 - any error fails the iteration
            text = "".join(traceback.format_exception(e)).rstrip()
            raise componentize_py_types.Err(text)

# Everything made so far (the interpreter's start-up, this package) was
# made at build time, in the snapshot every VU shares copy-on-write. A
# cyclic collection would write to every one of those objects and so copy
# their pages into each VU: keep them out of it.
gc.freeze()
