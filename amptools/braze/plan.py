"""Planning a send: the Profile API calls a Braze campaign makes, minute by minute.

Package-internal: the public surface is :mod:`amptools.braze`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InvalidQueryError, whole_number
from ..query import ORG_REQUESTS_PER_MINUTE

__all__ = [
    "CALL_PLAN_COLUMNS",
    "RENDERS_PER_MESSAGE",
    "call_plan",
    "recommended_rate",
]

CALL_PLAN_COLUMNS: tuple[str, ...] = (
    "minute", "messages", "renders", "cache_hits", "api_calls", "other_calls", "total_calls",
    "share_of_limit", "throttled", "over_limit", "exposure_events",
)
_CALL_PLAN_DTYPES = {**dict.fromkeys(CALL_PLAN_COLUMNS, "int64"), "share_of_limit": "float64",
                     "throttled": "bool"}
#: Calls one message may make: Braze renders an email's HTML body, its plain text and its
#: AMP part, each calling (Braze: 2–3 renders per message). The worst case is the default.
RENDERS_PER_MESSAGE = 3


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    return whole_number(name, value, minimum=minimum, error=InvalidQueryError)


def recommended_rate(*, renders_per_message: int = RENDERS_PER_MESSAGE, other_calls_per_minute: int = 0,
                     limit: int = ORG_REQUESTS_PER_MINUTE) -> int:
    """The Braze rate limit (messages a minute) that keeps a send under the org limit.

    It assumes no cache hit (the worst case: every user distinct): each message's
    ``renders_per_message`` calls, plus the org's other calls, must fit in ``limit``.

    Parameters
    ----------
    renders_per_message : int, default 3
        Calls one message makes: Braze renders an email's HTML, plain text and AMP part
        (up to 3); a channel with one body (push, SMS) makes 1–2.
    other_calls_per_minute : int, default 0
        Calls other tools make meanwhile (amptools bulk fetches, other campaigns).
    limit : int, default 600
        The org's Profile API requests a minute.

    Returns
    -------
    int
        ``(limit - other_calls_per_minute) // renders_per_message``; 0 when the other
        calls alone use the limit up (no rate is safe).
    """
    renders = _positive_int(renders_per_message, "renders_per_message")
    other = _positive_int(other_calls_per_minute, "other_calls_per_minute", minimum=0)
    limit = _positive_int(limit, "limit")
    return max(0, (limit - other) // renders)


def _distinct_minutes(size: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Messages and cache hits per minute for ``size`` distinct users: arithmetic, no list."""
    n_minutes = -(-size // rate)
    messages = np.full(n_minutes, rate, dtype=np.int64)
    if n_minutes:
        messages[-1] = size - rate * (n_minutes - 1)
    return messages, np.zeros(n_minutes, dtype=np.int64)


def _repeated_minutes(ids: Iterable[Any], rate: int, renders: int,
                      cache_max_age: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Messages and cache hits per minute for the ids in send order.

    Streams the ids once and keeps only the counts per minute and the users whose last
    call is still within ``cache_max_age`` (older ones can no longer be hits), so memory
    follows the send's minutes and the cache window, not the audience.
    """
    messages: list[int] = []
    hits: list[int] = []
    window: OrderedDict[Any, float] = OrderedDict()  # user -> second of their last call, oldest first
    for k, user in enumerate(ids):
        minute, when = k // rate, 60.0 * k / rate
        if minute == len(messages):
            messages.append(0)
            hits.append(0)
        messages[minute] += 1
        if not cache_max_age:
            continue
        while window:
            oldest, called = next(iter(window.items()))
            if when - called <= cache_max_age:
                break
            window.popitem(last=False)
        if user in window:
            hits[minute] += renders
        else:
            window[user] = when
    return np.array(messages, dtype=np.int64), np.array(hits, dtype=np.int64)


def call_plan(
    audience: int | Iterable[str],
    *,
    send_rate_per_minute: int,
    renders_per_message: int = RENDERS_PER_MESSAGE,
    cache_max_age: int | None = 300,
    other_calls_per_minute: int = 0,
    limit: int = ORG_REQUESTS_PER_MINUTE,
) -> pd.DataFrame:
    """Minute by minute, the Profile API calls a Braze send makes against the org limit.

    Messages go out evenly at ``send_rate_per_minute`` (Braze's rate limit for the
    campaign); message ``k`` leaves at second ``60 * k / send_rate_per_minute``. Each
    message renders ``renders_per_message`` times and, conservatively, every render
    calls (Braze documents 2–3 calls per message and a best-effort cache). A user who
    comes again within ``cache_max_age`` seconds of their last call is served from
    Braze's cache: all their renders are cache hits and reach neither the API nor
    the exposure log. Every call is assumed to ask for recommendations, so each logs
    an exposure event. Memory follows the minutes of the send (and the users inside
    one cache window), not the audience: a count of 10⁸ users costs nothing more.

    Parameters
    ----------
    audience : int or iterable of str
        The number of (distinct) users, or the user ids in send order (repeats can be
        cache hits); any iterable, read once (a list, a Series, a generator).
    send_rate_per_minute : int
        Messages a minute.
    renders_per_message : int, default 3
        Calls one message makes: an email with HTML, plain text and AMP parts renders
        3 times; lower it for a channel with one body.
    cache_max_age : int or None, default 300
        Seconds an answer is reused (Braze's default is 300); None or 0: no cache.
    other_calls_per_minute : int, default 0
        Calls to the org's Profile API quota from elsewhere, every minute of the send.
    limit : int, default 600
        The org's requests a minute.

    Returns
    -------
    pandas.DataFrame
        One row per minute of the send, columns :data:`CALL_PLAN_COLUMNS`:
        ``minute`` (int64, from 0), ``messages`` (sent that minute), ``renders``
        (``messages * renders_per_message``), ``cache_hits`` (renders served from
        Braze's cache), ``api_calls`` (``renders - cache_hits``), ``other_calls``,
        ``total_calls`` (``api_calls + other_calls``), ``share_of_limit``
        (float64, ``total_calls / limit``), ``throttled`` (bool, ``total_calls >
        limit``: the API answers 429 and live messages lose their recommendations),
        ``over_limit`` (calls beyond the limit), ``exposure_events`` (= ``api_calls``).
        ``df.attrs`` holds ``recommended_rate`` (see :func:`recommended_rate`),
        ``limit``, ``send_rate_per_minute`` and ``throttled_minutes``.
    """
    rate = _positive_int(send_rate_per_minute, "send_rate_per_minute")
    renders = _positive_int(renders_per_message, "renders_per_message")
    other = _positive_int(other_calls_per_minute, "other_calls_per_minute", minimum=0)
    limit = _positive_int(limit, "limit")
    if cache_max_age is not None:
        cache_max_age = _positive_int(cache_max_age, "cache_max_age", minimum=0)
    if isinstance(audience, (int, np.integer)) and not isinstance(audience, bool):
        messages, hits = _distinct_minutes(_positive_int(audience, "audience", minimum=0), rate)
    elif isinstance(audience, Iterable) and not isinstance(audience, (str, bytes, Mapping)):
        messages, hits = _repeated_minutes(audience, rate, renders, cache_max_age)
    else:
        raise InvalidQueryError(f"audience must be a number of users or a list of user ids, "
                                f"got {type(audience).__name__}.")
    n_minutes = len(messages)
    rendered = messages * renders
    api_calls = rendered - hits
    total = api_calls + other
    frame = pd.DataFrame({
        "minute": np.arange(n_minutes, dtype=np.int64), "messages": messages, "renders": rendered,
        "cache_hits": hits, "api_calls": api_calls, "other_calls": np.full(n_minutes, other, dtype=np.int64),
        "total_calls": total, "share_of_limit": total / limit, "throttled": total > limit,
        "over_limit": np.maximum(total - limit, 0), "exposure_events": api_calls,
    }, columns=list(CALL_PLAN_COLUMNS)).astype(_CALL_PLAN_DTYPES)
    frame.attrs.update(
        recommended_rate=recommended_rate(renders_per_message=renders, other_calls_per_minute=other, limit=limit),
        limit=limit, send_rate_per_minute=rate, throttled_minutes=int(frame["throttled"].sum()),
    )
    return frame
