"""The sample org's clock: what changes from one day to the next, deterministically.

Day 0 is the org as :mod:`amptools.sample.dataset` draws it. Each later day changes it
a little, always the same way for the same seed, user and day, so a test knows the
drift exactly:

- **A model retrains.** On day ``d`` the model ``models[d % len(models)]`` retrains
  (``two-tower-v1`` on day 1 with the packaged org, ``pop-baseline-v2`` on day 2,
  ``als-v3`` on day 3, ...). For each set it serves, each user is retrained with
  probability :data:`RETRAIN_SHARE`: the model's list gets a new top item (one the list
  did not hold) and the rest move down one rank, the last dropped; the set's
  ``last_updated`` becomes that day. A user in the control group still sees the same
  random selection.
- **Cohorts move.** Each user's membership of each cohort flips with probability
  :data:`COHORT_FLIP_SHARE` (joins when out, leaves when in).
- **Computed properties move.** Each number-valued computation of a user moves with
  probability :data:`COMPUTATION_MOVE_SHARE`: whole numbers go up by 1 to 3, others are
  scaled by a factor between 0.8 and 1.2 (rounded as the org rounds them). Null and
  invalid values stay.

Every change is a function of (seed, user index, day); the documented test user (index
0) never changes. :func:`told` says what the org was told to change on one day, for
tests to check the drift against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["COHORT_FLIP_SHARE", "COMPUTATION_MOVE_SHARE", "DAY_SECONDS", "RETRAIN_SHARE", "Changes",
           "retrained_model", "told"]

#: Share of a retrained model's users whose lists change on that day.
RETRAIN_SHARE = 0.2
#: Share of (user, cohort) memberships that flip each day.
COHORT_FLIP_SHARE = 0.03
#: Share of (user, computation) number values that move each day.
COMPUTATION_MOVE_SHARE = 0.3
DAY_SECONDS = 86_400
# Stream tags keep the clock's random numbers apart from day 0's (seed, index) streams.
_CLOCK_STREAM = 0xC10C


@dataclass(frozen=True)
class Changes:
    """What the org was told to change for one user on one day.

    Attributes
    ----------
    retrained : dict of str to str
        ``rec_id -> the new top item`` of each set whose model list changed.
    cohort_flips : frozenset of str
        The cohorts the user joined or left.
    computations : dict of str to str
        ``computation -> new value`` of each computation that moved.
    """

    retrained: dict[str, str] = field(default_factory=dict)
    cohort_flips: frozenset[str] = frozenset()
    computations: dict[str, str] = field(default_factory=dict)


def retrained_model(models: Sequence[str], day: int) -> str | None:
    """The model that retrains on ``day`` (None on day 0)."""
    return models[day % len(models)] if day >= 1 and models else None


def _rng(seed: int, index: int, day: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, day, _CLOCK_STREAM, stream])


def _moved(value: str | None, spec: Mapping[str, Any], rng: np.random.Generator) -> str | None:
    """A computation's value the next day (the draws happen whatever the value, to stay aligned)."""
    step = int(rng.integers(1, 4))
    factor = float(rng.uniform(0.8, 1.2))
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None  # invalid values ("n/a") do not move
    if not math.isfinite(number):
        return None
    if spec.get("kind") == "int":
        return str(int(round(number)) + step)
    moved = str(round(number * factor, int(spec.get("decimals", 1))))
    return moved if moved != value else None  # a factor near 1 that rounds back is no move


def told(
    *,
    seed: int,
    index: int,
    day: int,
    models: Sequence[str],
    rec_models: Mapping[str, str],
    model_items: Mapping[str, Sequence[str]],
    catalog: Sequence[str],
    cohort_ids: Sequence[str],
    computations: Mapping[str, str | None],
    computation_specs: Sequence[Mapping[str, Any]],
) -> Changes:
    """What changes for user ``index`` from ``day - 1`` to ``day``, given the user on ``day - 1``.

    Parameters
    ----------
    seed, index, day : int
        The org's seed, the user, the day (1 or later).
    models : sequence of str
        The org's models, in order (see :func:`retrained_model`).
    rec_models : mapping
        ``rec_id -> model``.
    model_items : mapping
        ``rec_id -> the model's list`` of the user on ``day - 1``.
    catalog : sequence of str
        Every item.
    cohort_ids : sequence of str
        Every cohort of the org.
    computations : mapping
        The user's computation values on ``day - 1``.
    computation_specs : sequence of mapping
        The org's computation definitions (``id``, ``kind``, ``decimals``).
    """
    if day < 1 or index == 0:
        return Changes()
    model = retrained_model(models, day)
    retrained: dict[str, str] = {}
    for position, (rec_id, items) in enumerate(sorted(model_items.items())):
        rng = _rng(seed, index, day, position)
        chosen = float(rng.random()) < RETRAIN_SHARE
        if not chosen or rec_models.get(rec_id) != model:
            continue
        held = set(items)
        while True:  # a new top item: one the list does not hold
            candidate = catalog[int(rng.integers(0, len(catalog)))]
            if candidate not in held:
                break
        retrained[rec_id] = candidate
    flips = _rng(seed, index, day, 1_000).random(len(cohort_ids)) < COHORT_FLIP_SHARE
    moves = _rng(seed, index, day, 2_000)
    moved: dict[str, str] = {}
    for spec in computation_specs:
        chosen = float(moves.random()) < COMPUTATION_MOVE_SHARE
        new = _moved(computations.get(spec["id"]), spec, moves)
        if chosen and new is not None:
            moved[spec["id"]] = new
    return Changes(retrained, frozenset(c for c, flip in zip(cohort_ids, flips.tolist()) if flip), moved)
