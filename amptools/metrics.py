"""Comparing recommendation lists and recommendation sets.

Two layers live here:

* **List metrics** on two plain sequences of items: :func:`jaccard`,
  :func:`overlap` and :func:`rbo` (rank-biased overlap).
* **Table metrics** on the tidy recommendations table produced by
  ``amptools.tables.recommendations`` (columns :data:`RECOMMENDATION_COLUMNS`):
  :func:`overlap_matrix` (and :func:`overlap_counts`), :func:`coverage`,
  :func:`item_frequency`, :func:`popularity`, :func:`long_tail`,
  :func:`personalization` (per group) and :func:`personalization_score` (pooled).

Conventions shared by every function in this module
----------------------------------------------------
* **A list** is what one user got for one recommendation set: the rows of one
  ``(user_id, device_id, rec_id)`` ordered by ``rank``.  A user is identified by the
  pair ``(user_id, device_id)`` because profiles fetched by device id have no user id.
* **Duplicates** inside one list are ignored after their first (best-ranked)
  occurrence: lists are compared as rankings of distinct items.
* **Empty lists**: two empty lists are identical (similarity 1.0); an empty list and
  a non-empty one share nothing (similarity 0.0).
* Categorical columns may carry unused categories; every group-by uses
  ``observed=True`` so unused categories never produce rows.
* **Control lists are random.**  In a well-run campaign users with
  ``is_control == True`` get a random selection, not the model's choice; group by
  ``is_control`` (or filter it out) before reading coverage or popularity as a
  property of the model.
* Nothing here changes the caller's frame.
* **One vocabulary**: the table comes first and everything else by keyword;
  ``by`` names the grouping column(s); ``top_n`` is always "the n most frequent
  items per group"; each function returns one type.  Old spellings keep working
  for now with a DeprecationWarning naming the new one
  (:func:`amptools.frames.deprecated_arguments`).

This module builds no figures; :mod:`amptools.plots` draws these tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import pandas as pd

from . import tables
from .errors import whole_number
from .frames import ID_COLUMNS, LIST_COLUMNS, deprecated_arguments, moved_names, shared_docs
from .frames import require_columns as require_columns  # re-exported: braze.py imports it from here
from .grouping import (
    codes,
    has_repeats,
    is_sorted,
    run_codes,
    run_starts,
    shared_codes,
    shared_user_codes,
    sort_order,
    sorted_group_codes,
    user_codes,
)

__all__ = [
    "COVERAGE_COLUMNS",
    "DRIFT_COLUMNS",
    "DRIFT_SUMMARY_COLUMNS",
    "ITEM_CHURN_COLUMNS",
    "ITEM_FREQUENCY_COLUMNS",
    "LONG_TAIL_COLUMNS",
    "POPULARITY_COLUMNS",
    "RECOMMENDATION_COLUMNS",
    "coverage",
    "drift",
    "drift_summary",
    "item_churn",
    "item_frequency",
    "jaccard",
    "long_tail",
    "overlap",
    "overlap_counts",
    "overlap_matrix",
    "personalization",
    "personalization_score",
    "popularity",
    "rbo",
]

#: Columns of the tidy recommendations table (``amptools.tables.recommendations``).
RECOMMENDATION_COLUMNS = tables.RECOMMENDATION_COLUMNS
# require_columns, deprecated_arguments and user_codes stay importable from here (braze.py
# imports require_columns); their home is amptools.frames and amptools.grouping.
_MOVED = moved_names(__name__, {"USER_KEY": ("amptools.tables.ID_COLUMNS", ID_COLUMNS)})


def __getattr__(name: str) -> Any:
    return _MOVED(name)

#: Columns returned by :func:`coverage`.
COVERAGE_COLUMNS: tuple[str, ...] = (
    "group_by",
    "group",
    "n_users",
    "n_lists",
    "n_recommendations",
    "n_items",
    "n_items_outside_catalog",
    "catalog_size",
    "coverage",
    "gini",
    "entropy",
)
#: Columns returned by :func:`item_frequency` (after the ``by`` column, if any).
ITEM_FREQUENCY_COLUMNS: tuple[str, ...] = ("item", "n_lists", "share_of_lists", "share_of_recommendations")
#: Columns returned by :func:`popularity` (after the ``by`` column).
POPULARITY_COLUMNS: tuple[str, ...] = (
    "n_recommendations",
    "n_items",
    "top_share",
    "mean_popularity_rank",
    "median_popularity_rank",
)
#: Columns returned by :func:`long_tail` (after the ``by`` column).
LONG_TAIL_COLUMNS: tuple[str, ...] = ("item_rank", "item", "count", "item_fraction", "cumulative_share")

Metric = Literal["jaccard", "overlap", "rbo"]


# ----------------------------------------------------------------------------------
# list metrics
# ----------------------------------------------------------------------------------


def _distinct(items: Iterable[Hashable], k: int | None = None) -> list[Hashable]:
    """Items in order with duplicates after the first occurrence dropped, cut at ``k``."""
    seen: dict[Hashable, None] = dict.fromkeys(items)
    result = list(seen)
    if k is not None:
        _check_k(k)
        result = result[:k]
    return result


def _top_sets(a: Iterable[Hashable], b: Iterable[Hashable], k: int | None) -> tuple[set[Hashable], set[Hashable]]:
    """The distinct items of two lists (of their top ``k`` with ``k``) as two sets."""
    return set(_distinct(a, k)), set(_distinct(b, k))


_RECS_BY_DOCS = """recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``rank``,
        ``item`` and the ``by`` column."""

# what jaccard() and overlap() take and give, written once
_SET_SIMILARITY_DOCS = """Parameters
    ----------
    a, b : iterable of hashable
        Two recommendation lists, best first.  Duplicates are ignored.
    k : int, optional
        Compare only the top ``k`` distinct items of each list.

    Returns
    -------
    float
        In [0, 1]; 1.0 for two empty lists, 0.0 when exactly one is empty."""


def _check_k(k: int | None) -> None:
    if k is not None:
        whole_number("k", k, minimum=1, error=ValueError)


def _check_p(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 < float(p) < 1.0:
        raise ValueError(
            f"p must be a number strictly between 0 and 1 (the persistence of rank-biased "
            f"overlap; 0.9 weighs roughly the top 10 ranks), got {p!r}"
        )


@deprecated_arguments("k")
@shared_docs(set_similarity=_SET_SIMILARITY_DOCS)
def jaccard(a: Iterable[Hashable], b: Iterable[Hashable], *, k: int | None = None) -> float:
    """Jaccard similarity of two lists taken as sets: ``|A ∩ B| / |A ∪ B|``.

    {set_similarity}
    """
    set_a, set_b = _top_sets(a, b, k)
    if not set_a and not set_b:
        return 1.0
    return len(set_a & set_b) / len(set_a | set_b)


@deprecated_arguments("k")
@shared_docs(set_similarity=_SET_SIMILARITY_DOCS)
def overlap(a: Iterable[Hashable], b: Iterable[Hashable], *, k: int | None = None) -> float:
    """Overlap coefficient of two lists: ``|A ∩ B| / min(|A|, |B|)``.

    With ``k`` both lists are first cut to their top ``k`` distinct items, so for
    lists of at least ``k`` items this is the classic top-k overlap ``|A_k ∩ B_k| / k``
    (the share of the top ``k`` that the two lists agree on, ignoring order).  A
    shorter list is not penalised for being short: ``overlap(["a"], ["a", "b"])`` is
    1.0 because everything the shorter list holds is in the other one.

    {set_similarity}
    """
    set_a, set_b = _top_sets(a, b, k)
    if not set_a and not set_b:
        return 1.0
    if not set_a or not set_b:
        return 0.0
    return len(set_a & set_b) / min(len(set_a), len(set_b))


@deprecated_arguments("p")
def rbo(a: Iterable[Hashable], b: Iterable[Hashable], *, p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap ``RBO_ext`` (Webber, Moffat & Zobel 2010).

    RBO compares two rankings with weights that decay geometrically with depth: the
    agreement ``A_d = X_d / d`` at depth ``d`` (``X_d`` = number of items the two top-d
    prefixes share) gets weight ``(1 - p) p^(d-1)``.  Seen lists are finite, so the
    paper extrapolates the agreement beyond the seen depth; for lists of different
    lengths ``s <= l`` this is the paper's equation (32)::

        RBO_ext = (1-p)/p * ( sum_{d=1..l} X_d/d * p^d
                              + sum_{d=s+1..l} X_s (d-s) / (s d) * p^d )
                  + ( (X_l - X_s)/l + X_s/s ) * p^l

    where for ``d > s`` the whole shorter list is compared with the top ``d`` of the
    longer one.  For equal lengths the middle sum vanishes and the formula reduces to
    equation (30).  The value is symmetric and always within [0, 1] (it is clipped to
    absorb floating-point rounding).

    Parameters
    ----------
    a, b : iterable of hashable
        Two rankings, best first.  Duplicates after the first occurrence are ignored.
    p : float, default 0.9
        Persistence, strictly between 0 and 1.  The top ``d`` ranks carry
        ``1 - p^d`` of the weight of a full comparison: with 0.9 the top 10 carry
        about 65 %; smaller values make the measure more top-heavy.

    Returns
    -------
    float
        1.0 for identical rankings (and for two empty lists), 0.0 for disjoint ones
        (and when exactly one list is empty).

    Raises
    ------
    ValueError
        When ``p`` is not strictly between 0 and 1.
    """
    _check_p(p)
    list_a, list_b = _distinct(a), _distinct(b)
    short, long_ = (list_a, list_b) if len(list_a) <= len(list_b) else (list_b, list_a)
    s, l = len(short), len(long_)
    if l == 0:
        return 1.0
    if s == 0:
        return 0.0
    p = float(p)
    seen_short: set[Hashable] = set()
    seen_long: set[Hashable] = set()
    overlap_at_depth = 0  # X_d, grown one rank at a time
    x_s = 0
    weighted_sum = 0.0
    for d in range(1, l + 1):
        item_long = long_[d - 1]
        if d <= s:
            item_short = short[d - 1]
            if item_short == item_long:
                overlap_at_depth += 1
            else:
                overlap_at_depth += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
        else:
            overlap_at_depth += item_long in seen_short
        seen_long.add(item_long)
        weighted_sum += overlap_at_depth / d * p**d
        if d == s:
            x_s = overlap_at_depth
        if d > s:
            weighted_sum += x_s * (d - s) / (s * d) * p**d
    x_l = overlap_at_depth
    value = (1 - p) / p * weighted_sum + ((x_l - x_s) / l + x_s / s) * p**l
    return float(min(1.0, max(0.0, value)))


