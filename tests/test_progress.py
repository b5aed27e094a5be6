"""The progress of a bulk fetch: the ETA comes from the pace, piped output gets a line every few seconds."""

from __future__ import annotations

import io
import subprocess
import sys

from amptools.bulk import Outcome, _Progress
from amptools.ratelimit import ClientPace, RateLimiter


class Clock:
    """A clock the test moves by hand (the limiter and the reporter both read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ok(n: int) -> Outcome:
    return Outcome(f"u{n}", "ok", 200, 1, None, False)


def test_the_eta_comes_from_the_pace_not_from_the_opening_burst():
    clock = Clock()
    limiter = RateLimiter(120, 60.0, clock=clock, sleep=lambda _: None)  # at most 2 requests a second

    def per_second() -> float:  # the pace the limiter allows now (lower in a slow start)
        return limiter.pace / limiter.period

    progress = _Progress(100, bar=False, hook=None, limiter=limiter, clock=clock)
    progress.start([])
    first_burst = ClientPace.burst(2.0, 60.0)  # a fresh run's first requests go at once
    assert progress.eta() == (100 - first_burst) / per_second()  # before anything came back
    # The burst: six answers in a tenth of a second, a rate of 60 a second.
    for n in range(6):
        clock.now += 0.1 / 6
        progress.add(ok(n))
    assert progress.eta() == 94 / per_second()  # 94 left at the pace, not 1.6 s at the burst's rate
    assert progress.eta() >= 47.0
    clock.now += 10
    for n in range(6, 26):  # then 20 in 10 s: the pace, or slower
        progress.add(ok(n))
    assert progress.eta() >= 74 / 2.0
    assert progress.eta() == max(74 / per_second(), 74 * (clock.now - 1000.0) / 26)
    # Asking twice per id (a split query) takes twice as long at the same pace.
    double = _Progress(100, bar=False, hook=None, limiter=limiter, clock=clock, requests_per_id=2)
    double.start([])
    assert double.eta() == (200 - first_burst) / per_second()


def test_a_run_slower_than_its_pace_gets_the_eta_of_its_measured_rate():
    clock = Clock()
    limiter = RateLimiter(100_000, 60.0, clock=clock, sleep=lambda _: None)  # the pace allows ~1,667/s
    progress = _Progress(200, bar=False, hook=None, limiter=limiter, clock=clock)
    progress.start([])
    for n in range(20):  # the answers come one a second (slow service, one worker)
        clock.now += 1.0
        progress.add(ok(n))
    assert 179.0 <= progress.eta() <= 181.0  # 180 left at one a second


def test_piped_output_is_a_line_every_few_seconds_with_the_eta():
    clock = Clock()
    limiter = RateLimiter(600, 60.0, clock=clock, sleep=lambda _: None)
    stream = io.StringIO()  # not a terminal
    progress = _Progress(300, bar=True, hook=None, limiter=limiter, clock=clock, stream=stream)
    progress.start([ok(n) for n in range(50)])  # 50 from the cache
    for n in range(50, 300):  # one answer every 0.1 s: 25 s
        clock.now += 0.1
        progress.add(ok(n))
    progress.close()
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 1 + 25 // 5 + 1  # the first, one every 5 s, the last
    # A fresh run starts at a fifth of its ceiling (120 a minute), after a first burst of 30:
    # 220 to go take 1:50.
    assert lines[0] == "profiles: 50/300 (17%), 00:00 elapsed, ETA 01:50, pace 120/min, 50 cached"
    assert lines[1].startswith("profiles: 100/300 (33%), 00:05 elapsed, ETA ")
    assert lines[-1] == "profiles: 300/300 in 00:25: 300 ok, 0 not_found, 0 failed"


def test_a_real_fetch_with_stderr_piped_writes_lines_not_carriage_returns():
    script = (
        "import warnings\n"
        "from amptools.sample import SampleServer\n"
        "warnings.simplefilter('ignore')\n"
        "with SampleServer() as server:\n"
        "    client = server.client(rate_limit=1200)\n"
        "    ps = client.get_profiles(list(server.org.user_ids[:80]), cohort_ids=True)\n"
        "print(ps)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "80 ok" in done.stdout
    assert "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("profiles:")]
    assert lines[0].startswith("profiles: 0/80 (0%), 00:00 elapsed, ETA 00:")
    assert lines[-1].startswith("profiles: 80/80 in ") and lines[-1].endswith("80 ok, 0 not_found, 0 failed")
    assert len(lines) <= 5  # ~4 s of fetching: a line every 5 s, not one per id
