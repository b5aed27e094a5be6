"""The nightly job and its report: ``amptools fetch --snapshot STORE`` and ``amptools drift STORE``."""

from __future__ import annotations

import io
import re

import pandas as pd

from amptools import snapshots
from amptools.cli import main


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_fetch_keeps_snapshots_and_drift_writes_the_report(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\n" + "\n".join(f"user-{i:06d}" for i in range(1, 31)) + "\n", encoding="utf-8")
    store = tmp_path / "store"
    for label in ("monday", "tuesday"):
        code, stdout, stderr = run(["fetch", str(ids), "--sample", "--recs", "home-feed,similar-items", "--cohorts",
                                    "--computations", "--out", str(tmp_path / label), "--no-progress",
                                    "--snapshot", str(store), "--snapshot-label", label])
        assert code == 0, stderr
        assert "saved snapshot" in stdout
    listing = snapshots.list(store)
    assert list(listing["label"]) == ["monday", "tuesday"] and (listing["n_ok"] == 30).all()
    report = tmp_path / "reports" / "drift.html"
    code, stdout, stderr = run(["drift", str(store), "--from", "monday", "--to", "tuesday", "--out", str(report)])
    assert code == 0, stderr
    # the sample org answered the same twice (see tests/test_sample_clock.py for a retrain)
    assert re.search(r"home-feed: 0\.0% of 2\d users' lists changed, mean RBO 1\.000", stdout), stdout
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "plotly" in text.lower()
    assert text.count("Plotly.newPlot") >= 4  # over time, churn and shift per set, cohort flow
    assert "What changed, per set" in text and "Cohorts" in text
    assert not list(report.parent.glob("*.partial"))


def test_drift_and_snapshot_usage_errors_say_what_to_do(tmp_path):
    code, _, stderr = run(["drift", str(tmp_path / "nothing-here")])
    assert code == 2 and "no snapshots in" in stderr and "save one first" in stderr
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    store = tmp_path / "store"
    code, _, stderr = run(["fetch", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "o"), "--no-progress",
                           "--snapshot", str(store)])
    assert code == 0, stderr
    code, _, stderr = run(["drift", str(store), "--out", str(tmp_path / "r.html")])
    assert code == 2 and "first of its series" in stderr
    code, _, stderr = run(["drift", str(store), "--from", "no-such", "--out", str(tmp_path / "r.html")])
    assert code == 2 and "no snapshot 'no-such'" in stderr
    code, _, stderr = run(["drift", str(store), "--out", str(tmp_path)])
    assert code == 2 and "is a folder" in stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, _, stderr = run(["fetch", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "o"),
                           "--snapshot", str(a_file)])
    assert code == 2 and "--snapshot" in stderr and "is a file" in stderr
    code, _, stderr = run(["fetch", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "o"),
                           "--snapshot-label", "x"])
    assert code == 2 and "add --snapshot STORE" in stderr
    assert len(snapshots.list(store)) == 1  # nothing half-written by the refused runs
    assert isinstance(snapshots.load(store).cohorts, pd.DataFrame)


def test_a_snapshot_from_the_cache_says_its_answers_are_old(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\nuser-000001\nuser-000002\n", encoding="utf-8")
    common = ["fetch", str(ids), "--sample", "--cohorts", "--no-progress", "--cache", str(tmp_path / "c.sqlite")]
    assert run([*common, "--out", str(tmp_path / "a")])[0] == 0
    code, _, stderr = run([*common, "--out", str(tmp_path / "b"), "--snapshot", str(tmp_path / "store")])
    assert code == 0 and "2 answers of this snapshot came from the cache" in stderr and "--max-age" in stderr
    code, _, stderr = run([*common, "--out", str(tmp_path / "c"), "--snapshot", str(tmp_path / "store"),
                           "--max-age", "0"])
    assert code == 0 and "came from the cache" not in stderr