# ----------------------------------------------------------------------------------
# helpers for the tidy recommendations table
# ----------------------------------------------------------------------------------


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    if isinstance(by, str):
        return [by]
    return list(by)


def _prepared(recs: pd.DataFrame, by_columns: list[str]) -> pd.DataFrame:
    """The columns a table metric needs, one row per distinct (list, item); see :func:`_prepared_items`."""
    return _prepared_items(recs, by_columns)[0]


def _prepared_items(recs: pd.DataFrame, by_columns: list[str]) -> tuple[pd.DataFrame, pd.Index]:
    """The columns a table metric needs, one row per distinct (list, item), and the items.

    Adds integer codes ``_user`` (user), ``_list`` (user × rec set) and ``_item``
    (the item's code; unused categories only leave gaps); the items those codes
    index are returned second.  A repeated item keeps
    its best-ranked row.  Repeats are found with one integer sort; only when there
    are some does the slower de-duplication run.
    """
    list_keys = _list_keys(recs)
    columns = list(dict.fromkeys([*list_keys, *by_columns, "item", *(["rank"] if "rank" in recs.columns else [])]))
    frame = recs[columns]  # a new frame (copy-on-write): adding columns leaves recs alone
    user = user_codes(frame)
    list_code = user
    if "rec_id" in frame.columns:
        rec_code, rec_uniques = codes(frame["rec_id"])
        list_code = run_codes(user * max(len(rec_uniques), 1) + rec_code)
    item, item_uniques = codes(frame["item"])
    frame = frame.assign(_user=user, _list=list_code, _item=item)
    n_items = int(item.max()) + 1 if len(frame) else 1
    key = list_code * n_items + item
    if has_repeats(key):
        repeated = pd.Series(key).duplicated(keep=False).to_numpy()
        # only the few repeated rows need a rank sort to find their best occurrence
        involved = frame[repeated]
        if "rank" in involved.columns:
            involved = involved.sort_values("rank", kind="stable")
        best = involved.drop_duplicates(["_list", "_item"], keep="first")
        frame = pd.concat([frame[~repeated], best]).sort_index(kind="stable")
    return frame, item_uniques


# ----------------------------------------------------------------------------------
# overlap_matrix
# ----------------------------------------------------------------------------------


def _rbo_closed_form(
    shared_max_rank: np.ndarray,
    shared_owner: np.ndarray,
    length_a: np.ndarray,
    length_b: np.ndarray,
    p: float,
) -> np.ndarray:
    """RBO_ext (eq. 32) for many list pairs at once.

    For a shared item with ranks ``r_a``, ``r_b`` it is in both top-d prefixes exactly
    when ``d >= max(r_a, r_b)``; beyond the shorter length ``s`` every item of the
    shorter list is in its (whole) prefix, so the same test holds.  Hence
    ``X_d = #{shared items with max rank <= d}`` at every depth and
    ``sum_d X_d/d p^d = sum_items (C[l] - C[m-1])`` with ``C[d] = sum_{j<=d} p^j / j``.
    The tail sum of eq. 32 has the closed form
    ``X_s/s * ((P[l] - P[s]) - s (C[l] - C[s]))`` with ``P[d] = sum_{j<=d} p^j``.
    """
    n_pairs = len(length_a)
    short = np.minimum(length_a, length_b)
    long_ = np.maximum(length_a, length_b)
    harmonic = _harmonic(p, int(long_.max()) if n_pairs else 0)
    x_l = np.bincount(shared_owner, minlength=n_pairs).astype(float)
    x_s = np.bincount(
        shared_owner, weights=(shared_max_rank <= short[shared_owner]).astype(float), minlength=n_pairs
    )
    harmonic_at_max_rank = np.bincount(shared_owner, weights=harmonic[shared_max_rank - 1], minlength=n_pairs)
    return _rbo_from_sums(x_l, x_s, harmonic_at_max_rank, length_a, length_b, p)


def _harmonic(p: float, depth: int) -> np.ndarray:
    """``C[d] = sum_{j<=d} p^j / j`` for d = 0..depth (C[0] = 0)."""
    powers = p ** np.arange(0, depth + 1, dtype=float)
    powers[0] = 0.0
    harmonic: np.ndarray = np.cumsum(powers / np.maximum(np.arange(depth + 1), 1))
    return harmonic


def _rbo_from_sums(x_l: np.ndarray, x_s: np.ndarray, harmonic_at_max_rank: np.ndarray,
                   length_a: np.ndarray, length_b: np.ndarray, p: float) -> np.ndarray:
    """RBO_ext per pair from three sums over its shared items (see :func:`_rbo_closed_form`).

    ``x_l``: shared items; ``x_s``: those whose worse rank is within the shorter list;
    ``harmonic_at_max_rank``: ``sum C[m - 1]`` over them (``m`` the worse rank).
    """
    short = np.minimum(length_a, length_b)
    long_ = np.maximum(length_a, length_b)
    depth = int(long_.max()) if len(long_) else 0
    harmonic = _harmonic(p, depth)
    powers = p ** np.arange(0, depth + 1, dtype=float)
    powers[0] = 0.0
    geometric = np.cumsum(powers)
    sum_agreement = x_l * harmonic[long_] - harmonic_at_max_rank
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = x_s / short * ((geometric[long_] - geometric[short]) - short * (harmonic[long_] - harmonic[short]))
        value = (1 - p) / p * (sum_agreement + tail) + ((x_l - x_s) / long_ + x_s / short) * p**long_
    value = np.where(short == 0, np.where(long_ == 0, 1.0, 0.0), value)
    clipped: np.ndarray = np.clip(value, 0.0, 1.0)
    return clipped


def _check_overlap_arguments(recs: pd.DataFrame, by: str, metric: str, k: int | None, p: float) -> None:
    require_columns(recs, [*LIST_COLUMNS, by], "overlap_matrix")
    if metric not in ("jaccard", "overlap", "rbo"):
        raise ValueError(f"metric must be 'jaccard', 'overlap' or 'rbo', got {metric!r}")
    _check_k(k)
    if metric == "rbo":
        _check_p(p)


