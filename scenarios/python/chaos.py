"""VU classes that misbehave beside steady ones, in Python: a VU that
spins, one that raises, one that eats memory; each ends only its own
iteration. Class counts from -e: STEADY (default 2), SPIN, FAIL, HOG,
RANDOM (default 0 each); steady VUs GET BASE_URL every THINK_MS (default
20) ms; RANDOM VUs (class `paths`) GET BASE_URL/VU/N with N from Python's `random` (for
tests that --seed replays it).
"""

import random

from runner import Class, Options, Scenario, check, group, http, metrics, options, sleep, vu  # noqa: F401


def count(key, default=0):
    return int(vu.env(key, str(default)))


@options
def declared():
    return Options(classes=[
        Class("steady", vus=count("STEADY", 2)),
        Class("spin", vus=count("SPIN")),
        Class("fail", vus=count("FAIL")),
        Class("hog", vus=count("HOG")),
        Class("paths", vus=count("RANDOM")),
    ])


def steady():
    base = vu.env("BASE_URL", "http://127.0.0.1:8080")
    with group("home"):
        r = http.get(base + "/", discard_body=True)
        check("status is 200", r.status == 200)
    metrics.counter("steady_iterations")
    sleep(int(vu.env("THINK_MS", "20")) / 1000)


def spin():
    n = 0
    while True:
        n += 1


def fail():
    sleep(0.05)
    raise ValueError("chaos: failing on purpose")


def hog():
    hoard = []
    while True:
        hoard.append(bytearray(1 << 20))


def paths():
    base = vu.env("BASE_URL", "http://127.0.0.1:8080")
    n = random.randrange(1_000_000)
    r = http.get(f"{base}/{vu.id()}/{n}", name="random", discard_body=True)
    check("random: status is 200", r.status == 200)
