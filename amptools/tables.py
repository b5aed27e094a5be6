"""Profiles to tidy pandas DataFrames.

Every function here accepts the same input and follows the same rules:

- **Input**: a ``ProfileSet`` (anything with a ``.profiles`` list), a list (or
  other iterable) of :class:`~amptools.models.UserProfile`, raw response dicts
  (``{"userData": {...}}``, parsed with :meth:`UserProfile.from_json` and the
  optional ``query``), or a single profile or response dict.
- **Never changes its input**: profiles are frozen, and raw dicts are only read.
- **Fixed columns and dtypes**: the columns are the module constants
  (``RECOMMENDATION_COLUMNS`` ...), in that order, with the dtypes in
  ``*_DTYPES`` — also when the input is empty.
- **Rows follow the input order** of the profiles.

Dtypes used throughout:

=====================  =====================================================
``user_id``,           ``"str"`` — pandas' default string dtype (missing is
``device_id``          NaN). In pandas 3 this is ``StringDtype(na_value=nan)``.
repeated strings       ``category`` with ``"str"`` categories, sorted
                       (``rec_id``, ``child_rec_id``, ``recommendation_source``,
                       ``item``, ``cohort_id``, ``computation``,
                       ``prediction_id``, ``propensity_type``)
flags that can be      ``"boolean"`` (nullable: ``<NA>`` when unknown)
missing
counts, ranks          ``int64``, or ``"Int64"`` where "not asked" must show
timestamps             ``datetime64[us, UTC]`` (:data:`TIMESTAMP_DTYPE`)
numbers                ``float64``
=====================  =====================================================

"Not asked" and "asked, and empty" differ in the profile (None versus an empty
tuple or dict). Long tables cannot show the difference (both give no rows), so
:func:`summary` does: its counts are ``<NA>`` when the part was not asked for
(or not returned) and ``0`` when it came back empty. :func:`cohort_matrix` shows
``<NA>`` flags for users whose cohorts were not asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Sized
from itertools import chain, repeat
from operator import attrgetter, is_, methodcaller
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from .errors import InvalidQueryError
from .frames import ID_COLUMNS, deprecated_arguments, require_columns, shared_docs
from .models import KEY_KINDS, UserProfile
from ._types import CohortNamesLike, ProfilesLike
from .query import STATUSES, ProfileQuery

__all__ = [
    "CHANGES",
    "CHANGE_DTYPE",
    "COHORT_CHANGE_COLUMNS",
    "COHORT_COLUMNS",
    "COHORT_DTYPES",
    "COHORT_NAMED_COLUMNS",
    "COMPUTATION_CHANGE_COLUMNS",
    "COMPUTATION_COLUMNS",
    "COMPUTATION_DTYPES",
    "ID_COLUMNS",
    "ID_DTYPE",
    "KEY_COLUMNS",
    "KEY_DTYPES",
    "KEY_KIND_DTYPE",
    "PROPENSITY_COLUMNS",
    "PROPENSITY_DTYPES",
    "RECOMMENDATION_COLUMNS",
    "RECOMMENDATION_DTYPES",
    "STATUS_DTYPE",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "SUMMARY_DTYPES",
    "TIMESTAMP_DTYPE",
    "as_profiles",
    "cohort_changes",
    "cohort_labels",
    "cohort_matrix",
    "cohort_names",
    "cohorts",
    "computation_changes",
    "computations",
    "keys",
    "properties",
    "propensities",
    "recommendations",
    "summary",
]

ID_DTYPE = "str"
"""The dtype of ``user_id`` and ``device_id`` in every table: pandas' string dtype."""

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
"""``datetime64[us, UTC]``: the unit pandas 3 infers for Python datetimes."""

RECOMMENDATION_COLUMNS: tuple[str, ...] = (
    "user_id",
    "device_id",
    "rec_id",
    "child_rec_id",
    "recommendation_source",
    "is_control",
    "last_updated",
    "rank",
    "item",
)
RECOMMENDATION_DTYPES: dict[str, Any] = {
    "user_id": ID_DTYPE,
    "device_id": ID_DTYPE,
    "rec_id": "category",
    "child_rec_id": "category",
    "recommendation_source": "category",
    "is_control": "boolean",
    "last_updated": TIMESTAMP_DTYPE,
    "rank": "int64",
    "item": "category",
}

COHORT_COLUMNS: tuple[str, ...] = ("user_id", "device_id", "cohort_id")
COHORT_DTYPES: dict[str, Any] = {"user_id": ID_DTYPE, "device_id": ID_DTYPE, "cohort_id": "category"}
#: :func:`cohorts` with ``names=``: the cohort's name (its id when it has none) follows its id.
COHORT_NAMED_COLUMNS: tuple[str, ...] = (*COHORT_COLUMNS, "cohort_name")

#: What a key is (see :mod:`amptools.names`): a category with these values, in this order.
KEY_KIND_DTYPE = pd.CategoricalDtype(pd.Index(list(KEY_KINDS), dtype="str"))

COMPUTATION_COLUMNS: tuple[str, ...] = ("user_id", "device_id", "computation", "value", "raw",
                                         "ambiguous", "kind")
COMPUTATION_DTYPES: dict[str, Any] = {
    "user_id": ID_DTYPE,
    "device_id": ID_DTYPE,
    "computation": "category",
    "value": "float64",
    "raw": "str",
    "ambiguous": "bool",
    "kind": KEY_KIND_DTYPE,
}

KEY_COLUMNS: tuple[str, ...] = ("key", "kind", "n_users", "how")
KEY_DTYPES: dict[str, Any] = {"key": "str", "kind": KEY_KIND_DTYPE, "n_users": "int64", "how": "str"}

PROPENSITY_COLUMNS: tuple[str, ...] = (
    "user_id",
    "device_id",
    "prediction_id",
    "propensity_type",
    "value",
)
PROPENSITY_DTYPES: dict[str, Any] = {
    "user_id": ID_DTYPE,
    "device_id": ID_DTYPE,
    "prediction_id": "category",
    "propensity_type": "category",
    "value": "float64",
}