def _overlap_groups(values: pd.Series, name: str) -> tuple[np.ndarray, pd.Index]:
    """The group number of each row and the groups, sorted (first-appearance order when they do not sort)."""
    n_rows = len(values)
    value_code, value_uniques = codes(values)
    present = np.flatnonzero(np.bincount(value_code, minlength=len(value_uniques)))
    try:
        groups = sorted(value_uniques[present])
    except TypeError:  # values that do not sort keep first-appearance order (as pd.unique)
        first_row = np.full(len(value_uniques), n_rows, dtype=np.int64)
        first_row[value_code[::-1]] = np.arange(n_rows - 1, -1, -1)  # the last write is the first row
        groups = list(value_uniques[present[np.argsort(first_row[present], kind="stable")]])
    group_index = pd.Index(groups, name=name)
    value_to_group = np.full(len(value_uniques), -1, dtype=np.int64)
    value_to_group[present] = group_index.get_indexer(pd.Index(list(value_uniques[present]), dtype=object))
    if np.array_equal(value_to_group, np.arange(len(value_uniques))):
        return value_code, group_index
    return value_to_group[value_code], group_index


def _shared_user_counts(has_list: np.ndarray) -> np.ndarray:
    """Groups × groups: users with a list in both groups (a users × groups bool matrix in)."""
    n_groups = has_list.shape[1]
    counts = np.zeros((n_groups, n_groups), dtype=np.int64)
    for i in range(n_groups):
        for j in range(i, n_groups):
            counts[i, j] = counts[j, i] = np.count_nonzero(has_list[:, i] & has_list[:, j])
    return counts


class _Lists(NamedTuple):
    """Every user's lists, each item once at its best rank, sorted by (user, item, group).

    ``user``, ``group``, ``user_item`` (one number per (user, item)) and ``position``
    (1-based rank within the de-duplicated list) are per sorted row; ``lengths`` is
    users × groups.
    """

    user: np.ndarray
    group: np.ndarray
    user_item: np.ndarray
    position: np.ndarray
    lengths: np.ndarray


def _distinct_lists(user: np.ndarray, group: np.ndarray, rank: np.ndarray, item: np.ndarray, n_groups: int) -> _Lists:
    """Sort the rows so items two lists of a user share become neighbours; drop repeats.

    Rows are first put in (user, group, rank) order (tables already emit it, so that
    is checked first).  One sort by (user, item, group) then puts the rows of one
    (user, item) together ordered by group, a repeated item's best-ranked row first.
    """
    n_users = int(user.max()) + 1 if len(user) else 0
    rank_code = rank - rank.min() if len(rank) else rank
    if not is_sorted(user, group, rank_code):
        order = sort_order(user, group, rank_code)
        user, group, item = user[order], group[order], item[order]
    list_key = user * max(n_groups, 1) + group
    s_row = sort_order(user, item, group)
    s_user, s_group = user[s_row], group[s_row]
    s_user_item = np.cumsum(run_starts(s_user, item[s_row])) - 1
    # lists are compared as rankings of distinct items: keep each item's best rank
    repeat = ~run_starts(s_user_item, s_group)
    if repeat.any():
        keep = np.ones(len(user), dtype=bool)
        keep[s_row[repeat]] = False
        new_row = np.cumsum(keep) - 1
        list_key = list_key[keep]
        s_row, s_user, s_group, s_user_item = new_row[s_row[~repeat]], s_user[~repeat], s_group[~repeat], s_user_item[~repeat]
    # 1-based position of each row within its (user, group) list after de-duplication
    starts = run_starts(list_key)
    position = np.arange(len(list_key)) - np.flatnonzero(starts)[np.cumsum(starts) - 1] + 1
    lengths = np.bincount(list_key, minlength=n_users * n_groups).reshape(n_users, n_groups)
    return _Lists(s_user, s_group, s_user_item, position[s_row], lengths)


