"""The analysis modules' one home for what they share (amptools.frames, amptools.grouping).

Issue 23 item 2: key columns, frame checks, deprecations and shared docs live in
``frames``; the numpy grouping kernels in ``grouping``; no analysis module imports
another's underscore name; old spellings keep working through a deprecation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from amptools import frames, grouping, metrics, plots, tables



def test_one_name_for_the_key_columns():
    assert frames.ID_COLUMNS == ("user_id", "device_id")
    assert tables.ID_COLUMNS is frames.ID_COLUMNS
    assert frames.LIST_COLUMNS == ("user_id", "device_id", "rank", "item")
    with pytest.warns(DeprecationWarning, match=r"^amptools\.metrics\.USER_KEY is deprecated, use amptools\.tables\.ID_COLUMNS"):
        assert metrics.USER_KEY == frames.ID_COLUMNS
    with pytest.warns(DeprecationWarning, match=r"^amptools\.plots\.USER_KEY is deprecated"):
        assert plots.USER_KEY == frames.ID_COLUMNS
    with pytest.warns(DeprecationWarning, match=r"^amptools\.plots\.NEEDS_RECOMMENDATIONS is deprecated, use amptools\.frames\.LIST_COLUMNS"):
        assert plots.NEEDS_RECOMMENDATIONS == frames.LIST_COLUMNS
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        metrics.nothing_here  # noqa: B018


def test_old_homes_of_the_helpers_still_work_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from amptools.metrics import require_columns  # braze.py imports it from here

        assert require_columns is frames.require_columns
        assert metrics.user_codes is grouping.user_codes
        assert metrics.deprecated_arguments is frames.deprecated_arguments
        assert tables.shared_docs is frames.shared_docs


def test_require_columns_names_what_is_missing_and_what_is_expected():
    frame = pd.DataFrame({"user_id": ["a"], "item": ["x"]})
    with pytest.raises(ValueError, match=r"^f\(\): missing column\(s\) 'device_id', 'rank'\. "
                                         r"It expects the columns 'user_id', 'device_id', 'rank', 'item'; "
                                         r"the frame has 'user_id', 'item'\.$"):
        frames.require_columns(frame, frames.LIST_COLUMNS, "f")
    with pytest.raises(TypeError, match="expects a pandas DataFrame first, got list"):
        frames.require_columns([], ["a"], "f")
    frames.require_columns(frame, ["item", "item"], "f")  # present: no error


def test_shared_docs_fill_placeholders_and_keep_doubled_braces():
    @frames.shared_docs(piece="the piece")
    def documented():
        """Uses {piece} and {{"a", "b"}}."""

    assert documented.__doc__ == 'Uses the piece and {"a", "b"}.'
    assert "{common}" not in plots.item_frequency.__doc__
    assert "{set_similarity}" not in metrics.jaccard.__doc__


def test_deprecated_arguments_map_old_spellings_and_name_the_function():
    @frames.deprecated_arguments("k", size="k")
    def cut(items, *, k=None):
        return list(items)[:k]

    assert cut([1, 2, 3], k=2) == [1, 2]
    with pytest.warns(DeprecationWarning, match=r"\.cut\(\): pass k= by keyword"):
        assert cut([1, 2, 3], 1) == [1]
    with pytest.warns(DeprecationWarning, match=r"\.cut\(\): size= is deprecated, use k="):
        assert cut([1, 2, 3], size=1) == [1]
    with pytest.raises(TypeError, match="pass only k="):
        cut([1], size=1, k=1)


@pytest.mark.parametrize("wide", [False, True])
def test_sort_order_is_a_stable_lexicographic_argsort(wide):
    rng = np.random.default_rng(0)
    keys = [rng.integers(0, 5, 400), rng.integers(0, 3, 400), rng.integers(0, 2**55 if wide else 7, 400)]
    expected = np.lexsort(keys[::-1])  # numpy's lexsort is stable; the last key is primary there
    np.testing.assert_array_equal(grouping.sort_order(*keys), expected)
    assert grouping.is_sorted(*(key[expected] for key in keys)) and not grouping.is_sorted(*keys)
    assert grouping.sort_order(np.zeros(0, np.int64)).shape == (0,)


def test_user_codes_number_pairs_in_first_appearance_order():
    frame = pd.DataFrame({"user_id": pd.array(["a", "a", "b", None, "a", None, "b"], dtype="str"),
                          "device_id": ["x", "x", "y", "z", "y", "z", "y"]})
    expected = pd.factorize(frame["user_id"].fillna("<na>") + "|" + frame["device_id"])[0]
    np.testing.assert_array_equal(grouping.user_codes(frame), expected)
    np.testing.assert_array_equal(grouping.user_codes(frame.astype({"user_id": "category", "device_id": "category"})), expected)
    np.testing.assert_array_equal(grouping.user_codes(frame.astype({"user_id": "string"})), expected)
    assert grouping.user_codes(frame.iloc[:0]).shape == (0,)


def test_run_codes_and_run_starts_agree_with_pandas():
    keys = np.array([3, 3, 1, 1, 1, 3, 2, 2, 0])
    np.testing.assert_array_equal(grouping.run_codes(keys), pd.factorize(keys)[0])
    np.testing.assert_array_equal(grouping.run_starts(keys), [True, False, True, False, False, True, True, False, True])
    assert grouping.has_repeats(keys) and not grouping.has_repeats(np.arange(5))
