"""A scenario in Python (what `runner new --lang python` writes): each VU
requests BASE_URL, checks the answer, then thinks for THINK_MS
milliseconds (default 100). Edit `default`, or declare VU classes with
`@options` (see the runner package's docs).
"""

from runner import Scenario, check, http, sleep, vu  # noqa: F401 - Scenario is the export


def default():
    base = vu.env("BASE_URL", "http://127.0.0.1:8080")
    r = http.get(base + "/", discard_body=True)
    check("status is 200", r.status == 200)
    sleep(int(vu.env("THINK_MS", "100")) / 1000)
