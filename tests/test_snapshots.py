"""amptools.snapshots: a store of snapshots as a Parquet dataset, against the real sample org.

Saved and read back with nothing lost (also by ``pyarrow.dataset``, as DuckDB or Spark
would read it), written whole or not at all, orgs and queries never mixed, the key never
written.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.dataset as ds
import pytest

import amptools as amp
from amptools import snapshots, tables
from amptools.sample import SampleServer

QUERY = amp.ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                         computations=True, predictions=("0x2a7c",))


@pytest.fixture(scope="module")
def server():
    with SampleServer(rate_limit=100_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def fetched(server):
    """A real ProfileSet: ok users, one unknown user, a merged query (one request per user)."""
    client = server.client(rate_limit=100_000)
    client.acknowledge_exposure()
    ids = [*server.org.user_ids[:40], "nobody-knows-me"]
    return client.get_profiles(ids, query=QUERY, progress=False)


def test_a_snapshot_is_read_back_with_nothing_lost(tmp_path, fetched):
    store = tmp_path / "store"
    snapshot = snapshots.save(fetched, store, label="first", taken_at="2024-06-12T06:00:00Z")
    assert snapshot.startswith("20240612T060000Z-")
    listing = snapshots.list(store)
    assert list(listing.columns) == list(snapshots.MANIFEST_COLUMNS)
    row = listing.iloc[0]
    assert (row["snapshot"], row["label"], row["n_ids"], row["n_ok"], row["n_not_found"]) == (
        snapshot, "first", 41, fetched.ok, fetched.not_found)
    assert row["taken_at"] == pd.Timestamp("2024-06-12T06:00:00Z")
    assert row["org"] == fetched.scope and "key:" in row["org"]
    assert row["query"] == QUERY.canonical()

    loaded = snapshots.load(store, "first")
    assert loaded.id == snapshot and loaded.query == QUERY
    for name in snapshots.STORED_TABLES:
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(tables, name)(fetched))
    # The ProfileSet rebuilt from the raw answers: the same outcomes and the same tables.
    rebuilt = loaded.profiles
    pd.testing.assert_frame_equal(rebuilt.outcomes, fetched.outcomes)
    pd.testing.assert_frame_equal(rebuilt.failures, fetched.failures)
    for name in ("recommendations", "properties", "cohorts", "computations", "propensities", "summary"):
        pd.testing.assert_frame_equal(getattr(tables, name)(rebuilt), getattr(tables, name)(fetched), obj=name)
    assert [p.raw for p in rebuilt.profiles] == [p.raw for p in fetched.profiles]
    assert rebuilt.scope == fetched.scope
    # Tables not stored are rebuilt from the answers (properties by amptools.reading).
    for name in ("properties", "summary", "propensities", "cohort_matrix"):
        pd.testing.assert_frame_equal(loaded.table(name), getattr(tables, name)(fetched), obj=name)
    pd.testing.assert_frame_equal(loaded.properties, tables.properties(fetched))
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        loaded.table("nope")


def test_a_snapshot_of_answers_asked_two_ways_rebuilds_its_properties(tmp_path, server):
    client = server.client(rate_limit=100_000)
    query = amp.ProfileQuery(amp_props=True, computations=True, split_computations=True)
    fetched = client.get_profiles(server.org.user_ids[:20], query=query, progress=False)
    snapshots.save(fetched, tmp_path / "store")
    loaded = snapshots.load(tmp_path / "store")
    pd.testing.assert_frame_equal(loaded.properties, tables.properties(fetched))
    pd.testing.assert_frame_equal(loaded.computations, tables.computations(fetched))


def test_pyarrow_dataset_reads_the_store_as_it_is(tmp_path, fetched):
    store = tmp_path / "store"
    first = snapshots.save(fetched, store, taken_at="2024-06-12")
    second = snapshots.save(fetched, store, taken_at="2024-06-13")
    dataset = ds.dataset(store / "recommendations", format="parquet", partitioning="hive")
    frame = dataset.to_table().to_pandas()
    assert sorted(frame["snapshot"].unique()) == sorted([first, second])
    recs = tables.recommendations(fetched)
    for snapshot in (first, second):
        mine = frame[frame["snapshot"] == snapshot].drop(columns="snapshot").reset_index(drop=True)
        assert len(mine) == len(recs)
        pd.testing.assert_frame_equal(mine.astype(recs.dtypes.to_dict()), recs, check_categorical=False)
    manifest = ds.dataset(store / "manifest", format="parquet", partitioning="hive").to_table().to_pandas()
    assert sorted(manifest["snapshot"].astype(str)) == sorted([first, second])
    raw = ds.dataset(store / "raw", format="parquet", partitioning="hive").to_table().to_pandas()
    assert len(raw) == 2 * len(fetched.ids)


def test_the_key_is_never_written(tmp_path, server, fetched):
    store = tmp_path / "store"
    snapshots.save(fetched, store)
    written = b"".join(path.read_bytes() for path in store.rglob("*") if path.is_file())
    assert server.secret_key.encode() not in written
    assert fetched.scope.split("key:")[1].encode() in written  # the fingerprint is there instead


def test_a_failed_write_leaves_the_store_as_it_was(tmp_path, fetched, monkeypatch):
    store = tmp_path / "store"
    snapshots.save(fetched, store, label="kept")
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    import pyarrow.parquet as pq

    real_write = pq.write_table
    calls = []

    def failing_write(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        snapshots.save(fetched, store)
    monkeypatch.setattr(pq, "write_table", real_write)
    real_replace = os.replace
    moves = []

    def failing_replace(source, target):
        moves.append(target)
        if len(moves) == 3:
            raise OSError("the disk went away")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="went away"):
        snapshots.save(fetched, store)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before
    assert list(snapshots.list(store)["label"]) == ["kept"]
    assert len(ds.dataset(store / "recommendations", partitioning="hive").to_table()) == len(tables.recommendations(fetched))


def test_what_a_killed_writer_left_is_cleaned_up_by_the_next_save(tmp_path, fetched):
    store = tmp_path / "store"
    snapshots.save(fetched, store)
    orphan = store / "recommendations" / "snapshot=20990101T000000Z-dead00"
    orphan.mkdir()
    (orphan / "part-0.parquet").write_bytes(b"half a file")
    (store / "_staging" / "x").mkdir(parents=True)
    assert len(snapshots.list(store)) == 1  # not a snapshot: it has no manifest row
    snapshots.save(fetched, store)
    assert not orphan.exists() and not (store / "_staging").exists()
    assert len(ds.dataset(store / "recommendations", partitioning="hive").to_table()) == 2 * len(
        tables.recommendations(fetched))


def test_orgs_and_queries_are_told_apart_never_mixed(tmp_path, server, fetched):
    store = tmp_path / "store"
    snapshots.save(fetched, store, label="org A")
    with SampleServer(secret_key="another-org-key", rate_limit=100_000) as other:
        other_client = other.client(rate_limit=100_000)
        other_client.acknowledge_exposure()
        other_set = other_client.get_profiles(other.org.user_ids[:10], query=QUERY,
                                                                    progress=False)
    snapshots.save(other_set, store, label="org B")
    client = server.client(rate_limit=100_000)
    client.acknowledge_exposure()
    narrow = client.get_profiles(server.org.user_ids[:10], recs=("home-feed",), progress=False)
    snapshots.save(narrow, store, label="other query")
    snapshots.save(fetched, store, label="org A again")
    listing = snapshots.list(store)
    assert listing["series"].nunique() == 3
    assert listing.loc[listing["label"] == "org A", "series"].item() == listing.loc[
        listing["label"] == "org A again", "series"].item()
    with pytest.raises(snapshots.SnapshotError, match="different org"):
        snapshots.pair(store, "org A", "org B")
    with pytest.raises(snapshots.SnapshotError, match="different query"):
        snapshots.pair(store, "org A", "other query")
    first, last = snapshots.pair(store)  # the newest and the one before it in its series
    assert (first.label, last.label) == ("org A", "org A again")
    history = snapshots.drift_history(store)
    assert list(history["before"]) == [first.id] * 2 and set(history["rec_id"]) == {"home-feed", "similar-items"}
    assert (history["mean_rbo"] == 1.0).all()  # the same answers twice


def test_snapshots_are_found_by_id_label_or_position_with_clear_errors(tmp_path, fetched):
    store = tmp_path / "store"
    with pytest.raises(snapshots.SnapshotError, match="no snapshots in"):
        snapshots.load(store)
    first = snapshots.save(fetched, store, label="a", taken_at="2024-01-01")
    second = snapshots.save(fetched, store, label="a", taken_at="2024-01-02")
    assert snapshots.load(store, 0).id == first and snapshots.load(store, -1).id == second
    assert snapshots.load(store, second).id == second
    with pytest.raises(snapshots.SnapshotError, match="2 snapshots are labelled 'a'"):
        snapshots.load(store, "a")
    with pytest.raises(snapshots.SnapshotError, match="no snapshot 'b'"):
        snapshots.load(store, "b")
    with pytest.raises(snapshots.SnapshotError, match="out of range"):
        snapshots.load(store, 5)
    with pytest.raises(snapshots.SnapshotError, match="is a file"):
        snapshots.save(fetched, store / "manifest" / f"snapshot={first}" / "part-0.parquet")
    with pytest.raises(amp.InvalidQueryError, match="taken_at"):
        snapshots.save(fetched, store, taken_at="yesterday-ish")
    assert snapshots.list(tmp_path / "empty").empty


def test_plain_profiles_are_kept_as_ok_answers(tmp_path, server):
    payloads = [server.org.payload(i, amp.ProfileQuery(recs=("home-feed",)).to_params()) for i in range(5)]
    store = tmp_path / "store"
    snapshots.save(tables.as_profiles(payloads), store, org=server.client())
    loaded = snapshots.load(store)
    assert loaded.info["n_ok"] == 5 and loaded.org == server.client().scope
    pd.testing.assert_frame_equal(loaded.recommendations, tables.recommendations(payloads))


def test_text_arrow_cannot_hold_is_kept_in_the_answers(tmp_path):
    # A lone surrogate is valid JSON but no text: the tables (Arrow) show U+FFFD, the raw
    # answer keeps the character, and the rebuilt profile has it back.
    import json

    body = json.loads('{"userData": {"user_id": "u\\ud800", "device_id": "d", "amp_props": {"note": "x\\udfff"},'
                      ' "cohort_ids": ["c\\ud800"]}}')
    profiles = tables.as_profiles([body])
    store = tmp_path / "store"
    snapshots.save(profiles, store)
    loaded = snapshots.load(store)
    assert loaded.cohorts["cohort_id"].tolist() == ["c\ufffd"] and loaded.users["user_id"].tolist() == ["u\ufffd"]
    assert loaded.profiles.profiles[0].raw == body
    assert loaded.properties["note"].tolist() == ["x\ufffd"]
