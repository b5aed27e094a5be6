"""Which keys of a merged answer are computations: the org's names, learned and checked.

A query for user properties and computations is one request per user, and the service
answers both in one ``amp_props`` object. A key's kind can only be known from answers
that keep the two apart, so every key carries *evidence* — when, and how, it was last
seen as a property or as a computation:

- an **exact check**: the first user of every run is asked the two-request way
  (properties, then computations only), which checks again what an earlier run learned;
- a **refresh**: once the merged answers are in, the users whose answers hold keys never
  seen apart (a new computation, a sparse property) are also asked for their
  computations alone — as few users as cover every such key — and then random users,
  until about one user in a hundred (at least five a run) was asked apart;
- a **value type**: computations are always text, so a number, boolean or list is a
  property's value (and a name seen as a computation with such a value is a clash);
- **listed**: ``computations=("a", "b")`` names its computations itself.

Evidence is kept per org (the client's scope) in this process and in the cache, so a
later run starts from it — and checks it again with its first user. A key seen as both
kinds is ``ambiguous``; a key never seen apart is ``unverified``; both are flagged by the
tables (see :func:`amptools.tables.keys`) and named in one :class:`KeyKindWarning` per run.

What no merged answer can show: a property that shares a computation's name on only
*some* users, when none of the checked users is one of them. The refreshes reach users
across the run (random ones among them), so such a clash is likely caught when it is
common; ``split_computations=True`` is exact.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .errors import AmptoolsWarning
from .models import ComputationNames, user_data
from .query import ProfileQuery

__all__ = [
    "CHECK_SHARE",
    "MIN_CHECKS",
    "KeyKindWarning",
    "NameLearner",
    "evidence_of",
    "known",
    "names_of",
    "remember",
]

#: Users checked the exact way per run: about one in a hundred, at least five.
CHECK_SHARE = 0.01
MIN_CHECKS = 5
# The most refreshes a run sends for keys never seen apart, as a share of its users: an
# org whose every user has keys of their own would otherwise double the cost. What is
# left is flagged ``unverified``.
_MOST_REFRESHES = 0.25

# (key, kind) -> (seen at, Unix seconds; how, in words)
Evidence = dict[tuple[str, str], tuple[float, str]]


class KeyKindWarning(AmptoolsWarning):
    """One request per user could not tell some keys apart (ambiguous or unverified): their
    values are in both ``tables.properties`` and ``tables.computations``, flagged."""


# -- what this process knows, per scope ----------------------------------------------------
_lock = threading.Lock()
_known: dict[str, Evidence] = {}


def names_of(evidence: Mapping[tuple[str, str], tuple[float, str]]) -> ComputationNames:
    """The names some evidence shows: the names of each kind and, per name, how it was seen."""
    how: dict[str, list[str]] = {}
    for (key, kind), (at, source) in sorted(evidence.items()):
        day = datetime.fromtimestamp(at, timezone.utc).date().isoformat()
        how.setdefault(key, []).append(f"{kind}: {source}, {day}")
    return ComputationNames(
        frozenset(key for key, kind in evidence if kind == "computation"),
        frozenset(key for key, kind in evidence if kind == "property"),
        {key: "; ".join(parts) for key, parts in how.items()},
    )


def _merge(into: Evidence, more: Mapping[tuple[str, str], tuple[float, str]]) -> bool:
    """Keep the newest evidence of each (key, kind); True when a pair is new or is now
    known another way (what the names say changed)."""
    changed = False
    for pair, seen in more.items():
        old = into.get(pair)
        if old is None or seen[0] >= old[0]:
            changed = changed or old is None or old[1] != seen[1]
            into[pair] = seen
    return changed


def evidence_of(names: ComputationNames, *, at: float | None = None, source: str = "learned") -> Evidence:
    """Evidence for a bare :class:`ComputationNames` (no times of its own)."""
    at = time.time() if at is None else at
    found: Evidence = {(key, "computation"): (at, source) for key in names.computations}
    found.update({(key, "property"): (at, source) for key in names.properties})
    return found


def known(scope: str) -> ComputationNames:
    """What this process has learned for ``scope`` (an API and project), or nothing."""
    with _lock:
        return names_of(_known.get(scope, {}))


def remember(scope: str, names: ComputationNames | Evidence) -> ComputationNames:
    """Add ``names`` (or evidence) to what this process knows for ``scope``; the union."""
    more = evidence_of(names) if isinstance(names, ComputationNames) else names
    with _lock:
        evidence = _known.setdefault(scope, {})
        _merge(evidence, more)
        return names_of(evidence)


def _known_evidence(scope: str) -> Evidence:
    with _lock:
        return dict(_known.get(scope, {}))


def _keys(payload: object) -> Mapping[str, Any] | None:
    """The ``amp_props`` object of a body, or None."""
    try:
        props = user_data(payload).get("amp_props")
    except Exception:  # an unreadable body teaches nothing
        return None
    return props if isinstance(props, Mapping) else None


def _typed(value: Any) -> bool:
    """A value no computation has (computations are text or null)."""
    return value is not None and not isinstance(value, str)


# -- one run ---------------------------------------------------------------------------------
class NameLearner:
    """The org's computation names as one fetch learns and checks them (thread-safe).

    Parameters
    ----------
    scope : str
        Whose names (the client's scope: API and project, never the key).
    query : ProfileQuery
        What the run asks. Only a query that merges properties and computations in one
        request needs names (``active``).
    total : int
        The ids the run will fetch: the users asked apart scale with it.
    stored : Evidence, optional
        What the cache remembers for ``scope``, added to what this process knows.
    rng : random.Random, optional
        Draws the random users refreshed.
    """

    def __init__(self, scope: str, query: ProfileQuery, *, total: int = 1,
                 stored: Mapping[tuple[str, str], tuple[float, str]] | None = None,
                 rng: random.Random | None = None) -> None:
        self.scope = scope
        self.query = query
        self.active = query.merges_computations
        self._lock = threading.Lock()
        self._evidence: Evidence = _known_evidence(scope)
        if stored:
            _merge(self._evidence, stored)
        self._learned: Evidence = {}  # this run's own evidence
        self._typed_keys: set[str] = set()  # keys this run saw holding numbers or booleans
        self._snapshot = names_of(self._evidence)
        self._read = False
        self.grew = False  # a merged answer was read, and names were learned after
        self.total = total
        #: Users asked apart per run (the first user's check, refreshes, random users).
        self.checks = min(total, max(MIN_CHECKS, math.ceil(total * CHECK_SHARE))) if self.active else 0
        self._rng = rng or random.Random()
        self._most_refreshes = max(self.checks, int(total * _MOST_REFRESHES), 1)
        self.refused = 0  # keys never seen apart left after the most refreshes a run sends

    # -- what is known -----------------------------------------------------------------
    @property
    def names(self) -> ComputationNames:
        return self._snapshot

    def read(self) -> ComputationNames:
        """The names to read a merged answer with now (marks that one was read)."""
        self._read = True
        return self._snapshot

    @property
    def learned(self) -> Evidence:
        """What this run saw itself (to keep in the cache)."""
        with self._lock:
            return dict(self._learned)

    @property
    def clash_with_listed(self) -> bool:
        """A listed computation is also a property's name: ask the exact way."""
        listed = self.query.computation_ids
        return bool(self.active and listed and set(listed) & self._snapshot.properties)

    # -- the schedule --------------------------------------------------------------------
    def exact(self, position: int) -> bool:
        """Whether the id at ``position`` of the run is asked the exact way: the first one
        (what an earlier run learned is checked again), or every one when a listed
        computation is also a property's name."""
        return self.active and (position == 0 or self.clash_with_listed)

    def unsure(self, merged: object) -> frozenset[str]:
        """The keys of a merged answer that one more request for this user would settle:
        keys never seen apart, and properties' names known only from their type that now
        hold text (a computation's value?)."""
        if not self.active or self.query.computation_ids is not None:
            return frozenset()
        props = _keys(merged)
        if not props:
            return frozenset()
        names = self._snapshot
        return frozenset(key for key, value in props.items()
                         if not _typed(value) and (names.kind(key) == "unverified" or self._typed_property(key)))

    def _typed_property(self, key: str) -> bool:
        """A property whose values were numbers or booleans (here, or when only their type
        said so): text under its name may be a computation's value — a partial clash."""
        if (key, "computation") in self._evidence:
            return False
        seen = self._evidence.get((key, "property"))
        return key in self._typed_keys or (seen is not None and seen[1] == "value type")

    def plan_refreshes(self, candidates: Mapping[str, frozenset[str]], asked: int = 1) -> list[str]:
        """Which users to ask apart once the merged answers are in.

        ``candidates`` maps each user read from a merged answer to its :meth:`unsure` keys
        (empty for most), in run order. First, as few users as cover every unsure key
        (greedily: each covers the most keys not yet covered); then random users until
        :attr:`checks` users were asked apart in the run (``asked`` already were). At most
        a quarter of the users are refreshed: the keys left stay ``unverified``.
        """
        uncovered: set[str] = set().union(*candidates.values()) if candidates else set()
        pool = {user: keys for user, keys in candidates.items() if keys}
        chosen: list[str] = []
        while uncovered and pool and len(chosen) < self._most_refreshes:
            user = max(pool, key=lambda u: (len(pool[u] & uncovered), self._rng.random()))
            uncovered -= pool.pop(user)
            chosen.append(user)
        self.refused = len(uncovered)
        taken = set(chosen)
        others = [user for user in candidates if user not in taken]
        more = max(0, self.checks - asked - len(chosen))
        return chosen + self._rng.sample(others, min(more, len(others)))

    @property
    def refresh_part(self) -> ProfileQuery:
        """What a refresh asks: the computations alone (all computations), or the
        properties alone (listed computations: a property with a listed name shows there)."""
        if self.query.computation_ids is not None:
            return ProfileQuery(amp_props=True)
        return self.query.split().parts()[-1]

    # -- learning ----------------------------------------------------------------------
    def _add(self, found: Evidence) -> None:
        with self._lock:
            _merge(self._learned, found)
            if _merge(self._evidence, found):
                grown = names_of(self._evidence)
                if grown != self._snapshot:
                    self.grew = self.grew or self._read
                self._snapshot = grown

    def _learn_types(self, props: Mapping[str, Any]) -> None:
        typed = [key for key, value in props.items() if _typed(value)]
        with self._lock:
            self._typed_keys.update(typed)
        now = time.time()
        found = {(key, "property"): (now, "value type") for key, value in props.items()
                 if _typed(value) and (key, "property") not in self._evidence}
        if found:
            self._add(found)

    def learn_exact(self, properties: object, computations: object) -> None:
        """What one user's properties-only and computations-only answers show."""
        now = time.time()
        found: Evidence = {}
        for key in _keys(properties) or ():
            found[(key, "property")] = (now, "answer asked apart")
        for key in _keys(computations) or ():
            found[(key, "computation")] = (now, "answer asked apart")
        self._add(found)

    def learn_refresh(self, merged: object, alone: object) -> None:
        """What a merged answer and the same user's answer to :attr:`refresh_part` show.

        With the computations alone: those are computations, every other key of the
        merged answer a property, and a key in both whose values differ was answered
        with a property's value (a clash). With the properties alone, the other way round.
        """
        now = time.time()
        merged_keys, apart = _keys(merged) or {}, _keys(alone)
        if apart is None:
            return
        asked, other = (("computation", "property") if self.query.computation_ids is None
                        else ("property", "computation"))
        found: Evidence = {(key, asked): (now, f"{asked} asked alone") for key in apart}
        for key, value in merged_keys.items():
            if key not in apart:
                found[(key, other)] = (now, f"absent when the {asked} was asked alone")
            elif value != apart[key]:
                found[(key, other)] = (now, f"the merged value differs from the {asked}'s")
        self._add(found)

    def learn_types(self, merged: object) -> None:
        """Value-type evidence from a merged answer (computations are text)."""
        if self.active:
            props = _keys(merged)
            if props:
                self._learn_types(props)

    # -- the end of a run ------------------------------------------------------------------
    def settle(self) -> ComputationNames:
        """Keep what the run learned for this process; the names to read answers with."""
        if self._learned:
            remember(self.scope, self.learned)
        return self._snapshot

    @staticmethod
    def unclear(kinds: Iterable[Mapping[str, str]]) -> dict[str, str]:
        """The keys of these answers that stayed ``ambiguous`` or ``unverified``."""
        found: dict[str, str] = {}
        for answer in kinds:
            for key, kind in answer.items():
                if kind == "ambiguous" or (kind == "unverified" and key not in found):
                    found[key] = kind
        return found


def warning_text(unclear: Mapping[str, str], query: ProfileQuery, *, limit: int = 6) -> str:
    """The one line that names the keys a run could not tell apart, and the way out."""
    ambiguous = sorted(k for k, kind in unclear.items() if kind == "ambiguous")
    unverified = sorted(k for k, kind in unclear.items() if kind == "unverified")
    parts = []
    if ambiguous:
        parts.append(f"{len(ambiguous)} name{'s' if len(ambiguous) > 1 else ''} both a property and a "
                     f"computation have ({_shown(ambiguous, limit)})")
    if unverified:
        parts.append(f"{len(unverified)} never seen apart ({_shown(unverified, limit)})")
    listed = ("computations=(...) with only the computations you need" if query.computations is True
              else "a list of computations without the clashing name")
    return (f"one request per user could not tell every key apart: {' and '.join(parts)}. Their values "
            "are in both tables.properties and tables.computations, flagged (tables.keys(...) lists "
            f"every key and how it was known). For exact answers ask with split_computations=True (two "
            f"requests per user), or ask {listed}.")


def _shown(keys: Sequence[str], limit: int) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