def _shared_items(lists: _Lists, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every item a user's two lists share: its user, its worse rank of the two, and where each pair of groups starts.

    Rows ``d`` apart in the same (user, item) run are an item two groups share.  The
    results are ordered by (pair of groups, user, item) as the per-pair sums expect;
    the rows of groups ``(i, j)`` are ``bounds[i * n_groups + j]:bounds[i * n_groups + j + 1]``.
    """
    heads: list[np.ndarray] = []
    distances: list[np.ndarray] = []
    for apart in range(1, n_groups):
        first = np.flatnonzero(lists.user_item[apart:] == lists.user_item[:-apart])
        if not len(first):
            break
        heads.append(first)
        distances.append(np.full(len(first), apart, dtype=np.int64))
    head = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    distance = np.concatenate(distances) if distances else np.zeros(0, np.int64)
    pair = lists.group[head] * n_groups + lists.group[head + distance]
    order = sort_order(pair, head)
    head, distance, pair = head[order], distance[order], pair[order]
    max_rank = np.maximum(lists.position[head], lists.position[head + distance])
    return lists.user[head], max_rank, np.searchsorted(pair, np.arange(n_groups * n_groups + 1))


def _mean_similarities(lists: _Lists, counts: np.ndarray, metric: Metric, p: float) -> np.ndarray:
    """Groups × groups: the mean over shared users of ``metric`` between their two lists."""
    n_groups = len(counts)
    shared_user, shared_max_rank, pair_bounds = _shared_items(lists, n_groups)
    values = np.full((n_groups, n_groups), np.nan)
    for i in range(n_groups):
        if counts[i, i]:
            values[i, i] = 1.0
        for j in range(i + 1, n_groups):
            if not counts[i, j]:
                continue
            length_a, length_b = lists.lengths[:, i], lists.lengths[:, j]
            both = (length_a > 0) & (length_b > 0)
            rows = slice(pair_bounds[i * n_groups + j], pair_bounds[i * n_groups + j + 1])
            # renumber shared users 0..n_shared-1 so per-user arrays stay compact
            owner = (np.cumsum(both) - 1)[shared_user[rows]]
            length_a, length_b = length_a[both], length_b[both]
            if metric == "rbo":
                scores = _rbo_closed_form(shared_max_rank[rows], owner, length_a, length_b, float(p))
            else:
                inter = np.bincount(owner, minlength=int(counts[i, j])).astype(float)
                if metric == "jaccard":
                    scores = inter / (length_a + length_b - inter)
                else:
                    scores = inter / np.minimum(length_a, length_b)
            values[i, j] = values[j, i] = float(scores.mean())
    return values


@deprecated_arguments("by", "metric")
@shared_docs(recs=_RECS_BY_DOCS)
def overlap_matrix(
    recs: pd.DataFrame,
    *,
    by: str = "rec_id",
    metric: Metric = "jaccard",
    k: int | None = None,
    p: float = 0.9,
    return_counts: bool = False,
) -> pd.DataFrame:
    """Mean similarity between the lists of every pair of groups, over shared users.

    Groups are the values of ``by`` (``rec_id``, ``recommendation_source``,
    ``is_control``, ``child_rec_id``…).  For a pair of groups, each user who has a
    list in both is scored with ``metric`` and the scores are averaged.  When a user
    has several lists in one group (two rec sets served by the same model, say) they
    are merged into one list ordered by rank, each item kept at its best rank.

    Vectorised: no Python loop per user.  One integer sort finds every item two of
    a user's lists share; the rest is bincounts (about 0.2 s for 100,000 users ×
    3 sets × 10 items, RBO included).

    Parameters
    ----------
    {recs}
    by : str, default "rec_id"
        Column whose values are the groups to compare.
    metric : {{"jaccard", "overlap", "rbo"}}
        Per-user similarity, see :func:`jaccard`, :func:`overlap`, :func:`rbo`.
    k : int, optional
        For jaccard and overlap: compare only the top ``k`` ranks of each list.
    p : float, default 0.9
        RBO persistence.
    return_counts : bool, default False
        Deprecated: returns ``(matrix, counts)``, a tuple instead of a frame.  Use
        :func:`overlap_counts` or ``result.attrs["n_users"]`` for the counts.

    Returns
    -------
    DataFrame
        A square frame, index and columns the group values (sorted, both named after
        ``by``): the mean similarity, 1.0 on the diagonal where the group has users,
        NaN for a pair with no shared users.  ``result.attrs["n_users"]`` holds the
        shared-user counts (the frame :func:`overlap_counts` returns, of the lists
        compared) and ``result.attrs["metric"]`` the metric.
    """
    _check_overlap_arguments(recs, by, metric, k, p)
    frame = recs[[*ID_COLUMNS, by, "rank", "item"]]
    if k is not None and metric != "rbo":
        frame = frame[frame["rank"] <= k]
    group, group_index = _overlap_groups(frame[by], by)
    lists = _distinct_lists(user_codes(frame), group, frame["rank"].to_numpy(dtype=np.int64),
                            codes(frame["item"])[0], len(group_index))
    counts = _shared_user_counts(lists.lengths > 0)
    values = _mean_similarities(lists, counts, metric, p)
    result = pd.DataFrame(values, index=group_index, columns=group_index.copy())
    count_frame = pd.DataFrame(counts, index=group_index, columns=group_index.copy())
    result.attrs["n_users"] = count_frame
    result.attrs["metric"] = metric
    if return_counts:
        warnings.warn("amptools.metrics.overlap_matrix(): return_counts=True is deprecated (it returns a tuple); "
                      "use amptools.metrics.overlap_counts(recs, by=...) or result.attrs['n_users']",
                      DeprecationWarning, stacklevel=3)
        return cast(pd.DataFrame, (result, count_frame))  # the deprecated tuple
    return result


@shared_docs(recs=_RECS_BY_DOCS)
def overlap_counts(recs: pd.DataFrame, *, by: str = "rec_id") -> pd.DataFrame:
    """Users with a list in both groups, for every pair of groups of ``by``.

    The counts behind :func:`overlap_matrix` (each cell's mean is over these users),
    as a frame of the same shape.

    Parameters
    ----------
    {recs}
    by : str, default "rec_id"
        Column whose values are the groups.

    Returns
    -------
    DataFrame
        Square, int64; index and columns the group values (sorted, both named after
        ``by``), the diagonal holds each group's user count.  Equal to
        ``overlap_matrix(recs, by=by).attrs["n_users"]``.
    """
    require_columns(recs, [*LIST_COLUMNS, by], "overlap_counts")
    group, group_index = _overlap_groups(recs[by], by)
    user = user_codes(recs)
    has_list = np.zeros((int(user.max()) + 1 if len(user) else 0, len(group_index)), dtype=bool)
    has_list[user, group] = True
    counts = _shared_user_counts(has_list)
    return pd.DataFrame(counts, index=group_index, columns=group_index.copy())


# ----------------------------------------------------------------------------------
# coverage, item frequency, popularity
# ----------------------------------------------------------------------------------


def _gini(counts: np.ndarray) -> float:
    """Gini index of non-negative counts: 0 perfectly even, (n-1)/n all on one item."""
    n = len(counts)
    total = counts.sum()
    if n == 0 or total == 0:
        return float("nan")
    ordered = np.sort(counts.astype(float))
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * ordered).sum() / (n * total))


def _normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of the counts divided by log(n): 1 perfectly even, 0 one item."""
    n = len(counts)
    total = counts.sum()
    if n == 0 or total == 0:
        return float("nan")
    if n == 1:
        return 1.0
    shares = counts[counts > 0] / total
    return float(-(shares * np.log(shares)).sum() / np.log(n))


def _list_keys(recs: pd.DataFrame) -> list[str]:
    """Columns that identify one list: the user and, when present, the rec set."""
    return [*ID_COLUMNS, "rec_id"] if "rec_id" in recs.columns else list(ID_COLUMNS)


@deprecated_arguments("catalog")
def coverage(
    recs: pd.DataFrame,
    *,
    catalog: Iterable[Hashable] | None = None,
    by: str | Sequence[str] | None = "recommendation_source",
) -> pd.DataFrame:
    """Catalog coverage and evenness of recommendations, overall and per group.

    * **coverage** — distinct recommended catalog items / catalog size.
    * **gini** — Gini index of the items' recommendation counts over the whole
      catalog (never-recommended items count as zeros): 0 when every catalog item is
      recommended equally often, close to 1 when a few items take everything.
    * **entropy** — Shannon entropy of the same counts divided by ``log(catalog
      size)``: 1 when perfectly even, 0 when one item takes everything.

    Each distinct item counts once per list (duplicates ignored).

    Parameters
    ----------
    recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``rank``,
        ``item`` and the ``by`` column(s).
    catalog : iterable, optional
        All items that could be recommended.  Defaults to every item seen in
        ``recs`` (then coverage of the overall row is 1.0 by construction).  Items
        recommended but not in the catalog are left out of coverage, Gini and
        entropy and counted in ``n_items_outside_catalog``.
    by : str or list of str or None, default "recommendation_source"
        Also report one row per value (or combination of values) of these columns.
        ``None`` gives the overall row only.

    Returns
    -------
    DataFrame
        One row for everything (``group_by == "overall"``, ``group == "all"``) then
        one per group, with columns:

        - ``group_by`` (str): "overall" or the ``by`` column name(s) joined by ", ".
        - ``group`` (object): the group's value (a tuple for several ``by`` columns).
        - ``n_users`` (int64): distinct (user_id, device_id) pairs.
        - ``n_lists`` (int64): distinct lists (user × rec set).
        - ``n_recommendations`` (int64): list entries, duplicates within a list dropped.
        - ``n_items`` (int64): distinct recommended items in the catalog.
        - ``n_items_outside_catalog`` (int64): distinct recommended items not in it.
        - ``catalog_size`` (int64).
        - ``coverage``, ``gini``, ``entropy`` (float64): see above; NaN when empty.
    """
    by_columns = _as_list(by)
    require_columns(recs, [*LIST_COLUMNS, *by_columns], "coverage")
    frame = _prepared(recs, by_columns)
    items = frame["item"].astype(object).to_numpy()
    if catalog is None:
        catalog_index = pd.Index(pd.unique(items), dtype=object)
    else:
        catalog_index = pd.Index(list(dict.fromkeys(catalog)), dtype=object)
    catalog_size = len(catalog_index)
    item_position = catalog_index.get_indexer(items)
    user_code = frame["_user"].to_numpy()
    list_code = frame["_list"].to_numpy()

    def one_row(rows: np.ndarray, group_by: str, group: object) -> dict[str, object]:
        positions = item_position[rows]
        inside = positions >= 0
        counts = np.bincount(positions[inside], minlength=catalog_size)
        return {
            "group_by": group_by,
            "group": group,
            "n_users": len(np.unique(user_code[rows])),
            "n_lists": len(np.unique(list_code[rows])),
            "n_recommendations": len(positions),
            "n_items": int((counts > 0).sum()),
            "n_items_outside_catalog": len(pd.unique(items[rows][~inside])),
            "catalog_size": catalog_size,
            "coverage": (counts > 0).sum() / catalog_size if catalog_size else float("nan"),
            "gini": _gini(counts),
            "entropy": _normalised_entropy(counts),
        }

    rows = [one_row(np.arange(len(frame)), "overall", "all")]
    if by_columns and len(frame):
        grouped = frame.groupby(by_columns if len(by_columns) > 1 else by_columns[0], observed=True, sort=True, dropna=False)
        for value, index in grouped.indices.items():
            rows.append(one_row(np.asarray(index), ", ".join(by_columns), value))
    result = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    int_columns = ["n_users", "n_lists", "n_recommendations", "n_items", "n_items_outside_catalog", "catalog_size"]
    result[int_columns] = result[int_columns].astype("int64")
    result[["coverage", "gini", "entropy"]] = result[["coverage", "gini", "entropy"]].astype("float64")
    result["group_by"] = result["group_by"].astype(object)
    result["group"] = result["group"].astype(object)
    return result


def item_frequency(
    recs: pd.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
    top_n: int | None = None,
) -> pd.DataFrame:
    """How often each item is recommended, optionally per group.

    Parameters
    ----------
    recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``rank``,
        ``item`` and the ``by`` column(s).
    by : str or list of str, optional
        Count separately per value of these columns (e.g. ``"rec_id"``).
    top_n : int, optional
        Keep only the ``top_n`` most frequent items of each group.

    Returns
    -------
    DataFrame
        The ``by`` columns (if any), then:

        - ``item`` (object): the item.
        - ``n_lists`` (int64): lists (user × rec set) holding the item.
        - ``share_of_lists`` (float64): ``n_lists`` / lists in the group.
        - ``share_of_recommendations`` (float64): ``n_lists`` / all list entries of the group.

        Sorted by group, then by ``n_lists`` descending (ties by item).
    """
    by_columns = _as_list(by)
    require_columns(recs, [*LIST_COLUMNS, *by_columns], "item_frequency")
    frame, item_uniques = _prepared_items(recs, by_columns)
    out_columns = [*by_columns, *ITEM_FREQUENCY_COLUMNS]
    if frame.empty:
        empty = {c: pd.Series(dtype=recs[c].dtype) for c in by_columns}
        empty.update(item=pd.Series(dtype=object), n_lists=pd.Series(dtype="int64"),
                     share_of_lists=pd.Series(dtype="float64"), share_of_recommendations=pd.Series(dtype="float64"))
        return pd.DataFrame(empty)[out_columns]
    item_code = frame["_item"].to_numpy()
    n_items = int(item_code.max()) + 1
    if by_columns:
        group_code, group_values = sorted_group_codes(frame, by_columns)
    else:
        group_code = np.zeros(len(frame), dtype=np.int64)
        group_values = pd.DataFrame(index=range(1))
    n_groups = len(group_values)
    pair_counts = np.bincount(group_code * n_items + item_code, minlength=n_groups * n_items)
    nonzero = np.flatnonzero(pair_counts)
    pair_group, pair_item = np.divmod(nonzero, n_items)
    # lists per group; a list usually lies in one group, which one bincount settles
    list_code = frame["_list"].to_numpy()
    n_lists = int(list_code.max()) + 1
    group_of_list = np.zeros(n_lists, dtype=np.int64)
    group_of_list[list_code] = group_code
    if np.array_equal(group_of_list[list_code], group_code):
        lists_per_group = np.bincount(group_of_list, minlength=n_groups)
    else:
        order = sort_order(group_code, list_code)
        sorted_group = group_code[order]
        lists_per_group = np.bincount(sorted_group[run_starts(sorted_group, list_code[order])], minlength=n_groups)
    n_lists_group = lists_per_group[pair_group]
    n_entries_group = np.bincount(group_code, minlength=n_groups)[pair_group]
    n_lists_pair = pair_counts[nonzero].astype(np.int64)
    # sort by group, then count descending, then item name (as text)
    name_text = np.array([str(name) for name in item_uniques], dtype=object)
    name_rank = np.empty(len(name_text), dtype=np.int64)
    name_rank[np.argsort(name_text, kind="stable")] = np.arange(len(name_text))
    order = np.lexsort((name_rank[pair_item], -n_lists_pair, pair_group))
    if top_n is not None:
        sorted_group = pair_group[order]
        group_start = np.searchsorted(sorted_group, sorted_group, side="left")
        order = order[np.arange(len(order)) - group_start < top_n]
    counts = group_values.iloc[pair_group[order]].reset_index(drop=True)
    counts["item"] = np.asarray(item_uniques, dtype=object)[pair_item[order]]
    counts["n_lists"] = n_lists_pair[order]
    counts["share_of_lists"] = n_lists_pair[order] / n_lists_group[order]
    counts["share_of_recommendations"] = n_lists_pair[order] / n_entries_group[order]
    return counts[out_columns]


def _global_popularity_rank(frame: pd.DataFrame, item_popularity: pd.Series | None) -> pd.Series:
    """Popularity rank per item (1 = most popular); ties share the best rank."""
    if item_popularity is None:
        popularity_counts = frame["item"].value_counts()
    else:
        popularity_counts = pd.Series(item_popularity).astype(float)
        popularity_counts.index = popularity_counts.index.astype(object)
    return popularity_counts.rank(ascending=False, method="min")


@deprecated_arguments("by")
def popularity(
    recs: pd.DataFrame,
    *,
    by: str | Sequence[str] = "recommendation_source",
    top_fraction: float = 0.2,
    item_popularity: pd.Series | None = None,
) -> pd.DataFrame:
    """Popularity bias and long-tail figures per model (or any grouping).

    The Profile API carries no interaction data, so by default an item's popularity
    is how often it is recommended across the **whole** table (all groups); pass
    ``item_popularity`` (e.g. purchase counts indexed by item) to use real
    popularity instead.

    Parameters
    ----------
    recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``rank``,
        ``item`` and the ``by`` column(s).
    by : str or list of str, default "recommendation_source"
        One row per value of these columns.
    top_fraction : float, default 0.2
        ``top_share`` is the share of a group's recommendations that go to its
        ``top_fraction`` most recommended items (at least one item).
    item_popularity : Series, optional
        Popularity per item (higher = more popular).  Items missing from it get
        NaN popularity rank and are left out of the rank averages.

    Returns
    -------
    DataFrame
        The ``by`` columns, then:

        - ``n_recommendations`` (int64): list entries, duplicates within a list dropped.
        - ``n_items`` (int64): distinct items recommended.
        - ``top_share`` (float64): share of recommendations going to the top
          ``top_fraction`` of the group's items (0.2 means "top 20 %").
        - ``mean_popularity_rank`` (float64): mean popularity rank (1 = most popular)
          of the recommended items, weighted by how often each is recommended; lower
          means the group leans on popular items.
        - ``median_popularity_rank`` (float64): the same, median.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    by_columns = _as_list(by)
    if not by_columns:
        raise ValueError("popularity() needs at least one `by` column, e.g. 'recommendation_source'")
    require_columns(recs, [*LIST_COLUMNS, *by_columns], "popularity")
    frame = _prepared(recs, by_columns)
    frame["_popularity_rank"] = frame["item"].astype(object).map(_global_popularity_rank(frame, item_popularity)).astype(float)
    rows = []
    for value, group in frame.groupby(by_columns if len(by_columns) > 1 else by_columns[0], observed=True, sort=True, dropna=False):
        counts = np.sort(np.bincount(group["_item"].to_numpy()))[::-1]
        counts = counts[counts > 0]
        n_top = max(1, int(np.ceil(top_fraction * len(counts) - 1e-9)))
        ranks = group["_popularity_rank"].dropna()
        values = value if isinstance(value, tuple) and len(by_columns) > 1 else (value,)
        rows.append(
            {
                **dict(zip(by_columns, values)),
                "n_recommendations": len(group),
                "n_items": len(counts),
                "top_share": counts[:n_top].sum() / counts.sum(),
                "mean_popularity_rank": ranks.mean() if len(ranks) else np.nan,
                "median_popularity_rank": ranks.median() if len(ranks) else np.nan,
            }
        )
    result = pd.DataFrame(rows, columns=[*by_columns, *POPULARITY_COLUMNS])
    result[["n_recommendations", "n_items"]] = result[["n_recommendations", "n_items"]].astype("int64")
    float_columns = ["top_share", "mean_popularity_rank", "median_popularity_rank"]
    result[float_columns] = result[float_columns].astype("float64")
    return result


@deprecated_arguments("by")
def long_tail(recs: pd.DataFrame, *, by: str | Sequence[str] | None = "recommendation_source") -> pd.DataFrame:
    """Long-tail curve: items ranked by recommendation count vs cumulative share.

    Parameters
    ----------
    recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``rank``,
        ``item`` and the ``by`` column(s).
    by : str or list of str or None, default "recommendation_source"
        One curve per value of these columns; ``None`` for a single curve.

    Returns
    -------
    DataFrame
        The ``by`` columns (if any), then one row per (group, item):

        - ``item_rank`` (int64): 1 for the group's most recommended item.
        - ``item`` (object).
        - ``count`` (int64): lists holding the item.
        - ``item_fraction`` (float64): ``item_rank`` / distinct items of the group.
        - ``cumulative_share`` (float64): share of the group's recommendations that
          go to items ranked ``item_rank`` or better; reaches 1.0 at the last item.
    """
    by_columns = _as_list(by)
    frequency = item_frequency(recs, by=by_columns or None)
    frequency = frequency.rename(columns={"n_lists": "count"})
    if by_columns:
        grouped = frequency.groupby(by_columns, observed=True, sort=False, dropna=False)
        frequency["item_rank"] = grouped.cumcount() + 1
        n_items = grouped["item"].transform("size")
        frequency["cumulative_share"] = grouped["count"].cumsum() / grouped["count"].transform("sum")
    else:
        frequency["item_rank"] = np.arange(1, len(frequency) + 1)
        n_items = len(frequency)
        frequency["cumulative_share"] = frequency["count"].cumsum() / frequency["count"].sum() if len(frequency) else pd.Series(dtype=float)
    frequency["item_rank"] = frequency["item_rank"].astype("int64")
    frequency["count"] = frequency["count"].astype("int64")
    frequency["item_fraction"] = (frequency["item_rank"] / n_items).astype("float64")
    frequency["cumulative_share"] = frequency["cumulative_share"].astype("float64")
    return frequency[[*by_columns, *LONG_TAIL_COLUMNS]].reset_index(drop=True)


# ----------------------------------------------------------------------------------
# personalization
# ----------------------------------------------------------------------------------


def _personalization_from_codes(list_codes: np.ndarray, item_codes: np.ndarray) -> float:
    """1 - mean pairwise cosine over lists, from (list, item) pairs already de-duplicated.

    With ``y_u = x_u / sqrt(|x_u|)`` (binary ``x_u``, so ``||y_u|| = 1``):
    ``sum_{u != v} cos(u, v) = ||sum_u y_u||^2 - N`` and
    ``||sum_u y_u||^2 = sum_items (sum_{u holding item} 1/sqrt(|x_u|))^2``.
    Linear in the number of (list, item) pairs; no N × N matrix.
    """
    if len(list_codes) == 0:
        return float("nan")
    list_codes = codes(list_codes)[0]
    lengths = np.bincount(list_codes)
    n_lists = len(lengths)
    if n_lists < 2:
        return float("nan")
    weights = 1.0 / np.sqrt(lengths[list_codes])
    item_sums = np.bincount(codes(item_codes)[0], weights=weights)
    pair_sum = float(np.dot(item_sums, item_sums)) - n_lists
    mean_cosine = pair_sum / (n_lists * (n_lists - 1.0))
    return float(1.0 - mean_cosine)


def personalization_score(recs: pd.DataFrame | Iterable[Iterable[Hashable]]) -> float:
    """Personalization of all lists pooled: 1 − mean pairwise cosine similarity.

    One number, where :func:`personalization` gives one per group.  What a list is:

    * a **DataFrame** (the recommendations table): one list per
      ``(user_id, device_id, rec_id)`` (without a ``rec_id`` column, one per user);
      every list is compared with every other, whatever its rec set.
    * a **list of lists** (or any iterable of iterables): each inner list is one
      user's list.

    Lists are binary item vectors (duplicates ignored); empty lists are left out.
    Computed exactly in time linear in users × list length.

    Parameters
    ----------
    recs : DataFrame or iterable of iterables
        The recommendations table (needs ``user_id``, ``device_id`` and ``item``),
        or plain lists.

    Returns
    -------
    float
        In [0, 1]: 0 when everyone gets the same items, near 1 when lists barely
        overlap; NaN for fewer than two lists.
    """
    if isinstance(recs, pd.DataFrame):
        require_columns(recs, [*ID_COLUMNS, "item"], "personalization_score")
        frame = _prepared(recs, [])
        return _personalization_from_codes(frame["_list"].to_numpy(), frame["_item"].to_numpy())
    list_codes: list[int] = []
    items: list[Hashable] = []
    for position, one_list in enumerate(recs):
        if isinstance(one_list, (str, bytes)):
            raise TypeError("personalization_score() expects a list of lists of items, got a list of strings")
        distinct = _distinct(one_list)
        list_codes.extend([position] * len(distinct))
        items.extend(distinct)
    return _personalization_from_codes(np.asarray(list_codes, dtype=np.int64), pd.Index(items, dtype=object))


@deprecated_arguments("by")
def personalization(
    recs: pd.DataFrame,
    *,
    by: str | Sequence[str] | None = "rec_id",
) -> pd.Series:
    """Personalization per group: 1 − mean pairwise cosine similarity of users' lists.

    Lists are binary item vectors (duplicates ignored), so the cosine of two lists
    is ``|A ∩ B| / sqrt(|A| |B|)``.  0 means everyone gets the same items, values
    near 1 mean lists barely overlap.  Computed exactly in time linear in
    users × list length (see the identity in the source), so a million users is a
    matter of seconds — there is no user × user matrix.

    A list is one ``(user_id, device_id, rec_id)`` of the recommendations table (a
    user's list is per rec set; without a ``rec_id`` column, one list per user), and
    the measure is computed separately within each group of ``by``.  For one number
    over all lists pooled (or over plain lists of items) use
    :func:`personalization_score`.

    Empty lists are left out (their cosine is undefined).  Fewer than two lists
    in a group gives NaN.

    Parameters
    ----------
    recs : DataFrame
        The recommendations table; needs ``user_id``, ``device_id``, ``item`` and
        the ``by`` column(s).
    by : str or list of str, default "rec_id"
        Compute within each value of these columns.  ``by=None`` (and plain lists
        instead of a table) are deprecated: they return a float, the value of
        :func:`personalization_score`, with a DeprecationWarning.

    Returns
    -------
    Series
        float64, named ``"personalization"``, indexed by the group values (index
        named after ``by``; a MultiIndex for several columns).
    """
    by_columns = _as_list(by)
    if not isinstance(recs, pd.DataFrame) or not by_columns:
        warnings.warn("amptools.metrics.personalization(): plain lists or by=None return a float, not a Series "
                      "(deprecated); use amptools.metrics.personalization_score() for one number",
                      DeprecationWarning, stacklevel=3)
        return cast(pd.Series, personalization_score(recs))  # the deprecated float
    require_columns(recs, [*ID_COLUMNS, "item", *by_columns], "personalization")
    frame = _prepared(recs, by_columns)
    values = {}
    list_code, item_code = frame["_list"].to_numpy(), frame["_item"].to_numpy()
    for value, index in frame.groupby(by_columns if len(by_columns) > 1 else by_columns[0], observed=True, sort=True, dropna=False).indices.items():
        values[value] = _personalization_from_codes(list_code[index], item_code[index])
    index = pd.Index(list(values), name=by_columns[0]) if len(by_columns) == 1 else pd.MultiIndex.from_tuples(list(values), names=by_columns)
    return pd.Series(list(values.values()), index=index, name="personalization", dtype="float64")


# ----------------------------------------------------------------------------------
# drift: the same users' lists in two snapshots
# ----------------------------------------------------------------------------------

#: Columns returned by :func:`drift` (after ``user_id``, ``device_id`` and the ``by`` column).
DRIFT_COLUMNS: tuple[str, ...] = ("n_before", "n_after", "jaccard", "rbo", "n_added", "n_removed",
                                  "top_changed", "changed")
#: Columns returned by :func:`drift_summary` (after the ``by`` column).
DRIFT_SUMMARY_COLUMNS: tuple[str, ...] = (
    "n_users_before", "n_users_after", "n_users_compared", "n_users_only_before", "n_users_only_after",
    "share_changed", "mean_jaccard", "mean_rbo", "n_items_before", "n_items_after",
    "n_items_entered", "n_items_left",
)
#: Columns returned by :func:`item_churn` (after the ``by`` column).
ITEM_CHURN_COLUMNS: tuple[str, ...] = ("item", "n_before", "n_after", "n_entered", "n_left", "n_stayed",
                                       "mean_rank_before", "mean_rank_after", "mean_shift")

_DRIFT_DOCS = """before, after : DataFrame
        The recommendations tables of two snapshots (``amptools.tables.recommendations``
        of two fetches, or ``Snapshot.recommendations``); each needs ``user_id``,
        ``device_id``, ``rank``, ``item`` and the ``by`` column.
    by : str, default "rec_id"
        The column naming a user's lists (``rec_id``, ``recommendation_source``...): a
        user's list in one set is compared with the same user's list in the same set.
    k : int, optional
        Compare only the top ``k`` distinct items of each list (jaccard@k; RBO and the
        items added and removed are of the top ``k`` too)."""
_DRIFT_P_DOCS = """p : float, default 0.9
        RBO persistence (see :func:`rbo`)."""

# Item codes in the list matrices: half the memory traffic of int64 (a catalogue of up to
# two billion items).
_ITEM_CODE = np.int32
# A list pair's comparison matrix is lists × width × width booleans: chunks keep it small.
_PAIR_CELLS_PER_CHUNK = 4_000_000


class _Snapshot(NamedTuple):
    """One table's lists as a matrix: one row per list, its distinct items by position."""

    keys: np.ndarray  # the list's key (user × set), sorted, unique
    items: np.ndarray  # lists × width item codes, -1 after the list's end
    lengths: np.ndarray
    first_row: np.ndarray  # a row of the table holding the list (for its ids)


def _list_matrix(recs: pd.DataFrame, user: np.ndarray, group: np.ndarray, item: np.ndarray,
                 n_groups: int, k: int | None) -> _Snapshot:
    """The lists of one table, items in rank order, repeats dropped, cut at ``k``."""
    n_rows = len(recs)
    if n_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Snapshot(empty, np.zeros((0, 0), dtype=_ITEM_CODE), empty, empty)
    rank = recs["rank"].to_numpy(dtype=np.int64)
    key = user * n_groups + group
    rank_code = rank - rank.min()
    row: np.ndarray | None = None  # None: the table is in list order already (tables emit it so)
    if not is_sorted(key, rank_code):
        row = sort_order(key, rank_code)
        key, item = key[row], item[row]
    starts = run_starts(key)
    start_row = np.flatnonzero(starts)
    width = int(np.diff(start_row, append=n_rows).max())
    if len(start_row) * width == n_rows:  # every list equally long (the usual case): a reshape
        items = item.reshape(len(start_row), width).astype(_ITEM_CODE, copy=False)
        lengths = np.full(len(start_row), width, dtype=np.int64)
    else:
        list_index = np.cumsum(starts) - 1
        lengths = np.bincount(list_index)
        items = np.full((len(start_row), width), -1, dtype=_ITEM_CODE)
        items[list_index, np.arange(n_rows) - start_row[list_index]] = item
    # A list is compared as a ranking of distinct items: a repeat keeps its best rank.
    repeated = _has_repeated_items(items)
    if repeated.any():
        items = items.copy()  # a reshape may share the caller's codes
        sub = items[repeated]
        earlier = np.triu(np.ones((width, width), dtype=bool), 1)  # [j, i]: position j before i
        again = ((sub[:, :, None] == sub[:, None, :]) & earlier[None, :, :]).any(axis=1) & (sub >= 0)
        sub = np.where(again, -1, sub)
        # move the kept items left, in order: a stable sort of "is a gap"
        order = np.argsort(sub < 0, axis=1, kind="stable")
        items[repeated] = np.take_along_axis(sub, order, axis=1)
        lengths = (items >= 0).sum(axis=1)
    if k is not None:
        items = items[:, :k]
        lengths = np.minimum(lengths, k)
    return _Snapshot(key[start_row], items, lengths, start_row if row is None else row[start_row])


def _has_repeated_items(items: np.ndarray) -> np.ndarray:
    """Per list (row): whether an item occurs twice; column pairs for short lists, a row sort else."""
    width = items.shape[1]
    if width > 32:
        ordered = np.sort(items, axis=1)
        repeated: np.ndarray = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
        return repeated
    columns = np.ascontiguousarray(items.T)  # one contiguous array per position
    repeated = np.zeros(len(items), dtype=bool)
    for i in range(width):
        for j in range(i + 1, width):
            repeated |= (columns[i] == columns[j]) & (columns[i] >= 0)
    return repeated


class _Pairs(NamedTuple):
    """Every list present in both tables, side by side."""

    before: _Snapshot
    after: _Snapshot
    index_before: np.ndarray  # the pairs' rows of before.items / after.items
    index_after: np.ndarray
    group_values: pd.Index
    item_values: pd.Index
    n_groups: int

    def chunks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """Pairs in chunks, with each chunk's pairs × before-position × after-position "same item"."""
        width_before, width_after = self.before.items.shape[1], self.after.items.shape[1]
        step = max(1, _PAIR_CELLS_PER_CHUNK // max(width_before * width_after, 1))
        for start in range(0, len(self.index_before), step):
            rows = slice(start, start + step)
            a = self.before.items[self.index_before[rows]]
            b = self.after.items[self.index_after[rows]]
            yield rows, (a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)


def _pairs(before: pd.DataFrame, after: pd.DataFrame, by: str, k: int | None, function: str) -> _Pairs:
    for frame in (before, after):
        require_columns(frame, [*LIST_COLUMNS, by], function)
    _check_k(k)
    users, _ = shared_user_codes(before, after)
    (group_before, group_after), group_values = shared_codes(before[by], after[by])
    (item_before, item_after), item_values = shared_codes(before["item"], after["item"], sort=False)
    n_groups = max(len(group_values), 1)
    old = _list_matrix(before, users[0], group_before, item_before, n_groups, k)
    new = _list_matrix(after, users[1], group_after, item_after, n_groups, k)
    _, index_before, index_after = np.intersect1d(old.keys, new.keys, assume_unique=True, return_indices=True)
    return _Pairs(old, new, index_before, index_after, group_values, item_values, n_groups)


def _pair_scores(pairs: _Pairs, p: float) -> dict[str, np.ndarray]:
    """Per pair: the lengths, the shared count, jaccard, RBO and whether anything changed."""
    n_pairs = len(pairs.index_before)
    length_before = pairs.before.lengths[pairs.index_before]
    length_after = pairs.after.lengths[pairs.index_after]
    short = np.minimum(length_before, length_after)
    width_before, width_after = pairs.before.items.shape[1], pairs.after.items.shape[1]
    # the worse rank of an item at positions (i, j) of the two lists, and C[rank - 1] of RBO
    max_rank = np.maximum.outer(np.arange(1, width_before + 1), np.arange(1, width_after + 1))
    harmonic_of_rank = _harmonic(p, max(width_before, width_after))[max_rank - 1]
    shared = np.zeros(n_pairs, dtype=np.int64)
    within_short = np.zeros(n_pairs, dtype=np.int64)
    harmonic_sum = np.zeros(n_pairs)
    for rows, same in pairs.chunks():
        shared[rows] = same.sum(axis=(1, 2))
        within_short[rows] = (same & (max_rank[None] <= short[rows, None, None])).sum(axis=(1, 2))
        harmonic_sum[rows] = (same * harmonic_of_rank[None]).sum(axis=(1, 2))
    union = length_before + length_after - shared
    jaccard = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
    rbo_values = _rbo_from_sums(shared.astype(float), within_short.astype(float), harmonic_sum,
                                length_before, length_after, p)
    items_before = pairs.before.items[pairs.index_before]
    items_after = pairs.after.items[pairs.index_after]
    width = max(width_before, width_after)
    padded_before = np.pad(items_before, ((0, 0), (0, width - width_before)), constant_values=-1)
    padded_after = np.pad(items_after, ((0, 0), (0, width - width_after)), constant_values=-1)
    changed = (padded_before != padded_after).any(axis=1) if width else np.zeros(n_pairs, dtype=bool)
    top_changed = (padded_before[:, 0] != padded_after[:, 0]) if width else np.zeros(n_pairs, dtype=bool)
    return {"n_before": length_before, "n_after": length_after, "shared": shared, "jaccard": jaccard,
            "rbo": rbo_values, "changed": changed, "top_changed": top_changed}


def _group_column(values: pd.Index, codes_of_rows: np.ndarray, like: pd.Series) -> Any:
    """The ``by`` column of a result: its values by code, in the input's dtype where it can be."""
    column = pd.Series(np.asarray(values, dtype=object)[codes_of_rows] if len(values) else [], dtype=object)
    try:
        return column.astype(like.dtype) if not isinstance(like.dtype, pd.CategoricalDtype) else \
            pd.Categorical(column, categories=[v for v in values if not pd.isna(v)])
    except (TypeError, ValueError):
        return column


@shared_docs(drift=_DRIFT_DOCS, p=_DRIFT_P_DOCS)
def drift(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    by: str = "rec_id",
    k: int | None = None,
    p: float = 0.9,
) -> pd.DataFrame:
    """How much each user's list changed between two snapshots: one row per user × set in both.

    Exact and linear in users × list length: lists become rows of an item matrix and
    each pair is compared position by position (about 3 s for 1,000,000 users × 10
    items; ``benchmarks/bench_drift.py``).  Users with a list in only one snapshot have
    no row here; :func:`drift_summary` counts them.

    Parameters
    ----------
    {drift}
    {p}

    Returns
    -------
    DataFrame
        ``user_id``, ``device_id``, the ``by`` column, then:

        - ``n_before``, ``n_after`` (int64): distinct items of each list (at most ``k``).
        - ``jaccard`` (float64): ``|A ∩ B| / |A ∪ B|`` (1.0 for two empty lists).
        - ``rbo`` (float64): rank-biased overlap of the two rankings (:func:`rbo`).
        - ``n_added``, ``n_removed`` (int64): items in the new list and not the old, and
          the other way round.
        - ``top_changed`` (bool): the first item differs.
        - ``changed`` (bool): the lists differ in any item or position.

        Ordered by set, then by the users' order in ``before``.
    """
    _check_p(p)
    pairs = _pairs(before, after, by, k, "drift")
    scores = _pair_scores(pairs, float(p))
    keys = pairs.before.keys[pairs.index_before]
    group = keys % pairs.n_groups
    first_row = pairs.before.first_row[pairs.index_before]
    order = np.lexsort((first_row, group))
    rows = first_row[order]
    result = pd.DataFrame({
        "user_id": before["user_id"].iloc[rows].reset_index(drop=True),
        "device_id": before["device_id"].iloc[rows].reset_index(drop=True),
        by: _group_column(pairs.group_values, group[order], before[by]),
        "n_before": scores["n_before"][order].astype(np.int64),
        "n_after": scores["n_after"][order].astype(np.int64),
        "jaccard": scores["jaccard"][order].astype(np.float64),
        "rbo": scores["rbo"][order].astype(np.float64),
        "n_added": (scores["n_after"] - scores["shared"])[order].astype(np.int64),
        "n_removed": (scores["n_before"] - scores["shared"])[order].astype(np.int64),
        "top_changed": scores["top_changed"][order],
        "changed": scores["changed"][order],
    })
    return result


def _catalogue(snapshot: _Snapshot, n_groups: int, n_items: int) -> np.ndarray:
    """Groups × items: whether any list of the group holds the item."""
    present = np.zeros((n_groups, max(n_items, 1)), dtype=bool)
    if snapshot.items.size:
        group = np.repeat(snapshot.keys % n_groups, snapshot.items.shape[1])
        items = snapshot.items.ravel()
        present[group[items >= 0], items[items >= 0]] = True
    return present


@shared_docs(drift=_DRIFT_DOCS, p=_DRIFT_P_DOCS)
def drift_summary(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    by: str = "rec_id",
    k: int | None = None,
    p: float = 0.9,
) -> pd.DataFrame:
    """Per set: how many users' lists changed between two snapshots, how much, and the catalogue.

    Users with a list in only one of the two are counted (``n_users_only_before``,
    ``n_users_only_after``), not dropped; the means are over users in both.

    Parameters
    ----------
    {drift}
    {p}

    Returns
    -------
    DataFrame
        The ``by`` column (one row per set in either table, sorted), then:

        - ``n_users_before``, ``n_users_after`` (int64): users with a list of the set.
        - ``n_users_compared`` (int64): users with a list in both.
        - ``n_users_only_before``, ``n_users_only_after`` (int64): users in one only.
        - ``share_changed`` (float64): share of the compared users whose list changed
          (any item or position; NaN with none compared).
        - ``mean_jaccard``, ``mean_rbo`` (float64): over the compared users.
        - ``n_items_before``, ``n_items_after`` (int64): distinct items the set recommended.
        - ``n_items_entered``, ``n_items_left`` (int64): items recommended after and not
          before (entered the catalogue), and the other way round (left it).
    """
    _check_p(p)
    pairs = _pairs(before, after, by, k, "drift_summary")
    scores = _pair_scores(pairs, float(p))
    n_groups = len(pairs.group_values)
    group = pairs.before.keys[pairs.index_before] % pairs.n_groups

    def per_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return np.bincount(groups, weights=values, minlength=n_groups)[:n_groups]

    users_before = np.bincount(pairs.before.keys % pairs.n_groups, minlength=n_groups)[:n_groups]
    users_after = np.bincount(pairs.after.keys % pairs.n_groups, minlength=n_groups)[:n_groups]
    compared = np.bincount(group, minlength=n_groups)[:n_groups]
    with np.errstate(divide="ignore", invalid="ignore"):
        share_changed = per_group(scores["changed"].astype(float), group) / compared
        mean_jaccard = per_group(scores["jaccard"], group) / compared
        mean_rbo = per_group(scores["rbo"], group) / compared
    n_items = len(pairs.item_values)
    old = _catalogue(pairs.before, pairs.n_groups, n_items)[:n_groups]
    new = _catalogue(pairs.after, pairs.n_groups, n_items)[:n_groups]
    frame = before if len(before) else after
    result = pd.DataFrame({
        by: _group_column(pairs.group_values, np.arange(n_groups), frame[by]),
        "n_users_before": users_before.astype(np.int64),
        "n_users_after": users_after.astype(np.int64),
        "n_users_compared": compared.astype(np.int64),
        "n_users_only_before": (users_before - compared).astype(np.int64),
        "n_users_only_after": (users_after - compared).astype(np.int64),
        "share_changed": share_changed.astype(np.float64),
        "mean_jaccard": mean_jaccard.astype(np.float64),
        "mean_rbo": mean_rbo.astype(np.float64),
        "n_items_before": old.sum(axis=1).astype(np.int64),
        "n_items_after": new.sum(axis=1).astype(np.int64),
        "n_items_entered": (new & ~old).sum(axis=1).astype(np.int64),
        "n_items_left": (old & ~new).sum(axis=1).astype(np.int64),
    })
    return result


@shared_docs(drift=_DRIFT_DOCS)
def item_churn(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    by: str = "rec_id",
    k: int | None = None,
) -> pd.DataFrame:
    """Per set and item: how many users' lists it entered and left, and how far it moved.

    Over the users with a list of the set in both snapshots (see :func:`drift`).

    Parameters
    ----------
    {drift}

    Returns
    -------
    DataFrame
        The ``by`` column, then one row per (set, item) in either snapshot's lists:

        - ``item`` (object).
        - ``n_before``, ``n_after`` (int64): compared users whose list holds the item.
        - ``n_entered`` (int64): users whose list gained it; ``n_left``: lost it;
          ``n_stayed``: held it in both.
        - ``mean_rank_before``, ``mean_rank_after`` (float64): its mean rank among the
          users who held it in both (1 is the top; NaN when none did).
        - ``mean_shift`` (float64): ``mean_rank_after - mean_rank_before``: negative
          means it moved up.

        Sorted by set, then by users gained plus lost (most churn first), then item.
    """
    pairs = _pairs(before, after, by, k, "item_churn")
    n_items = max(len(pairs.item_values), 1)
    n_cells = pairs.n_groups * n_items

    def held(snapshot: _Snapshot, index: np.ndarray) -> np.ndarray:
        items = snapshot.items[index]
        group = np.repeat(snapshot.keys[index] % pairs.n_groups, items.shape[1])
        flat = items.ravel()
        return np.bincount(group[flat >= 0] * n_items + flat[flat >= 0], minlength=n_cells)

    n_before = held(pairs.before, pairs.index_before)
    n_after = held(pairs.after, pairs.index_after)
    stayed = np.zeros(n_cells, dtype=np.int64)
    rank_before_sum = np.zeros(n_cells)
    rank_after_sum = np.zeros(n_cells)
    for rows, same in pairs.chunks():
        owner, position_before, position_after = np.nonzero(same)
        pair = np.arange(len(pairs.index_before))[rows][owner]
        items = pairs.before.items[pairs.index_before[pair], position_before]
        cell = (pairs.before.keys[pairs.index_before[pair]] % pairs.n_groups) * n_items + items
        stayed += np.bincount(cell, minlength=n_cells)
        rank_before_sum += np.bincount(cell, weights=position_before + 1, minlength=n_cells)
        rank_after_sum += np.bincount(cell, weights=position_after + 1, minlength=n_cells)
    present = np.flatnonzero((n_before > 0) | (n_after > 0))
    group, item = np.divmod(present, n_items)
    entered = n_after[present] - stayed[present]
    left = n_before[present] - stayed[present]
    item_names = np.asarray(pairs.item_values, dtype=object)
    name_text = np.array([str(name) for name in item_names], dtype=object)
    name_rank = np.empty(len(name_text), dtype=np.int64)
    name_rank[np.argsort(name_text, kind="stable")] = np.arange(len(name_text))
    order = np.lexsort((name_rank[item] if len(item) else item, -(entered + left), group))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_before = rank_before_sum[present] / stayed[present]
        mean_after = rank_after_sum[present] / stayed[present]
    frame = before if len(before) else after
    return pd.DataFrame({
        by: _group_column(pairs.group_values, group[order], frame[by]),
        "item": pd.Series(item_names[item[order]] if len(item) else [], dtype=object),
        "n_before": n_before[present][order].astype(np.int64),
        "n_after": n_after[present][order].astype(np.int64),
        "n_entered": entered[order].astype(np.int64),
        "n_left": left[order].astype(np.int64),
        "n_stayed": stayed[present][order].astype(np.int64),
        "mean_rank_before": mean_before[order].astype(np.float64),
        "mean_rank_after": mean_after[order].astype(np.float64),
        "mean_shift": (mean_after - mean_before)[order].astype(np.float64),
    })