STATUS_DTYPE = pd.CategoricalDtype(pd.Index(list(STATUSES), dtype="str"))
"""``category`` with the categories ``ok``, ``not_found``, ``failed`` (in that order)."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "user_id",
    "device_id",
    "status",
    "has_recommendations",
    "has_properties",
    "has_cohorts",
    "has_computations",
    "has_propensities",
    "n_recommendation_sets",
    "n_items",
    "n_cohorts",
    "n_properties",
    "n_computations",
    "n_computations_null",
    "n_propensities",
    "in_control",
    "http_status",
    "attempts",
    "error",
)
SUMMARY_DTYPES: dict[str, Any] = {
    "user_id": ID_DTYPE,
    "device_id": ID_DTYPE,
    "status": STATUS_DTYPE,
    "has_recommendations": "boolean",
    "has_properties": "boolean",
    "has_cohorts": "boolean",
    "has_computations": "boolean",
    "has_propensities": "boolean",
    "n_recommendation_sets": "Int64",
    "n_items": "Int64",
    "n_cohorts": "Int64",
    "n_properties": "Int64",
    "n_computations": "Int64",
    "n_computations_null": "Int64",
    "n_propensities": "Int64",
    "in_control": "boolean",
    "http_status": "Int64",
    "attempts": "Int64",
    "error": "str",
}

_GP_PREFIX = "gp:"
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


class AnswerFields:
    """What the table functions read of one answer, without a whole profile.

    :mod:`amptools.reading` makes these from stored answers (its fast path); the table
    functions take them as they take :class:`~amptools.models.UserProfile`. Not a
    profile: no raw body, nothing validated beyond what the reader checked.
    """

    __slots__ = ("user_id", "device_id", "amp_props", "computations", "recommendations", "cohort_ids",
                 "propensities", "ambiguous_computations", "key_kinds", "names")

    def __init__(self, user_id: str | None, device_id: str | None, amp_props: Mapping[str, Any] | None,
                 computations: Mapping[str, str | None] | None) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.amp_props = amp_props
        self.computations = computations
        self.recommendations = None
        self.cohort_ids = None
        self.propensities = None
        self.ambiguous_computations: frozenset[str] = frozenset()
        # Only answers that keep properties and computations apart take this path:
        # no key of theirs is unclear.
        self.key_kinds: Mapping[str, str] = {}
        self.names: Any = None


_PROFILE_TYPE = frozenset({UserProfile, AnswerFields})


# What every table function takes, written once.
_DATA_DOCS = """profiles : ProfileSet, list of UserProfile, or list of response dicts
        The profiles (see :func:`as_profiles`). Formerly ``data=`` (deprecated)."""
_QUERY_DOCS = """query : ProfileQuery, optional
        Used only to parse raw response dicts."""
_RETURNS_DOCS = """Returns
    -------
    pandas.DataFrame"""
_TABLE_DOCS = shared_docs(
    data=_DATA_DOCS,
    query=_QUERY_DOCS,
    parameters=f"Parameters\n    ----------\n    {_DATA_DOCS}\n    {_QUERY_DOCS}",  # of a table of data and query only
    returns=_RETURNS_DOCS,
)


# -- input ---------------------------------------------------------------------------
@deprecated_arguments(data="profiles")
def as_profiles(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> list[UserProfile]:
    """Turn any accepted input into a new list of profiles, in input order.

    Parameters
    ----------
    profiles : ProfileSet, iterable of UserProfile or dict, UserProfile or dict
        A ``ProfileSet`` (anything with ``.profiles``), profiles, raw response
        bodies (``{"userData": {...}}``), or a single one of these.
    query : ProfileQuery, optional
        Passed to :meth:`UserProfile.from_json` for raw bodies; it tells
        computations apart from user properties (without it, computations that
        came back inside ``amp_props`` stay properties).

    Returns
    -------
    list of UserProfile
        A new list; ``profiles`` is not changed.

    Raises
    ------
    TypeError
        For anything else (a DataFrame, a string, numbers...).
    ResponseFormatError
        When a raw body is not the documented shape.
    """
    if isinstance(profiles, UserProfile):
        return [profiles]
    if isinstance(profiles, Mapping):
        return [UserProfile.from_json(profiles, query)]
    listed = getattr(profiles, "profiles", None)
    if listed is not None and not isinstance(profiles, pd.DataFrame):
        profiles = listed
    if isinstance(profiles, (str, bytes, pd.DataFrame)) or not isinstance(profiles, Iterable):
        raise TypeError(
            "expected a ProfileSet, a list of UserProfile or a list of response dicts, "
            f"got {type(profiles).__name__}"
        )
    if type(profiles) is list and set(map(type, profiles)) <= _PROFILE_TYPE:
        return profiles.copy()  # the common case, in one C-level pass
    out: list[UserProfile] = []
    for index, item in enumerate(profiles):
        if isinstance(item, (UserProfile, AnswerFields)):
            out.append(item)  # AnswerFields: the fields the tables read, duck-typed
        elif isinstance(item, Mapping):
            out.append(UserProfile.from_json(item, query))
        else:
            raise TypeError(
                f"item {index} is a {type(item).__name__}; expected a UserProfile or a "
                "response dict ({'userData': {...}})"
            )
    return out


# -- column builders -------------------------------------------------------------------
# The tables are built column-wise: one C-level pass (map, chain, np.fromiter) per
# field over all profiles, then numpy repeats and takes. No per-row Python
# objects are created for the long tables, which keeps both time and the number
# of objects the garbage collector must walk down.
# One getter per model field, made once, grouped by the model it reads.
_USER_ID, _DEVICE_ID, _RECOMMENDATIONS, _AMP_PROPS, _COMPUTATIONS, _COHORT_IDS, _PROPENSITIES = map(
    attrgetter, ("user_id", "device_id", "recommendations", "amp_props", "computations", "cohort_ids", "propensities"))
_ITEMS, _IS_CONTROL, _LAST_UPDATED, _REC_ID, _CHILD_REC_ID, _RECOMMENDATION_SOURCE = map(
    attrgetter, ("items", "is_control", "last_updated", "rec_id", "child_rec_id", "recommendation_source"))
_PREDICTION_ID, _PROPENSITY_TYPE, _VALUE = map(attrgetter, ("prediction_id", "propensity_type", "value"))
_VALUES = methodcaller("values")
_NONE_TYPE = type(None)


def _objects(values: Iterable[Any], count: int | None = None) -> np.ndarray:
    """An object array of ``values``; never unpacks nested lists (unlike np.array)."""
    if count is None:
        values = values if isinstance(values, Sized) else list(values)
        count = len(values)
    return np.fromiter(values, dtype=object, count=count)


def _flags(values: Iterable[Any], target: Any, count: int) -> np.ndarray:
    """``value is target`` for each value, as a bool array (identity, as the models use)."""
    return np.fromiter(map(is_, values, repeat(target)), dtype=bool, count=count)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(values: Any) -> Any:
    """``pd.array(values, dtype="str")``: text as the tables hold it.

    pandas keeps text in Arrow, which holds only valid UTF-8: a lone surrogate (valid
    JSON, no text) becomes U+FFFD, as in every file amptools writes. The answer itself
    keeps it (``profile.raw``).
    """
    try:
        return pd.array(values, dtype=ID_DTYPE)
    except UnicodeEncodeError:
        cleaned = [_SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v for v in values]
        return pd.array(np.asarray(cleaned, dtype=object), dtype=ID_DTYPE)


def _categorical(values: Any) -> pd.Categorical:
    """Sorted ``str`` categories; None becomes NaN. ``values``: a sequence or object array."""
    array = values if isinstance(values, np.ndarray) else _objects(values)
    codes, uniques = pd.factorize(array, sort=True, use_na_sentinel=True)
    categories = pd.Index(_text(np.asarray(uniques, dtype=object)))
    return pd.Categorical.from_codes(codes, categories=categories)


def _repeat_categorical(values: Any, repeats: np.ndarray) -> pd.Categorical:
    cat = _categorical(values)
    return pd.Categorical.from_codes(np.repeat(cat.codes, repeats), dtype=cat.dtype)


def _lengths(parts: Sequence[Any]) -> np.ndarray:
    return np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))


def _positions(counts: np.ndarray) -> np.ndarray:
    """The profile position of every row, when profile ``i`` gives ``counts[i]`` rows."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _flatten(parts: Sequence[Any]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The non-None parts, each profile's count (0 for None) and which parts are None.

    One C-level pass per step; ``counts`` feeds :func:`_positions`.
    """
    n = len(parts)
    missing = _flags(parts, None, n)
    present = [part for part in parts if part is not None] if missing.any() else list(parts)
    counts = np.zeros(n, dtype=np.int64)
    counts[~missing] = _lengths(present)
    return present, counts, missing


def _id_columns(profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> dict[str, Any]:
    """user_id and device_id for the given profile positions (all when ``rows`` is None)."""
    n = len(profiles)
    # Validate each profile's id once; take() then copies references per row.
    user_ids = _text(_objects(map(_USER_ID, profiles), n))
    device_ids = _text(_objects(map(_DEVICE_ID, profiles), n))
    if rows is not None:
        user_ids = user_ids.take(rows)
        device_ids = device_ids.take(rows)
    return {"user_id": user_ids, "device_id": device_ids}


def _frame(columns: dict[str, Any], order: Sequence[str], dtypes: Mapping[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame({name: columns[name] for name in order}, copy=False)
    # Empty inputs give object columns; cast so the dtypes hold for every input.
    wrong = {name: dtype for name, dtype in dtypes.items() if frame[name].dtype != dtype}
    return frame.astype(wrong) if wrong else frame


# -- recommendations -----------------------------------------------------------------------
def _recommendation_sets(profiles: Sequence[UserProfile]) -> tuple[list[Any], np.ndarray]:
    """Every recommendation set in input order, and how many each profile has."""
    per_profile = [recs or () for recs in map(_RECOMMENDATIONS, profiles)]
    return list(chain.from_iterable(per_profile)), _lengths(per_profile)


def _recommendation_frame(profiles: Sequence[UserProfile]) -> tuple[pd.DataFrame, np.ndarray]:
    """The recommendations table and, per row, the position of its profile."""
    sets, set_counts = _recommendation_sets(profiles)
    n_sets = len(sets)
    # map(attrgetter) per field, not one getter for all fields: that would allocate
    # a tuple per set, and hundreds of thousands of new containers make the cyclic
    # garbage collector walk every profile in memory (seconds, at random moments).
    item_lists = list(map(_ITEMS, sets))
    controls = list(map(_IS_CONTROL, sets))
    repeats = _lengths(item_lists)
    n_rows = int(repeats.sum())
    rows = np.repeat(_positions(set_counts), repeats)
    # Each per-set column is built once (one value per set), then repeated per item.
    starts = np.cumsum(repeats) - repeats
    rank = np.arange(1, n_rows + 1, dtype=np.int64) - np.repeat(starts, repeats)
    control = pd.arrays.BooleanArray(
        np.repeat(_flags(controls, True, n_sets), repeats),
        np.repeat(_flags(controls, None, n_sets), repeats),
    )
    times = pd.DatetimeIndex(pd.to_datetime(list(map(_LAST_UPDATED, sets)), utc=True))
    # Repeat the int64 microseconds; NaT is a sentinel integer and survives the repeat.
    micros = np.repeat(times.as_unit("us").asi8, repeats).view("M8[us]")
    columns = _id_columns(profiles, rows)
    columns.update(
        rec_id=_repeat_categorical(_objects(map(_REC_ID, sets), n_sets), repeats),
        child_rec_id=_repeat_categorical(_objects(map(_CHILD_REC_ID, sets), n_sets), repeats),
        recommendation_source=_repeat_categorical(
            _objects(map(_RECOMMENDATION_SOURCE, sets), n_sets), repeats
        ),
        is_control=control,
        last_updated=pd.array(micros, dtype=TIMESTAMP_DTYPE),
        rank=rank,
        item=_categorical(_objects(chain.from_iterable(item_lists), n_rows)),
    )
    return _frame(columns, RECOMMENDATION_COLUMNS, RECOMMENDATION_DTYPES), rows


@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def recommendations(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per (user, recommendation set, item): the long recommendations table.

    {parameters}

    {returns}
        Columns (:data:`RECOMMENDATION_COLUMNS`), with dtypes:

        - ``user_id``, ``device_id`` : str
        - ``rec_id`` : category — the set, as requested
        - ``child_rec_id`` : category — Amplitude's finer experiment id
        - ``recommendation_source`` : category — the model's name
        - ``is_control`` : boolean — True for the control group, whose items are a
          random selection; ``<NA>`` when the service did not say
        - ``last_updated`` : datetime64[us, UTC]
        - ``rank`` : int64 — 1-based position in the set
        - ``item`` : category

        A set with no items gives no rows; users without recommendations too
        (see :func:`summary` for who had none).
    """
    return _recommendation_frame(as_profiles(profiles, query=query))[0]


