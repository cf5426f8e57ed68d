"""An idle Python VU (it sleeps 1 s per iteration): what a VU of the
interpreter itself costs. Used by the density benchmark."""

from runner import Scenario, sleep  # noqa: F401 - Scenario is the export


def default():
    sleep(1)
