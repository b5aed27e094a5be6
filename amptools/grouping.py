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
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    user = comparable(frame["user_id"])
    device = comparable(frame["device_id"])
    # `!=` on objects treats NaN as unequal to itself: harmless, a NaN row just starts a run
    starts = np.empty(len(frame), dtype=bool)
    starts[0] = True
    starts[1:] = (user[1:] != user[:-1]) | (device[1:] != device[:-1])
    user_head = pd.factorize(user[starts], use_na_sentinel=False)[0].astype(np.int64, copy=False)
    device_head, device_uniques = pd.factorize(device[starts], use_na_sentinel=False)
    head_key = user_head * max(len(device_uniques), 1) + device_head
    head_codes: np.ndarray = pd.factorize(head_key)[0].astype(np.int64, copy=False)
    per_row: np.ndarray = head_codes[np.cumsum(starts) - 1]
    return per_row


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
        step = np.diff(key)
        if (undecided & (step < 0)).any():
            return False
        undecided &= step == 0
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