# -- properties --------------------------------------------------------------------------
def _typed_column(array: np.ndarray, parse_dates: bool, kind: str | None = None) -> Any:
    """One property column with the narrowest honest dtype; mixed types stay object.

    ``array`` is an object array with None where the user has no value. ``kind``,
    when given, is ``infer_dtype(array, skipna=True)`` (see :func:`_kind`).
    """
    if kind is None:
        kind = _kind(array)
    if kind in ("boolean", "integer", "floating", "mixed-integer-float"):
        missing = pd.isna(array)
        present = array[~missing]
        if kind == "boolean":
            data = np.zeros(len(array), dtype=bool)
            data[~missing] = present.astype(bool)
            return pd.arrays.BooleanArray(data, missing)
        if kind == "integer":
            try:
                data = np.zeros(len(array), dtype=np.int64)
                data[~missing] = present.astype(np.int64)
            except (OverflowError, TypeError, ValueError):
                return array.copy()  # beyond int64: keep Python ints exactly
            return pd.arrays.IntegerArray(data, missing)
        data = np.full(len(array), np.nan)
        data[~missing] = present.astype(np.float64)
        return data
    if kind == "string":
        if parse_dates and all(
            v is None or _ISO_DATE.match(v) for v in array.tolist()
        ):
            try:
                parsed = pd.to_datetime(pd.Series(array), utc=True, format="ISO8601")
            except (ValueError, OverflowError):
                pass
            else:
                return parsed.dt.as_unit("us").array
        return _text(array)
    # Mixed types (text and numbers, numbers and booleans, nested values) and
    # all-null columns: the values are kept exactly as the API sent them.
    return array.copy()  # a copy, so the frame holds no view of a larger grid


_SIMPLE_KINDS = {
    frozenset(): "empty",
    frozenset({bool}): "boolean",
    frozenset({int}): "integer",
    frozenset({str}): "string",
}


def _kind(array: np.ndarray) -> str:
    """``infer_dtype(array, skipna=True)``, answered from the set of exact types when simple.

    One C-level pass of ``type()`` is several times cheaper than ``infer_dtype``;
    anything with floats (NaN is skipped by ``infer_dtype``), subclasses or mixed
    types goes to ``infer_dtype`` itself, so the answer is always the same.
    """
    types = set(map(type, array))
    types.discard(_NONE_TYPE)
    kind = _SIMPLE_KINDS.get(frozenset(types))
    return kind if kind is not None else infer_dtype(array, skipna=True)


