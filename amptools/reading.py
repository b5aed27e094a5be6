"""Stored raw answers to the tidy tables, fast: no profile object per user.

Answers kept as JSON text (a snapshot's ``raw`` table; a profile cache keeps the same
text) are turned into :mod:`amptools.tables`' tables column by column: pyarrow's JSON
reader (C++, typed by an explicit schema) reads the ids, the recommendation sets and the
cohorts straight into Arrow columns, and msgspec decodes the property and computation
objects, which the table functions then type exactly as always.

The result is exactly what the table functions build from
``UserProfile.from_payloads`` of the same bodies (the tests compare them). Anything the
fast path does not handle as the models do — a number where text belongs, a
``cohort_memberships`` spelling, a millisecond or fractional timestamp, a query whose
computations share one object with the properties — sends the whole batch down that
exact path instead, so the fast path only ever decides how fast, never what comes out.
``benchmarks/bench_reading.py`` measures it against ``json.loads`` + ``json_normalize``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from . import tables
from .models import ComputationNames, UserProfile
from .query import ProfileQuery

__all__ = ["FAST_TABLES", "read_profiles", "read_tables"]

#: The tables :func:`read_tables` builds on its fast path (any other goes through the profiles).
FAST_TABLES: tuple[str, ...] = ("recommendations", "properties", "cohorts", "computations")

# The earliest and latest last_updated the models accept (1970 up to 2200), in seconds.
_EARLIEST, _LATEST = 0.0, 7_258_118_400.0


class _PropertiesData(msgspec.Struct):
    amp_props: dict[str, Any] | None = None
    # Spellings the models handle (and the fast path leaves to them).
    user_properties: msgspec.Raw | None = None
    computations: msgspec.Raw | None = None


class _PropertiesBody(msgspec.Struct):
    userData: _PropertiesData


_TEXT_OR_NULL = frozenset({str, type(None)})


class _SlowPath(Exception):
    """The fast path does not handle these bodies as the models do: take the exact path."""


def _arrow() -> tuple[Any, Any]:
    import pyarrow as pa
    import pyarrow.json as pa_json

    return pa, pa_json


def _schema() -> Any:
    pa, _ = _arrow()
    recommendation = pa.struct([
        ("rec_id", pa.string()), ("child_rec_id", pa.string()), ("items", pa.list_(pa.string())),
        ("is_control", pa.bool_()), ("recommendation_source", pa.string()), ("last_updated", pa.float64()),
    ])
    user_data = pa.struct([
        ("user_id", pa.string()), ("device_id", pa.string()), ("recommendations", pa.list_(recommendation)),
        ("cohort_ids", pa.list_(pa.string())), ("cohort_memberships", pa.list_(pa.string())),
    ])
    return pa.schema([("userData", user_data)])


def read_profiles(
    bodies: Sequence[str],
    *,
    query: ProfileQuery | None = None,
    computation_bodies: Sequence[str | None] | None = None,
    names: Sequence[ComputationNames | None] | None = None,
) -> list[UserProfile]:
    """The exact path: every body parsed into a :class:`~amptools.models.UserProfile`.

    Parameters
    ----------
    bodies : sequence of str
        One JSON answer per user.
    query : ProfileQuery, optional
        What was asked (tells computations apart from properties).
    computation_bodies : sequence of str or None, optional
        The second answer of a user asked the two-request way, or None.
    names : sequence of ComputationNames or None, optional
        Per user, the computation names a merged answer was read with.
    """
    profiles = []
    for position, body in enumerate(bodies):
        payloads = [json.loads(body)]
        second = computation_bodies[position] if computation_bodies is not None else None
        if second is not None:
            payloads.append(json.loads(second))
        profiles.append(UserProfile.from_payloads(payloads, query, names[position] if names is not None else None))
    return profiles


def read_tables(
    bodies: Sequence[str],
    *,
    query: ProfileQuery | None = None,
    computation_bodies: Sequence[str | None] | None = None,
    names: Sequence[ComputationNames | None] | None = None,
    which: Iterable[str] = FAST_TABLES,
) -> dict[str, pd.DataFrame]:
    """The tables of stored answers, as :mod:`amptools.tables` builds them from the profiles.

    Parameters
    ----------
    bodies : sequence of str
        One JSON answer per user (the ``body`` column of a snapshot's raw table).
    query : ProfileQuery, optional
        What was asked.
    computation_bodies : sequence of str or None, optional
        The computations-only answer of users asked the two-request way.
    names : sequence of ComputationNames or None, optional
        Per user, the computation names a merged answer was read with (the exact path
        uses them).
    which : iterable of str
        Table function names of :mod:`amptools.tables` (``"recommendations"``,
        ``"properties"``, ``"cohorts"``, ``"computations"``, ``"propensities"``,
        ``"summary"``, ``"cohort_matrix"``).

    Returns
    -------
    dict of str to DataFrame
        One table per name in ``which``, equal to ``tables.<name>(profiles)``.
    """
    wanted = list(dict.fromkeys(which))
    unknown = [name for name in wanted if name not in tables.__all__ or not callable(getattr(tables, name))]
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(map(repr, unknown))}; tables are "
                         f"{', '.join(FAST_TABLES)}, propensities, summary, cohort_matrix.")
    try:
        if any(name not in FAST_TABLES for name in wanted) or not _fast_path_fits(bodies, query, computation_bodies):
            raise _SlowPath
        with _cyclic_gc_paused():
            return _fast_tables(bodies, query, computation_bodies, wanted)
    except _SlowPath:
        profiles = read_profiles(bodies, query=query, computation_bodies=computation_bodies, names=names)
        return {name: getattr(tables, name)(profiles) for name in wanted}


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the answers' objects are made, then as before.

    Decoding builds hundreds of thousands of dicts and lists, none in a cycle; each
    allocation burst makes the collector walk every object alive (the caller's too),
    which at 100,000 answers cost as much as the decoding itself. Reference counting
    still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fast_path_fits(bodies: Sequence[str], query: ProfileQuery | None,
                    computation_bodies: Sequence[str | None] | None) -> bool:
    """Whether the query's answers split into properties and computations without names."""
    seconds = list(computation_bodies or ())
    if query is None or not query.asks_computations or not query.amp_props:
        # no computations, or nothing but computations (all of amp_props): one answer a user
        return seconds.count(None) == len(seconds)
    # properties and computations: only answers asked the two-request way split by themselves
    return computation_bodies is not None and None not in seconds


def _fast_tables(bodies: Sequence[str], query: ProfileQuery | None,
                 computation_bodies: Sequence[str | None] | None, wanted: list[str]) -> dict[str, pd.DataFrame]:
    pa, pa_json = _arrow()
    lines = "\n".join(bodies)
    if lines.count("\n") != len(bodies) - 1 or "\r" in lines:
        raise _SlowPath  # the JSON reader takes one answer a line
    try:
        read = pa_json.read_json(
            io.BytesIO(lines.encode("utf-8")),
            parse_options=pa_json.ParseOptions(explicit_schema=_schema(), unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, UnicodeEncodeError):
        raise _SlowPath from None
    if read.num_rows != len(bodies):
        raise _SlowPath
    data = read.column("userData").combine_chunks()
    if data.null_count or data.field("cohort_memberships").null_count != len(data):
        raise _SlowPath  # an answer without userData (the exact path says why), or another spelling
    out: dict[str, pd.DataFrame] = {}
    ids = {name: data.field(name) for name in ("user_id", "device_id")}
    if "recommendations" in wanted:
        out["recommendations"] = _recommendations(data.field("recommendations"), ids)
    if "cohorts" in wanted:
        out["cohorts"] = _cohorts(data.field("cohort_ids"), ids)
    if "properties" in wanted or "computations" in wanted:
        fields = _answer_fields(bodies, query, computation_bodies, ids)
        for name in ("properties", "computations"):
            if name in wanted:
                out[name] = getattr(tables, name)(fields)
    return {name: out[name] for name in wanted}


def _text(values: Any) -> Any:
    """An Arrow string array as the tables' ``str`` column (no Python string per row)."""
    pa, _ = _arrow()
    return pd.array(values.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get),
                    dtype=tables.ID_DTYPE)


def _category(values: Any, rows: np.ndarray | None = None) -> pd.Categorical:
    """A column of text as the tables' categoricals (sorted ``str`` categories), repeated to ``rows``."""
    categories = pd.Categorical(_text(values))
    if rows is None:
        return categories
    return pd.Categorical.from_codes(np.asarray(categories.codes)[rows], dtype=categories.dtype)


def _recommendations(sets: Any, ids: dict[str, Any]) -> pd.DataFrame:
    pa, _ = _arrow()
    flat = sets.flatten()  # every set, users in order
    if flat.field("rec_id").null_count:
        raise _SlowPath  # the models refuse a set without a rec_id
    items = flat.field("items")
    item_values = items.flatten()
    if item_values.null_count:
        raise _SlowPath
    set_counts = np.asarray(sets.value_lengths().fill_null(0), dtype=np.int64)
    item_counts = np.asarray(items.value_lengths().fill_null(0), dtype=np.int64)
    set_user = np.repeat(np.arange(len(set_counts)), set_counts)
    row_set = np.repeat(np.arange(len(item_counts)), item_counts)
    starts = np.cumsum(item_counts) - item_counts
    rank = np.arange(1, len(row_set) + 1, dtype=np.int64) - np.repeat(starts, item_counts)
    seconds = np.asarray(flat.field("last_updated").to_numpy(zero_copy_only=False), dtype=np.float64)
    known = ~np.isnan(seconds)
    # Whole seconds in the models' range only: milliseconds and fractions are theirs to round.
    if ((seconds[known] != np.floor(seconds[known])) | (seconds[known] < _EARLIEST) | (seconds[known] >= _LATEST)).any():
        raise _SlowPath
    micros = np.where(known, seconds, 0).astype(np.int64) * 1_000_000
    stamps = np.where(known, micros, np.iinfo(np.int64).min).view("M8[us]")
    control = flat.field("is_control")
    control_values = np.asarray(control.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    control_missing = np.asarray(control.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    user_rows = pa.array(set_user[row_set])
    columns = {
        "user_id": _text(ids["user_id"].take(user_rows)),
        "device_id": _text(ids["device_id"].take(user_rows)),
        "rec_id": _category(flat.field("rec_id"), row_set),
        "child_rec_id": _category(flat.field("child_rec_id"), row_set),
        "recommendation_source": _category(flat.field("recommendation_source"), row_set),
        "is_control": pd.arrays.BooleanArray(control_values[row_set], control_missing[row_set]),
        "last_updated": pd.array(stamps[row_set], dtype=tables.TIMESTAMP_DTYPE),
        "rank": rank,
        "item": _category(item_values),
    }
    frame = pd.DataFrame(columns, copy=False)
    return frame.astype({name: dtype for name, dtype in tables.RECOMMENDATION_DTYPES.items()
                         if frame[name].dtype != dtype})


def _cohorts(lists: Any, ids: dict[str, Any]) -> pd.DataFrame:
    pa, _ = _arrow()
    values = lists.flatten()
    if values.null_count:
        raise _SlowPath  # the models refuse a null cohort id
    counts = np.asarray(lists.value_lengths().fill_null(0), dtype=np.int64)
    users = pa.array(np.repeat(np.arange(len(counts)), counts))
    frame = pd.DataFrame({"user_id": _text(ids["user_id"].take(users)),
                          "device_id": _text(ids["device_id"].take(users)),
                          "cohort_id": _category(values)}, copy=False)
    return frame.astype({name: dtype for name, dtype in tables.COHORT_DTYPES.items() if frame[name].dtype != dtype})


def _decoded(bodies: Iterable[str | None]) -> list[_PropertiesData | None]:
    decoder = msgspec.json.Decoder(_PropertiesBody)
    try:
        return [None if body is None else decoder.decode(body).userData for body in bodies]
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _SlowPath from None


def _answer_fields(bodies: Sequence[str], query: ProfileQuery | None,
                   computation_bodies: Sequence[str | None] | None, ids: dict[str, Any]) -> list[tables.AnswerFields]:
    """What the properties and computations tables read of each answer."""
    main = _decoded(bodies)
    if any(d is None or d.user_properties is not None or d.computations is not None for d in main):
        raise _SlowPath
    only_computations = query is not None and query.asks_computations and not query.amp_props
    listed = dict.fromkeys(query.computation_ids or ()) if query is not None else {}
    second = _decoded(computation_bodies) if computation_bodies is not None else [None] * len(main)
    user_ids = ids["user_id"].to_pylist()
    device_ids = ids["device_id"].to_pylist()
    fields = []
    for user_id, device_id, data, extra in zip(user_ids, device_ids, main, second):
        assert data is not None  # checked above
        props = data.amp_props
        computations: dict[str, Any] | None = None
        if only_computations:
            props, computations = None, _texts(props if props is not None else dict(listed))
        elif extra is not None:
            computations = _texts(extra.amp_props if extra.amp_props is not None else dict(listed))
        fields.append(tables.AnswerFields(user_id, device_id, props, computations))
    return fields


def _texts(values: dict[str, Any]) -> dict[str, Any]:
    """Computations come as text (or null); anything else is the models' to turn into text."""
    if not set(map(type, values.values())) <= _TEXT_OR_NULL:  # one C-level pass
        raise _SlowPath
    return values
