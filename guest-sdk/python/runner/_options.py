"""A scenario's own load model: classes, run length, thresholds."""

from wit_world.exports import scenario as _wit

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def duration_ns(value):
    """Nanoseconds of ``value``: seconds as a number, or text like ``"30s"``,
    ``"500ms"``, ``"2m"``, ``"1m30s"``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return int(value * 1_000_000_000)
    text = str(value).strip()
    total, number = 0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = next((u for u in sorted(_UNITS, key=len, reverse=True)
                     if text.startswith(u, i)), None)
        if unit is None or not number:
            raise ValueError(f"{value!r} is not a duration (examples: 30s, 500ms, 2m)")
        total += int(float(number) * _UNITS[unit])
        number, i = "", i + len(unit)
    if number:
        raise ValueError(f"{value!r} needs a unit (examples: 30s, 500ms, 2m)")
    return total


class Class:
    """A class of VUs sharing an entry point (the function named ``name``)
    and a load model. Give ``rate`` for the open model (iterations started
    per second); ``stages`` as ``[("30s", 20), ...]`` ramps VUs (or the
    rate)."""

    def __init__(self, name, vus=1, rate=None, max_vus=None, stages=(),
                 start_rate=None, poisson_start=False, think_time=None,
                 pacing=None, iterations=None, env=None):
        self.name, self.vus, self.rate, self.max_vus = name, vus, rate, max_vus
        self.stages = list(stages)
        self.start_rate, self.poisson_start = start_rate, poisson_start
        self.think_time, self.pacing, self.iterations = think_time, pacing, iterations
        self.env = dict(env or {})

    def _to_wit(self):
        return _wit.VuClass(
            name=self.name,
            vus=int(self.vus),
            rate=None if self.rate is None else float(self.rate),
            max_vus=self.max_vus,
            stages=[_wit.Stage(duration=duration_ns(d), target=float(t)) for d, t in self.stages],
            start_rate=None if self.start_rate is None else float(self.start_rate),
            poisson_start=bool(self.poisson_start),
            think_time=duration_ns(self.think_time),
            pacing=duration_ns(self.pacing),
            iterations=self.iterations,
            env=[(str(k), str(v)) for k, v in self.env.items()],
        )


class Options:
    """What ``@options`` returns: VU classes (default: one class named
    ``default``), the run's length and thresholds such as
    ``"http_req_duration p(95)<200ms"``. Command-line flags override them."""

    def __init__(self, classes=(), duration=None, thresholds=()):
        self.classes, self.duration = list(classes), duration
        self.thresholds = list(thresholds)

    def _to_wit(self):
        return _wit.ScenarioOptions(
            classes=[c._to_wit() for c in self.classes],
            duration=duration_ns(self.duration),
            thresholds=[str(t) for t in self.thresholds],
        )