# Kinds whose column does not depend on how a missing cell is spelled: missing
# keys (NaN from pandas' dict-list path) and None or NaN values all become NA.
_NA_BLIND_KINDS = frozenset({"boolean", "integer", "floating", "mixed-integer-float"})
_NO_PROPS: Mapping[str, Any] = {}


def _property_grid(rows: list[Any]) -> tuple[list[Any], np.ndarray]:
    """The property names in order of first appearance, and a (name x profile) grid.

    pandas' own dict-list path (``pd.DataFrame(list_of_dicts, dtype=object)``) finds
    the names in order of first appearance and fills the grid in C. It marks a
    missing key with NaN, which is no different from a None or NaN value for
    typed columns; :func:`_property_column` tells them apart where it matters.
    The grid may be read-only. ``rows``: one mapping per profile (``_NO_PROPS``
    for none).
    """
    frame = pd.DataFrame(rows, dtype=object)
    return frame.columns.tolist(), frame.to_numpy().T


def _property_column(
    grid_row: np.ndarray, name: Any, rows: list[Any], parse_dates: bool
) -> Any:
    """:func:`_typed_column` of one grid row, as if missing keys were None.

    NaN fills only matter for text with ``parse_dates`` and for object columns:
    there every NA cell whose user lacks the key becomes None, and a user's own
    None, NaN, NA or NaT is kept.
    """
    kind = infer_dtype(grid_row, skipna=True)  # skips None and NaN alike
    if kind in _NA_BLIND_KINDS or (kind == "string" and not parse_dates):
        typed = _typed_column(grid_row, parse_dates, kind)
        if not isinstance(typed, np.ndarray) or typed.dtype != object:
            return typed
        # Ints beyond int64 stay object, values exactly as sent: fill as below.
    column = grid_row
    missing = np.flatnonzero(pd.isna(grid_row))
    if len(missing):
        column = grid_row.copy()
        column[[i for i in missing.tolist() if name not in rows[i]]] = None
    return _typed_column(column, parse_dates, kind if kind == "string" else None)


def _unique_name(name: str, taken: set[str], prefix: str) -> str:
    if name not in taken:
        return name
    candidate = prefix + name
    while candidate in taken:
        candidate = prefix + candidate
    return candidate


@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def properties(
    profiles: ProfilesLike,
    *,
    parse_dates: bool = False,
    strip_gp: bool = False,
    query: ProfileQuery | None = None,
) -> pd.DataFrame:
    """One row per user, one column per user property (``amp_props``).

    Computations are never columns here: only ``profile.amp_props`` is read (the
    models keep computations in ``profile.computations``).

    Parameters
    ----------
    {data}
    parse_dates : bool, default False
        Turn text columns whose every value is an ISO 8601 date or timestamp
        (``"2020-01-13"``, ``"2021-03-24T10:00:00Z"``) into ``datetime64[us, UTC]``;
        values without an offset are taken as UTC. Columns with any other text
        stay text.
    strip_gp : bool, default False
        Drop the ``gp:`` prefix of custom properties (``gp:email`` -> ``email``).
        **Collision rule**: when the stripped name is already a column (both ``x``
        and ``gp:x`` exist for some user, or ``gp:user_id``), the ``gp:`` column
        keeps its full name, so no two properties are ever merged and no value is
        lost.
    {query}

    {returns}
        ``user_id``, ``device_id`` (str), then one column per property in order of
        first appearance. A property named ``user_id`` or ``device_id`` becomes
        ``property:user_id`` / ``property:device_id``. Keys a merged answer (one
        request per user) could not tell apart from computations are flagged in
        ``frame.attrs["key_kinds"]``: ``{{column: "ambiguous" | "unverified"}}`` (their
        values are also in :func:`computations`; see :func:`keys`). Column dtypes follow the
        values (missing values, and users whose properties were not asked for,
        are missing in every column):

        - only booleans: ``boolean``
        - only integers: ``Int64`` (Python ints beyond int64 stay ``object``)
        - numbers with a fraction: ``float64``
        - only text: ``str`` (or ``datetime64[us, UTC]`` with ``parse_dates``)
        - anything else (text and numbers, numbers and booleans, lists, all null):
          ``object`` holding the values exactly as sent.
    """
    profiles = as_profiles(profiles, query=query)
    rows = [props or _NO_PROPS for props in map(_AMP_PROPS, profiles)]
    names, grid = _property_grid(rows)
    columns = _id_columns(profiles)
    taken = set(ID_COLUMNS) | set(names)
    labels: dict[str, str] = {}
    for code, name in enumerate(names):
        label = name
        if strip_gp and name.startswith(_GP_PREFIX):
            stripped = name[len(_GP_PREFIX):]
            if stripped and stripped not in taken:
                label = stripped
                taken.add(stripped)
        if label in ID_COLUMNS:
            label = _unique_name("property:" + label, taken, "property:")
            taken.add(label)
        columns[label] = _property_column(grid[code], name, rows, parse_dates)
        labels[name] = label
    frame = pd.DataFrame(columns, copy=False)
    if not profiles:
        frame = frame.astype({"user_id": ID_DTYPE, "device_id": ID_DTYPE})
    flagged = _unclear_keys(profiles)
    frame.attrs["key_kinds"] = {labels[key]: kind for key, kind in flagged.items() if key in labels}
    return frame


def _unclear_keys(profiles: Sequence[UserProfile]) -> dict[str, str]:
    """The keys some merged answer could not tell apart, with the worse kind seen."""
    flagged: dict[str, str] = {}
    for profile in profiles:
        for key, kind in profile.key_kinds.items():
            if kind == "ambiguous" or (kind == "unverified" and key not in flagged):
                flagged[key] = kind
    return flagged


# -- cohorts -------------------------------------------------------------------------------
def _cohort_frame(profiles: Sequence[UserProfile]) -> tuple[pd.DataFrame, np.ndarray]:
    present, counts, _ = _flatten(list(map(_COHORT_IDS, profiles)))
    positions = _positions(counts)
    columns = _id_columns(profiles, positions)
    columns["cohort_id"] = _categorical(_objects(chain.from_iterable(present), len(positions)))
    return _frame(columns, COHORT_COLUMNS, COHORT_DTYPES), positions


def cohort_names(source: Any) -> dict[str, str]:
    """``{cohort_id: name}`` from whatever lists cohorts; no network code of its own.

    Parameters
    ----------
    source : DataFrame, mapping, object with ``cohort_names()``, or None
        The frame of ``CohortClient.list_cohorts()`` (``cohort_id`` and ``name``
        columns), a mapping of ids to names, or anything with a ``cohort_names()``
        method returning one (a ``CohortClient``: it is asked for its list).
        None gives ``{}``.

    Returns
    -------
    dict of str to str
        Ids with a blank name are left out, so they fall back to their ids.

    Raises
    ------
    InvalidQueryError
        When ``source`` is none of these.
    """
    if source is None:
        return {}
    if hasattr(source, "cohort_names") and callable(source.cohort_names):
        source = source.cohort_names()
    if isinstance(source, pd.DataFrame):
        missing = {"cohort_id", "name"} - set(source.columns)
        if missing:
            raise InvalidQueryError(
                f"names=: the frame has no {', '.join(sorted(missing))} column; pass the frame "
                "of CohortClient.list_cohorts(), a {cohort_id: name} mapping or a CohortClient.")
        source = dict(zip(source["cohort_id"].tolist(), source["name"].tolist()))
    if not isinstance(source, Mapping):
        raise InvalidQueryError(
            f"names= must be a cohort list (CohortClient.list_cohorts()), a {{cohort_id: name}} "
            f"mapping or a CohortClient, got {type(source).__name__}.")
    return {str(k): str(v) for k, v in source.items()
            if k is not None and v is not None and not pd.isna(v) and str(v).strip()}


