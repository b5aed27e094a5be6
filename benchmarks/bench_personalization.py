"""Personalization: the exact linear-time identity against the naive pairwise matrix.

1. 2,000 users: ours vs an N × N numpy cosine matrix — both values (must agree to
   1e-9), both times and the ratio.
2. Ours alone on 1,000,000 users × 10 items.

Lists are built with numpy from a Zipf-skewed catalog of 5,000 items.

Run:  .venv/bin/python benchmarks/bench_personalization.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from amptools import metrics


def zipf_lists(rng: np.random.Generator, n_users: int, k: int = 10, n_items: int = 5_000, a: float = 1.1) -> np.ndarray:
    """n_users × k distinct item ids drawn with Zipf-like weights."""
    weights = 1 / np.arange(1, n_items + 1) ** a
    draws = rng.choice(n_items, size=(n_users, 3 * k), p=weights / weights.sum())
    draws.sort(axis=1)
    repeated = np.zeros_like(draws, dtype=bool)
    repeated[:, 1:] = draws[:, 1:] == draws[:, :-1]
    draws[repeated] = n_items
    draws.sort(axis=1)
    out = draws[:, :k]
    short = out == n_items
    out[short] = rng.integers(0, n_items, short.sum())  # rare; may repeat an item, which both methods ignore
    return out


def as_table(lists: np.ndarray) -> pd.DataFrame:
    n_users, k = lists.shape
    users = np.array([f"user-{i}" for i in range(n_users)], dtype=object)
    return pd.DataFrame({
        "user_id": np.repeat(users, k), "device_id": np.repeat(users, k),
        "rec_id": pd.Categorical(["home_page"] * (n_users * k)),
        "rank": np.tile(np.arange(1, k + 1), n_users),
        "item": pd.Categorical.from_codes(lists.ravel(), [f"item-{i}" for i in range(int(lists.max()) + 1)]),
    })


def naive(lists: np.ndarray) -> float:
    """1 - mean off-diagonal cosine of the binary user × item matrix (O(N²) memory)."""
    n_users = len(lists)
    matrix = np.zeros((n_users, int(lists.max()) + 1))
    matrix[np.repeat(np.arange(n_users), lists.shape[1]), lists.ravel()] = 1.0
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    cosine = unit @ unit.T
    return float(1 - (cosine.sum() - np.trace(cosine)) / (n_users * (n_users - 1)))


def main() -> None:
    rng = np.random.default_rng(0)
    small = zipf_lists(rng, 2_000)
    table = as_table(small)
    start = time.perf_counter()
    ours = metrics.personalization_score(table)
    ours_time = time.perf_counter() - start
    start = time.perf_counter()
    reference = naive(small)
    naive_time = time.perf_counter() - start
    print(f"2,000 users × 10 items: ours {ours:.12f} in {ours_time * 1000:.1f} ms; "
          f"naive pairwise {reference:.12f} in {naive_time * 1000:.1f} ms; "
          f"|difference| {abs(ours - reference):.2e}; naive / ours = {naive_time / ours_time:.1f}×")
    assert abs(ours - reference) < 1e-9, "the identity and the pairwise matrix disagree"
    start = time.perf_counter()
    plain = metrics.personalization_score(small.tolist())
    print(f"same users as a plain list of lists: {plain:.12f} in {(time.perf_counter() - start) * 1000:.1f} ms")

    big = zipf_lists(rng, 1_000_000)
    big_table = as_table(big)
    start = time.perf_counter()
    value = metrics.personalization_score(big_table)
    print(f"1,000,000 users × 10 items (tidy table, {len(big_table):,} rows): {value:.6f} in "
          f"{time.perf_counter() - start:.2f} s (the naive matrix would need "
          f"{1_000_000 ** 2 * 8 / 1e12:.0f} TB)")


if __name__ == "__main__":
    main()
