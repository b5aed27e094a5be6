"""The numpy grouping kernels the analysis modules share.

Integer codes for the values of a column (:func:`codes`, :func:`user_codes`,
:func:`run_codes`, :func:`sorted_group_codes`), sort orders over integer keys
(:func:`sort_order`, :func:`is_sorted`) and runs of equal keys (:func:`run_starts`,
:func:`has_repeats`): the pieces :mod:`amptools.metrics`, :mod:`amptools.plots` and
:mod:`amptools.tables`' comparisons build on, so that each is exact and linear (or
one integer sort) in the number of rows.

Package-internal: users reach these through the modules above.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "codes",
    "comparable",
    "has_repeats",
    "is_sorted",
    "run_codes",
    "run_starts",
    "shared_codes",
    "shared_user_codes",
    "sort_order",
    "sorted_group_codes",
    "user_codes",
]


def codes(values: pd.Series | pd.Index) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (NaN kept as its own value) and the uniques they index."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        # categorical codes come for free; unused categories only leave gaps
        categories = values.cat.categories if isinstance(values, pd.Series) else values.categories
        numbers = np.asarray(values.cat.codes if isinstance(values, pd.Series) else values.codes, dtype=np.int64)
        if len(numbers) and numbers.min() < 0:
            numbers = np.where(numbers < 0, len(categories), numbers)
        return numbers, pd.Index([*categories, np.nan], dtype=object)
    numbers, uniques = pd.factorize(values, use_na_sentinel=False)
    return numbers.astype(np.int64, copy=False), pd.Index(uniques)


def comparable(values: pd.Series) -> np.ndarray:
    """An array whose ``!=`` between neighbours tells equal values apart, cheaply.

    Categorical columns give their integer codes; everything else an object array
    (free for pandas' ``str`` dtype), with ``pd.NA`` replaced by None so that ``!=``
    stays boolean.
    """
    result: np.ndarray
    if isinstance(values.dtype, pd.CategoricalDtype):
        result = np.asarray(values.cat.codes)
    elif getattr(values.dtype, "na_value", None) is pd.NA and values.hasnans:
        result = values.to_numpy(dtype=object, na_value=None)
    else:
        result = values.to_numpy(dtype=object)
    return result


def run_codes(keys: np.ndarray) -> np.ndarray:
    """``pd.factorize(keys)[0]`` for integer keys, fast when equal keys come in runs.

    Only the first key of each run of equal neighbours is hashed; the codes number
    distinct keys in order of first appearance, as :func:`pandas.factorize` does.
    """
    keys = np.asarray(keys)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.empty(len(keys), dtype=bool)
    starts[0] = True
    np.not_equal(keys[1:], keys[:-1], out=starts[1:])
    head_codes: np.ndarray = pd.factorize(keys[starts])[0].astype(np.int64, copy=False)
    per_row: np.ndarray = head_codes[np.cumsum(starts) - 1]
    return per_row


def user_codes(frame: pd.DataFrame) -> np.ndarray:
    """One integer per distinct ``(user_id, device_id)`` pair of ``frame``, per row.

    Codes run 0, 1, ... in order of first appearance (as :func:`pandas.factorize`);
    a missing id is a value of its own.  Works on any dtype of the two columns
    (``str``, object, category).  Tables list a user's rows together, so only the
    first row of each run of equal keys is hashed: about 30 ms for 3,000,000 rows.
    :mod:`amptools.plots` uses it to code users of any long table.
    """
    return shared_user_codes(frame)[0][0]


def _differs_from_previous(values: pd.Series) -> np.ndarray:
    """Per row: its value differs from the previous row's (the first row: True).

    Arrow-backed text is compared in Arrow (no Python string per row), categorical
    columns by code, anything else as objects; a missing value always starts a run
    (harmless: a run of missing values is only split in several).
    """
    n_rows = len(values)
    starts = np.ones(n_rows, dtype=bool)
    if n_rows < 2:
        return starts
    if isinstance(values.dtype, pd.CategoricalDtype):
        numbers = np.asarray(values.cat.codes)
        starts[1:] = (numbers[1:] != numbers[:-1]) | (numbers[1:] < 0)
    elif getattr(values.dtype, "storage", None) == "pyarrow":
        import pyarrow.compute as pc

        text = values.array.__arrow_array__()
        differs = pc.fill_null(pc.not_equal(text[1:], text[:-1]), True)
        starts[1:] = differs.to_numpy(zero_copy_only=False)
    else:
        objects = comparable(values)
        starts[1:] = objects[1:] != objects[:-1]
    return starts


def _values_at(values: pd.Series, rows: np.ndarray) -> pd.Series:
    """The values of ``rows`` (a mask): text stays text (Arrow stays Arrow), categories become values."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        numbers = np.asarray(values.cat.codes)[rows]
        categories = np.concatenate([np.asarray(values.cat.categories, dtype=object), np.array([None], dtype=object)])
        return pd.Series(categories[np.where(numbers >= 0, numbers, len(categories) - 1)], dtype=object)
    return values[rows].reset_index(drop=True)


def _factorize(parts: list[pd.Series]) -> tuple[np.ndarray, int]:
    """``pd.factorize`` of the parts end to end (missing a value of its own); Arrow text in Arrow."""
    dtypes = {str(part.dtype) for part in parts}
    joined = pd.concat(parts, ignore_index=True) if len(dtypes) == 1 else pd.concat(
        [part.astype(object) for part in parts], ignore_index=True)
    numbers, uniques = pd.factorize(joined, use_na_sentinel=False)
    return np.asarray(numbers, dtype=np.int64), len(uniques)


def shared_user_codes(*frames: pd.DataFrame) -> tuple[list[np.ndarray], int]:
    """:func:`user_codes` of several frames with one numbering: equal users, equal codes.

    Returns the codes of each frame's rows (first appearance over the frames in order)
    and the number of distinct users.  Only the first row of each run of equal keys
    is hashed.
    """
    heads_user: list[pd.Series] = []
    heads_device: list[pd.Series] = []
    runs: list[np.ndarray] = []
    for frame in frames:
        starts = _differs_from_previous(frame["user_id"]) | _differs_from_previous(frame["device_id"])
        heads_user.append(_values_at(frame["user_id"], starts))
        heads_device.append(_values_at(frame["device_id"], starts))
        runs.append(starts)
    if not sum(map(len, heads_user)):
        return [np.zeros(0, dtype=np.int64) for _ in frames], 0
    user_head, _ = _factorize(heads_user)
    device_head, n_devices = _factorize(heads_device)
    head_key = user_head * max(n_devices, 1) + device_head
    head_codes, uniques = pd.factorize(head_key)
    head_codes = head_codes.astype(np.int64, copy=False)
    result: list[np.ndarray] = []
    offset = 0
    for starts in runs:
        n_heads = int(starts.sum())
        mine = head_codes[offset:offset + n_heads]
        offset += n_heads
        result.append(mine[np.cumsum(starts) - 1] if len(starts) else np.zeros(0, dtype=np.int64))
    return result, len(uniques)


def shared_codes(*columns: pd.Series, sort: bool = True) -> tuple[list[np.ndarray], pd.Index]:
    """Integer codes of several columns' values with one numbering.

    Returns each column's codes and the values they index: sorted (first-appearance
    order when the values do not sort), a missing value last.  Categorical columns
    cost one small mapping of their categories, whatever their length.  With
    ``sort=False`` the first column keeps its own codes (no pass over its rows) and
    the values are in no particular order.
    """
    if not sort and columns:
        first, first_values = codes(columns[0])
        rest, rest_values = shared_codes(*columns[1:]) if len(columns) > 1 else ([], pd.Index([], dtype=object))
        values = first_values.append(rest_values[~rest_values.isin(first_values)]) if len(rest_values) else first_values
        mapping = values.get_indexer(rest_values)
        if pd.isna(values).any():  # get_indexer finds NaN; keep one missing value
            mapping = np.where(pd.isna(rest_values), np.flatnonzero(pd.isna(values))[0], mapping)
        return [first, *[mapping[numbers] if len(numbers) else numbers for numbers in rest]], pd.Index(values, dtype=object)
    per_column = [codes(column) for column in columns]
    present: list[object] = []
    has_missing = False
    for numbers, uniques in per_column:
        used = np.bincount(numbers, minlength=len(uniques)) > 0
        for value, is_used in zip(uniques, used.tolist()):
            if not is_used:
                continue
            if pd.isna(value):
                has_missing = True
            else:
                present.append(value)
    distinct = list(dict.fromkeys(present))
    try:
        distinct = sorted(distinct)  # type: ignore[type-var]  # values that do not sort keep their order
    except TypeError:
        pass
    index = pd.Index(distinct + ([np.nan] if has_missing else []), dtype=object)
    missing_code = len(distinct)
    result = []
    for numbers, uniques in per_column:
        mapping = index.get_indexer(pd.Index(uniques, dtype=object))
        if has_missing:
            mapping = np.where(pd.isna(pd.Index(uniques, dtype=object)), missing_code, mapping)
        if np.array_equal(mapping, np.arange(len(mapping))):
            result.append(numbers)  # the values are already in this order
        else:
            result.append(mapping.astype(np.int64, copy=False)[numbers] if len(numbers) else np.zeros(0, dtype=np.int64))
    return result, index


def sorted_group_codes(frame: pd.DataFrame, by_columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Codes numbering the groups of ``by_columns`` in ``groupby(sort=True, dropna=False)`` order.

    Returns the per-row codes and one row of ``frame[by_columns]`` per group (dtypes
    kept).  Categoricals order by category (missing last), nullable booleans
    False, True, missing; anything else by value with missing last.
    """
    n_rows = len(frame)
    combined = np.zeros(n_rows, dtype=np.int64)
    space = 1
    for column in by_columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            column_codes = np.asarray(values.cat.codes, dtype=np.int64)
            size = len(values.cat.categories) + 1
        elif pd.api.types.is_bool_dtype(values.dtype):
            data = values.to_numpy(dtype=bool, na_value=False).astype(np.int64)
            column_codes = np.where(values.isna().to_numpy(), 2, data) if values.hasnans else data
            size = 3
        else:
            try:
                column_codes, uniques = pd.factorize(values, sort=True)
            except TypeError:  # values that cannot be sorted keep first-appearance order
                column_codes, uniques = pd.factorize(values)
            column_codes = column_codes.astype(np.int64, copy=False)
            size = len(uniques) + 1
        column_codes = np.where(column_codes < 0, size - 1, column_codes)
        combined = combined * size + column_codes
        space *= size
    if space <= max(4 * n_rows, 1 << 20):
        present = np.flatnonzero(np.bincount(combined, minlength=space))
        lookup = np.full(space, -1, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        group_code = lookup[combined]
    else:
        group_code, present = pd.factorize(combined, sort=True)
        group_code = group_code.astype(np.int64, copy=False)
    any_row = np.zeros(len(present), dtype=np.int64)
    any_row[group_code] = np.arange(n_rows)  # any row of a group carries its values
    return group_code, frame[by_columns].iloc[any_row].reset_index(drop=True)


def has_repeats(keys: np.ndarray) -> bool:
    """Whether any integer key occurs twice (one value sort, no hashing)."""
    if len(keys) < 2:
        return False
    ordered = np.sort(keys)
    return bool((ordered[1:] == ordered[:-1]).any())


def sort_order(*keys: np.ndarray) -> np.ndarray:
    """Stable argsort of rows by non-negative integer keys, the first key primary.

    The packed-sort idiom, written once: when the keys and the row number fit in one
    int64 they are packed into one integer and sorted by value (several times faster
    than :func:`numpy.lexsort`; the row number in the low digits keeps it stable),
    otherwise :func:`numpy.lexsort`.
    """
    n_rows = len(keys[0])
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = [int(key.max()) + 1 for key in keys]
    if n_rows * int(np.prod(sizes, dtype=object)) >= 2**62:
        return np.lexsort(keys[::-1])
    packed = np.zeros(n_rows, dtype=np.int64)
    for key, size in zip(keys, sizes):
        packed = packed * size + key
    return np.sort(packed * n_rows + np.arange(n_rows)) % n_rows


def is_sorted(*keys: np.ndarray) -> bool:
    """Whether the rows are already in the order :func:`sort_order` would give."""
    undecided = np.ones(max(len(keys[0]) - 1, 0), dtype=bool)
    for key in keys:
        later, earlier = key[1:], key[:-1]
        if (undecided & (later < earlier)).any():
            return False
        undecided &= later == earlier
    return True


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Mask of the rows whose keys differ from the previous row's (the first row included)."""
    n_rows = len(keys[0])
    starts = np.zeros(n_rows, dtype=bool)
    if n_rows:
        starts[0] = True
        for key in keys:
            starts[1:] |= key[1:] != key[:-1]
    return starts