def cohort_labels(ids: Iterable[str], names: CohortNamesLike) -> dict[str, str]:
    """What to show for each cohort id: its name, ``name (id)`` when names repeat, else the id.

    Parameters
    ----------
    ids : iterable of str
        The cohort ids shown together (a table's columns, a figure's axis).
    names : cohort list, mapping or CohortClient
        See :func:`cohort_names`.

    Returns
    -------
    dict of str to str
        One distinct label per distinct id.
    """
    known = names if isinstance(names, dict) else cohort_names(names)
    shown = {i: known.get(i, i) for i in ids}
    repeated = {n for n, count in pd.Series(list(shown.values()), dtype=object).value_counts().items() if count > 1}
    return {i: f"{n} ({i})" if n in repeated and n != i else n for i, n in shown.items()}


@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def cohorts(profiles: ProfilesLike, *, names: CohortNamesLike = None, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per (user, cohort the user is in).

    Parameters
    ----------
    {data}
    names : cohort list, mapping or CohortClient, optional
        Adds ``cohort_name`` (see :func:`cohort_names`); ids without a name keep the id.
    {query}

    {returns}
        Columns (:data:`COHORT_COLUMNS`): ``user_id``, ``device_id`` (str),
        ``cohort_id`` (category), and with ``names=`` also ``cohort_name``
        (category; :data:`COHORT_NAMED_COLUMNS`). Users in no cohort, or not
        asked, give no rows.
    """
    frame = _cohort_frame(as_profiles(profiles, query=query))[0]
    if names is None:
        return frame
    ids = frame["cohort_id"].cat.categories.tolist()
    display = cohort_labels(ids, cohort_names(names))
    frame["cohort_name"] = _categorical(_objects(map(display.get, frame["cohort_id"].astype(object)), len(frame)))
    return frame


@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def cohort_matrix(
    profiles: ProfilesLike,
    *,
    cohorts: Sequence[str] | None = None,
    names: CohortNamesLike = None,
    query: ProfileQuery | None = None,
) -> pd.DataFrame:
    """One row per user, one flag column per cohort.

    Parameters
    ----------
    {data}
    cohorts : sequence of str, optional
        The cohort columns, in this order (cohorts no user is in give all-False
        columns). Default: every cohort seen, sorted. With ``names=`` these may be
        names too.
    names : cohort list, mapping or CohortClient, optional
        Columns are headed by cohort names (see :func:`cohort_names`) instead of
        ids; a repeated name becomes ``name (id)``, an id without a name stays.
    {query}

    {returns}
        ``user_id``, ``device_id`` (str), then one ``boolean`` column per cohort:
        True when the user is in it, False when not, ``<NA>`` when the user's
        cohorts were not asked for. A cohort named ``user_id`` or ``device_id``
        becomes ``cohort:user_id`` / ``cohort:device_id``.
    """
    known = cohort_names(names)
    if cohorts is not None and known:
        by_name = {name: cohort_id for cohort_id, name in known.items()}
        cohorts = [c if c in known else by_name.get(c, c) for c in ([cohorts] if isinstance(cohorts, str) else cohorts)]
    profiles = as_profiles(profiles, query=query)
    n = len(profiles)
    present, counts, not_asked = _flatten(list(map(_COHORT_IDS, profiles)))
    flat = _objects(chain.from_iterable(present), int(counts.sum()))
    if cohorts is None:
        ids = sorted(set(flat.tolist()))
    else:
        if isinstance(cohorts, str):
            cohorts = [cohorts]
        ids = list(dict.fromkeys(cohorts))
    index = {cohort_id: i for i, cohort_id in enumerate(ids)}
    # One scatter: (cohort, profile) -> True; a (cohort x profile) grid keeps each
    # column contiguous. Ids not among ``ids`` get -1 and are left out.
    codes = np.fromiter(map(index.get, flat.tolist(), repeat(-1)), dtype=np.int64, count=len(flat))
    keep = codes >= 0
    flags = np.zeros((len(ids), n), dtype=bool)
    flags[codes[keep], _positions(counts)[keep]] = True
    columns = _id_columns(profiles)
    # Headed by names when they are known; repeated names get their id added.
    display = cohort_labels(ids, known) if known else {}
    taken = set(ID_COLUMNS) | set(display.values() if display else ids)
    for cohort_id, i in index.items():
        label = display.get(cohort_id, cohort_id)
        label = label if label not in ID_COLUMNS else _unique_name("cohort:" + label, taken, "cohort:")
        columns[label] = pd.arrays.BooleanArray(flags[i].copy(), not_asked.copy())
    return pd.DataFrame(columns, copy=False)


# -- computations ----------------------------------------------------------------------------
@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def computations(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per (user, computation): the computed user properties.

    Only ``profile.computations`` is read, never ``amp_props``: user properties
    never become computations.

    Parameters
    ----------
    {data}
        Raw dicts need ``query`` for their computations to be recognised (the
        API merges them into ``amp_props``).
    {query}

    {returns}
        Columns (:data:`COMPUTATION_COLUMNS`):

        - ``user_id``, ``device_id`` : str
        - ``computation`` : category — the computation's name
        - ``value`` : float64 — the text as a number; NaN when it is null or does
          not parse (``"n/a"``, ``"true"``)
        - ``raw`` : str — the text exactly as the API sent it (NaN for null)
        - ``ambiguous`` : bool — ``kind == "ambiguous"``
        - ``kind`` : category — ``computation``; or, for a merged answer (one request
          per user), ``ambiguous`` (a property of the org has the name too: the value
          may be that property's) or ``unverified`` (a key never seen apart from the
          properties: it may be a property). Both are also in :func:`properties`. Ask
          with ``split_computations=True`` to be sure; :func:`keys` says how each key
          was known.
    """
    profiles = as_profiles(profiles, query=query)
    computed = [comps or {} for comps in map(_COMPUTATIONS, profiles)]
    counts = _lengths(computed)
    total = int(counts.sum())
    columns = _id_columns(profiles, _positions(counts))
    columns["computation"] = _categorical(_objects(chain.from_iterable(computed), total))
    raw_array = _objects(chain.from_iterable(map(_VALUES, computed)), total)
    columns["value"], columns["raw"] = _numbers_and_text(raw_array)
    kinds = pd.Categorical.from_codes(np.zeros(total, dtype=np.int8) + KEY_KINDS.index("computation"),
                                      dtype=KEY_KIND_DTYPE)
    if any(p.key_kinds for p in profiles):
        codes = {kind: code for code, kind in enumerate(KEY_KINDS)}
        flags = (codes[p.key_kinds.get(name, "computation")] for p, comps in zip(profiles, computed)
                 for name in comps)
        kinds = pd.Categorical.from_codes(np.fromiter(flags, dtype=np.int8, count=total), dtype=KEY_KIND_DTYPE)
    columns["ambiguous"] = np.asarray(kinds == "ambiguous")
    columns["kind"] = kinds
    return _frame(columns, COMPUTATION_COLUMNS, COMPUTATION_DTYPES)


@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def keys(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per key of ``amp_props``: what it is, for how many users, how it was known.

    A query for properties and computations is one request per user, and the service
    answers both in one object: amptools tells them apart by the org's names
    (:mod:`amptools.names`). This table is where to look before trusting the split.

    Parameters
    ----------
    {data}
    {query}

    {returns}
        Columns (:data:`KEY_COLUMNS`), the unclear keys first:

        - ``key`` : str
        - ``kind`` : category — ``property`` or ``computation`` (known apart),
          ``ambiguous`` (both kinds have the name: a merged answer may hold either's
          value) or ``unverified`` (never seen apart: it may be either)
        - ``n_users`` : int64 — users whose answer holds the key
        - ``how`` : str — how the kind was known (an answer asked apart, a
          computations-only answer, the value's type, the query's list), with the day;
          or why it is not known. A property that shares a computation's name on only
          *some* users is seen only when one of them is checked (``docs/profile-api.md``).
    """
    profiles = as_profiles(profiles, query=query)
    seen: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    how: dict[str, str] = {}
    listed: set[str] = set()
    for profile in profiles:
        kinds = dict(profile.key_kinds)
        if not kinds:  # an answer that kept them apart
            kinds = {**dict.fromkeys(profile.amp_props or (), "property"),
                     **dict.fromkeys(profile.computations or (), "computation")}
        elif profile.names is not None:
            for key in kinds.keys() - how.keys():
                if key in profile.names.how:
                    how[key] = profile.names.how[key]
        for key, kind in kinds.items():
            seen.setdefault(key, set()).add(kind)
            counts[key] = counts.get(key, 0) + 1
        if profile.key_kinds and profile.computations is not None:
            listed.update(key for key in profile.computations if key not in profile.key_kinds)
    rows = []
    for key, found in seen.items():
        if "ambiguous" in found or {"property", "computation"} <= found:
            kind = "ambiguous"
        elif "unverified" in found:
            kind = "unverified"
        else:
            kind = next(iter(found))
        text = how.get(key) or ("never seen apart from the other kind" if kind == "unverified"
                                else "listed in the query" if key in listed
                                else "asked apart (the answers keep them apart)")
        rows.append((KEY_KINDS.index(kind) if kind in ("ambiguous", "unverified") else 9, -counts[key],
                     key, kind, counts[key], text))
    rows.sort()
    frame = pd.DataFrame([row[2:] for row in rows], columns=list(KEY_COLUMNS))
    return frame.astype(KEY_DTYPES)


def _numbers_and_text(raw: np.ndarray) -> tuple[np.ndarray, Any]:
    """``_to_float(raw)`` and ``raw`` as ``str``, parsing each distinct text once.

    Computation values repeat a lot (counts, flags), so parsing the distinct texts
    and taking by code is cheaper. Only when every distinct value is exactly a
    ``str``: factorize would merge ``1``, ``1.0`` and ``True``, which differ as text.
    """
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    if len(raw) and all(type(u) is str for u in uniques):
        unique_values = np.append(_to_float(np.asarray(uniques, dtype=object)), np.nan)
        text = _text(np.asarray(uniques, dtype=object)).take(codes, allow_fill=True)
        return unique_values[codes], text
    return _to_float(raw), _text(raw)


def _to_float(values: np.ndarray) -> np.ndarray:
    """float(text) where it parses, else NaN; never raises."""
    if not len(values):
        return np.empty(0, dtype=np.float64)
    try:
        numbers: np.ndarray = pd.to_numeric(values, errors="coerce").astype(np.float64, copy=False)
        return numbers
    except (TypeError, ValueError):
        out = np.full(len(values), np.nan)
        for i, value in enumerate(values):
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                pass
        return out


# -- propensities ----------------------------------------------------------------------------
@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def propensities(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per (user, prediction): propensity scores or percentiles.

    {parameters}
        The query also names a lone ``propensity``.

    {returns}
        Columns (:data:`PROPENSITY_COLUMNS`):

        - ``user_id``, ``device_id`` : str
        - ``prediction_id`` : category (NaN when the response did not name it)
        - ``propensity_type`` : category — ``score`` (0–1) or ``pct`` (0–100), as
          each entry said
        - ``value`` : float64 — NaN for an unknown prediction
    """
    profiles = as_profiles(profiles, query=query)
    present, counts, _ = _flatten(list(map(_PROPENSITIES, profiles)))
    entries = list(chain.from_iterable(present))
    total = len(entries)
    raw_values = _objects(map(_VALUE, entries), total)
    unknown = _flags(raw_values, None, total)
    values = np.full(total, np.nan)
    values[~unknown] = raw_values[~unknown].astype(np.float64)
    columns = _id_columns(profiles, _positions(counts))
    columns["prediction_id"] = _categorical(_objects(map(_PREDICTION_ID, entries), total))
    columns["propensity_type"] = _categorical(_objects(map(_PROPENSITY_TYPE, entries), total))
    columns["value"] = values
    return _frame(columns, PROPENSITY_COLUMNS, PROPENSITY_DTYPES)


# -- summary -----------------------------------------------------------------------------------
@deprecated_arguments(data="profiles")
@_TABLE_DOCS
def summary(profiles: ProfilesLike, *, query: ProfileQuery | None = None) -> pd.DataFrame:
    """One row per user: what came back, how much, and whether the fetch worked.

    Parameters
    ----------
    {data}
        When ``profiles`` has a ``failures`` DataFrame (a ``ProfileSet``), its users
        are listed too, after the profiles, with their status.
    {query}

    {returns}
        Columns (:data:`SUMMARY_COLUMNS`):

        - ``user_id``, ``device_id`` : str
        - ``status`` : category ``ok`` / ``not_found`` / ``failed`` (other
          statuses a ``failures`` table holds are kept as extra categories)
        - ``has_recommendations``, ``has_properties``, ``has_cohorts``,
          ``has_computations``, ``has_propensities`` : boolean — the part came back
          (possibly empty); False when not asked for or not returned; ``<NA>`` for
          failed users
        - ``n_recommendation_sets``, ``n_items`` (over all sets), ``n_cohorts``,
          ``n_properties``, ``n_computations``, ``n_computations_null`` (came back
          null: unknown or not computed), ``n_propensities`` : Int64 — ``<NA>``
          when the part did not come back, ``0`` when it came back empty
        - ``in_control`` : boolean — True when any set put the user in the control
          group; ``<NA>`` without recommendation sets
        - ``http_status``, ``attempts`` : Int64, ``error`` : str — from
          ``failures``; missing for ok rows
    """
    failures = getattr(profiles, "failures", None)
    profiles = as_profiles(profiles, query=query)
    # The failures' rows (a few) as lists, as before; the profiles' rows column-wise.
    failed: dict[str, list[Any]] = {name: [] for name in SUMMARY_COLUMNS}
    if isinstance(failures, pd.DataFrame) and len(failures):
        _add_failures(failed, failures)
    n, m = len(profiles), len(failed["user_id"])
    parts = {
        "recommendations": list(map(_RECOMMENDATIONS, profiles)),
        "properties": list(map(_AMP_PROPS, profiles)),
        "cohorts": list(map(_COHORT_IDS, profiles)),
        "computations": list(map(_COMPUTATIONS, profiles)),
        "propensities": list(map(_PROPENSITIES, profiles)),
    }
    no_rows = np.zeros(m, dtype=np.int64)
    failed_mask = np.ones(m, dtype=bool)

    def boolean(data: np.ndarray, mask: np.ndarray) -> pd.arrays.BooleanArray:
        return pd.arrays.BooleanArray(
            np.concatenate([data, no_rows.astype(bool)]), np.concatenate([mask, failed_mask])
        )

    def integer(data: np.ndarray, mask: np.ndarray) -> pd.arrays.IntegerArray:
        return pd.arrays.IntegerArray(
            np.concatenate([data.astype(np.int64, copy=False), no_rows]),
            np.concatenate([mask, failed_mask]),
        )

    out: dict[str, Any] = {
        "user_id": _text(_objects(chain(map(_USER_ID, profiles), failed["user_id"]), n + m)),
        "device_id": _text(_objects(chain(map(_DEVICE_ID, profiles), failed["device_id"]), n + m)),
    }
    statuses = failed["status"]
    extra = sorted({s for s in statuses if s not in STATUSES})
    status_dtype = (
        STATUS_DTYPE if not extra else pd.CategoricalDtype(pd.Index([*STATUSES, *extra], dtype="str"))
    )
    out["status"] = pd.Categorical.from_codes(
        np.concatenate([
            np.zeros(n, dtype=np.int8),  # "ok"
            np.asarray(pd.Categorical(statuses, dtype=status_dtype).codes, dtype=np.int8),
        ]),
        dtype=status_dtype,
    )
    flattened = {name: _flatten(values) for name, values in parts.items()}
    for name, (_, _, missing) in flattened.items():
        out[f"has_{name}"] = boolean(~missing, np.zeros(n, dtype=bool))
    sets, set_counts, no_recs = flattened["recommendations"]
    sets = list(chain.from_iterable(sets))
    set_rows = _positions(set_counts)
    item_counts = np.bincount(
        set_rows, weights=_lengths(list(map(_ITEMS, sets))), minlength=n
    )
    comps, comp_counts, no_comps = flattened["computations"]
    null_flags = _flags(chain.from_iterable(map(_VALUES, comps)), None, int(comp_counts.sum()))
    nulls = np.bincount(_positions(comp_counts), weights=null_flags, minlength=n)
    for name, key in (("n_recommendation_sets", "recommendations"), ("n_items", None),
                      ("n_cohorts", "cohorts"), ("n_properties", "properties"),
                      ("n_computations", "computations"), ("n_computations_null", None),
                      ("n_propensities", "propensities")):
        if name == "n_items":
            out[name] = integer(item_counts, no_recs)
        elif name == "n_computations_null":
            out[name] = integer(nulls, no_comps)
        else:
            assert key is not None  # the two counts without a key are the branches above
            _, counts, missing = flattened[key]
            out[name] = integer(counts, missing)
    # in_control: True when any set says True; <NA> when no set says either.
    controls = list(map(_IS_CONTROL, sets))
    known = np.bincount(set_rows, weights=~_flags(controls, None, len(sets)), minlength=n)
    in_control = np.bincount(set_rows, weights=_flags(controls, True, len(sets)), minlength=n)
    out["in_control"] = boolean(in_control > 0, known == 0)
    for name in ("http_status", "attempts"):
        values = _objects(failed[name], m)
        unknown = _flags(values, None, m)
        data = np.zeros(n + m, dtype=np.int64)
        data[n:][~unknown] = values[~unknown].astype(np.int64)
        out[name] = pd.arrays.IntegerArray(data, np.concatenate([np.ones(n, dtype=bool), unknown]))
    out["error"] = _text(_objects(chain(repeat(None, n), failed["error"]), n + m))
    dtypes = {**SUMMARY_DTYPES, "status": status_dtype}
    return _frame(out, SUMMARY_COLUMNS, dtypes)


def _add_failures(columns: dict[str, list[Any]], failures: pd.DataFrame) -> None:
    n = len(failures)

    def column(name: str) -> list[Any]:
        if name not in failures.columns:
            return [None] * n
        return [None if _missing(v) else v for v in failures[name].tolist()]

    def whole(values: list[Any]) -> list[Any]:
        out = []
        for v in values:
            try:
                out.append(None if v is None else int(v))
            except (TypeError, ValueError):
                out.append(None)
        return out

    columns["user_id"].extend(column("user_id"))
    columns["device_id"].extend(column("device_id"))
    columns["status"].extend(
        "failed" if s is None else str(s) for s in column("status")
    )
    for name in SUMMARY_COLUMNS[3:16]:
        columns[name].extend([None] * n)
    columns["http_status"].extend(whole(column("http_status")))
    columns["attempts"].extend(whole(column("attempts")))
    columns["error"].extend(None if e is None else str(e) for e in column("error"))


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and value != value


# -- change between two snapshots --------------------------------------------------------------
#: Columns of :func:`cohort_changes`.
COHORT_CHANGE_COLUMNS: tuple[str, ...] = ("user_id", "device_id", "cohort_id", "change")
#: What happened to a user's membership of a cohort between two snapshots.
CHANGES: tuple[str, ...] = ("joined", "left", "stayed")
CHANGE_DTYPE = pd.CategoricalDtype(pd.Index(list(CHANGES), dtype="str"))
"""``category`` with the categories ``joined``, ``left``, ``stayed`` (in that order)."""
#: Columns of :func:`computation_changes`.
COMPUTATION_CHANGE_COLUMNS: tuple[str, ...] = ("user_id", "device_id", "computation", "before", "after",
                                                "delta", "changed")

_CHANGE_DOCS = """before, after : ProfileSet, Snapshot, list of profiles, or the table
        Two snapshots of the same users: anything the table functions take, a loaded
        ``amptools.snapshots.Snapshot``, or the table itself ({table}). Only users
        present in both count: for profiles and snapshots, users whose answer came back;
        for tables, users with any row."""


def _table_and_users(data: Any, table: str, function: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long table ``table`` of ``data`` and the users it speaks for (``user_id``, ``device_id``)."""
    if isinstance(data, pd.DataFrame):
        require_columns(data, ID_COLUMNS, function)
        return data, data[list(ID_COLUMNS)]
    stored = getattr(data, table, None)
    users = getattr(data, "users", None)
    if isinstance(stored, pd.DataFrame) and isinstance(users, pd.DataFrame):  # a loaded snapshot
        return stored, users
    profiles = as_profiles(data)
    part = _COHORT_IDS if table == "cohorts" else _COMPUTATIONS
    answered = [p for p in profiles if part(p) is not None]
    frame = cohorts(answered) if table == "cohorts" else computations(answered)
    return frame, pd.DataFrame(_id_columns(answered))


class _TwoSnapshots(NamedTuple):
    """Two snapshots' long tables, one user numbering over both, and who is in both."""

    old: pd.DataFrame
    new: pd.DataFrame
    user_old: np.ndarray  # per row of ``old``: the user's code
    user_new: np.ndarray
    both: np.ndarray  # per user code: present in both snapshots
    keys: np.ndarray  # per row of old, then of new: codes of ``column`` over both tables
    values: pd.Index  # what the codes of ``column`` stand for


def _two_snapshots(before: Any, after: Any, table: str, column: str, function: str) -> _TwoSnapshots:
    """What :func:`cohort_changes` and :func:`computation_changes` start from."""
    from .grouping import shared_codes, shared_user_codes

    old, users_old = _table_and_users(before, table, function)
    new, users_new = _table_and_users(after, table, function)
    for frame in (old, new):
        require_columns(frame, [*ID_COLUMNS, column], function)
    numbered, n_users = shared_user_codes(users_old, users_new, old, new)
    present = np.zeros((2, max(n_users, 1)), dtype=bool)
    present[0, numbered[0]] = True
    present[1, numbered[1]] = True
    (keys_old, keys_new), values = shared_codes(old[column], new[column])
    return _TwoSnapshots(old, new, numbered[2], numbered[3], present[0] & present[1],
                         np.concatenate([keys_old, keys_new]), values)


def _user_rows(frames: Sequence[pd.DataFrame], codes: Sequence[np.ndarray], wanted: np.ndarray) -> pd.DataFrame:
    """``user_id`` and ``device_id`` for each wanted user code (taken from whichever frame has it)."""
    keys = pd.concat([frame[list(ID_COLUMNS)] for frame in frames], ignore_index=True)
    all_codes = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    row_of = np.zeros(int(all_codes.max()) + 1 if len(all_codes) else 1, dtype=np.int64)
    row_of[all_codes[::-1]] = np.arange(len(all_codes) - 1, -1, -1)  # the first row of each user
    picked = keys.iloc[row_of[wanted]].reset_index(drop=True)
    return picked.astype({"user_id": ID_DTYPE, "device_id": ID_DTYPE})


@shared_docs(changes=_CHANGE_DOCS.format(table="``cohorts``"))
def cohort_changes(before: Any, after: Any) -> pd.DataFrame:
    """Who joined, left or stayed in each cohort between two snapshots.

    Parameters
    ----------
    {changes}

    Returns
    -------
    pandas.DataFrame
        Columns (:data:`COHORT_CHANGE_COLUMNS`): ``user_id``, ``device_id`` (str),
        ``cohort_id`` (category), ``change`` (category ``joined`` / ``left`` /
        ``stayed``, :data:`CHANGE_DTYPE`). One row per user present in both and cohort
        they were in before or after, in the users' order of appearance, then by cohort.
    """
    two = _two_snapshots(before, after, "cohorts", "cohort_id", "cohort_changes")
    old, new, user_old, user_new, both = two.old, two.new, two.user_old, two.user_new, two.both
    cohort_old, cohort_new, cohort_values = two.keys[:len(old)], two.keys[len(old):], two.values
    n_cohorts = max(len(cohort_values), 1)
    key_old = np.unique((user_old * n_cohorts + cohort_old)[both[user_old]])
    key_new = np.unique((user_new * n_cohorts + cohort_new)[both[user_new]])
    keys = np.union1d(key_old, key_new)
    in_old, in_new = np.isin(keys, key_old), np.isin(keys, key_new)
    change = np.where(in_old & in_new, 2, np.where(in_new, 0, 1))
    user, cohort = np.divmod(keys, n_cohorts)
    frame = _user_rows([old, new], [user_old, user_new], user)
    frame["cohort_id"] = _categorical(np.asarray(cohort_values, dtype=object)[cohort] if len(cohort) else _objects([]))
    frame["change"] = pd.Categorical.from_codes(change, dtype=CHANGE_DTYPE)
    return frame[list(COHORT_CHANGE_COLUMNS)]


@shared_docs(changes=_CHANGE_DOCS.format(table="``computations``"))
def computation_changes(before: Any, after: Any) -> pd.DataFrame:
    """How each computed property of each user moved between two snapshots.

    Parameters
    ----------
    {changes}

    Returns
    -------
    pandas.DataFrame
        Columns (:data:`COMPUTATION_CHANGE_COLUMNS`): ``user_id``, ``device_id`` (str),
        ``computation`` (category), ``before``, ``after`` (float64: the value as a
        number, NaN when missing, null or not a number), ``delta`` (float64: ``after -
        before``), ``changed`` (bool: the text the API sent differs, or the
        computation came in one snapshot only). One row per user present in both and
        computation of either snapshot, in the users' order of appearance, then by
        computation.
    """
    two = _two_snapshots(before, after, "computations", "computation", "computation_changes")
    old, new, user_old, user_new, both = two.old, two.new, two.user_old, two.user_new, two.both
    for frame in (old, new):
        require_columns(frame, ["value"], "computation_changes")
    name_old, name_new, names = two.keys[:len(old)], two.keys[len(old):], two.values
    n_names = max(len(names), 1)

    def cells(frame: pd.DataFrame, user: np.ndarray, name: np.ndarray) -> pd.DataFrame:
        keep = both[user]
        raw = frame["raw"] if "raw" in frame.columns else frame["value"].astype("str")
        return pd.DataFrame({"key": (user * n_names + name)[keep],
                             "value": frame["value"].to_numpy(dtype=float)[keep],
                             "raw": raw.astype(object).to_numpy()[keep]}).drop_duplicates("key")

    merged = cells(old, user_old, name_old).merge(cells(new, user_new, name_new), on="key", how="outer",
                                                  suffixes=("_before", "_after"), indicator=True)
    merged = merged.sort_values("key", kind="stable")
    user, name = np.divmod(merged["key"].to_numpy(dtype=np.int64), n_names)
    frame = _user_rows([old, new], [user_old, user_new], user)
    frame["computation"] = _categorical(np.asarray(names, dtype=object)[name] if len(name) else _objects([]))
    frame["before"] = merged["value_before"].to_numpy(dtype=float)
    frame["after"] = merged["value_after"].to_numpy(dtype=float)
    frame["delta"] = frame["after"] - frame["before"]
    text_before = merged["raw_before"].to_numpy(dtype=object)
    text_after = merged["raw_after"].to_numpy(dtype=object)
    same = np.fromiter(map(_same_text, text_before, text_after), dtype=bool, count=len(merged))
    frame["changed"] = (merged["_merge"].to_numpy() != "both") | ~same
    return frame[list(COMPUTATION_CHANGE_COLUMNS)]


def _same_text(a: Any, b: Any) -> bool:
    return (_missing(a) and _missing(b)) or (not _missing(a) and not _missing(b) and a == b)


