"""A campaign and amptools on one org's 600 a minute, simulated in fake time (issue 17).

A fast regression test of the pacing's design: the org's sliding window (admitting
only, or counting refused requests too), a Braze campaign that never retries, and
amptools' real :class:`RateLimiter` on a fake clock — minutes of sending in well under
a second. The evidence at the real 60-second window against the real HTTP sample org is
``benchmarks/bench_coexistence.py``; this keeps the design from drifting between runs of it.
"""

from __future__ import annotations

import math
from collections import deque

import pytest

from amptools.ratelimit import RateLimiter


class Org:
    """The org's limiter: at most ``limit`` in any ``window`` seconds."""

    def __init__(self, strict: bool, limit: int = 600, window: float = 60.0) -> None:
        self.limit, self.window, self.strict = limit, window, strict
        self.counted: deque[float] = deque()
        self.log: list[tuple[float, str, int]] = []

    def ask(self, now: float, who: str) -> float | None:
        """None when admitted, else the Retry-After."""
        while self.counted and self.counted[0] <= now - self.window:
            self.counted.popleft()
        over = len(self.counted) - self.limit
        if over >= 0:
            if self.strict:
                self.counted.append(now)
            self.log.append((now, who, 429))
            return max(1.0, math.ceil(self.counted[over] + self.window - now))
        self.counted.append(now)
        self.log.append((now, who, 200))
        return None


def simulate(*, strict: bool, campaign_per_minute: int, campaign: tuple[float, float],
             amptools: tuple[float, float], latency: float = 0.05) -> dict[str, float]:
    org = Org(strict)
    step = 60.0 / campaign_per_minute if campaign_per_minute else math.inf
    calls = [campaign[0] + k * step for k in range(int((campaign[1] - campaign[0]) / step))] if step < math.inf else []
    state = {"now": 0.0, "next": 0}

    def advance(to: float) -> None:
        while state["next"] < len(calls) and calls[state["next"]] <= to:
            org.ask(calls[state["next"]], "campaign")
            state["next"] += 1
        state["now"] = max(state["now"], to)

    limiter = RateLimiter(540, 60.0, clock=lambda: state["now"],
                          sleep=lambda seconds: advance(state["now"] + max(seconds, 1e-6)))
    advance(amptools[0])
    while state["now"] < amptools[1]:
        token = limiter.acquire()
        advance(state["now"] + latency / 2)
        retry_after = org.ask(state["now"], "amptools")
        advance(state["now"] + latency / 2)
        limiter.release(token)
        if retry_after is not None:
            limiter.throttled(retry_after)
    advance(max(campaign[1], amptools[1]))
    sent = [status for _, who, status in org.log if who == "campaign"]
    during = sum(1 for t, who, _ in org.log if who == "campaign" and amptools[0] <= t < amptools[1])
    ours = sum(1 for _, who, status in org.log if who == "amptools" and status == 200)
    seconds = amptools[1] - amptools[0]
    left = org.limit / org.window - during / seconds
    return {"campaign_throttled": sum(s == 429 for s in sent) / max(1, len(sent)),
            "share_of_what_was_left": ours / seconds / left if left > 0 else 0.0}


@pytest.mark.parametrize("strict", [False, True], ids=["admitted count", "refused count too"])
def test_a_campaign_starting_first_barely_notices_amptools(strict: bool) -> None:
    """Issue 17's goal: a campaign at 400 a minute for 150 s, amptools starting 10 s in
    with its defaults: the campaign ≤ 2% throttled, amptools ≥ 60% of what it left."""
    result = simulate(strict=strict, campaign_per_minute=400, campaign=(0.0, 150.0), amptools=(10.0, 150.0))
    assert result["campaign_throttled"] <= 0.02
    assert result["share_of_what_was_left"] >= 0.60


@pytest.mark.parametrize("per_minute", [200, 300, 400, 450])
@pytest.mark.parametrize("strict", [False, True], ids=["admitted count", "refused count too"])
def test_long_runs_beside_campaigns_of_many_sizes(strict: bool, per_minute: int) -> None:
    result = simulate(strict=strict, campaign_per_minute=per_minute, campaign=(0.0, 660.0),
                      amptools=(61.0, 660.0))
    assert result["campaign_throttled"] <= 0.02
    assert result["share_of_what_was_left"] >= 0.75


def test_alone_on_a_quiet_org_the_full_pace_within_a_minute() -> None:
    state = {"now": 0.0}
    limiter = RateLimiter(540, 60.0, clock=lambda: state["now"],
                          sleep=lambda seconds: state.__setitem__("now", state["now"] + seconds))
    reached = None
    while state["now"] < 120.0:
        with limiter.permit():
            if reached is None and limiter.pace >= 0.97 * 540:
                reached = state["now"]
    assert reached is not None and reached <= 60.0
