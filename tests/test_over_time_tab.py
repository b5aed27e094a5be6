"""The explorer's "Over time" tab: real widgets, values set and buttons clicked, against the sample org."""

from __future__ import annotations

import pandas as pd

from amptools import snapshots
from amptools.widgets import ProfileExplorer

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def test_save_two_fetches_then_compare_them(sample_server, tmp_path):
    store = tmp_path / "store"
    explorer = ProfileExplorer(sample_server.client(), org_ids=sample_server.org.user_ids, sample_size=12,
                               store=store)
    assert explorer.store_path.value == str(store) and explorer.snapshot_save.disabled
    explorer.select_tab("Over time")
    explorer.store_open.click()
    assert explorer.compare_button.disabled and "save at least two" in explorer.over_time_message.value
    for label in ("first", "second"):
        explorer.fetch_button.click()
        assert explorer.wait(60)
        assert not explorer.snapshot_save.disabled
        explorer.snapshot_label.value = label
        explorer.snapshot_save.click()
        assert "Saved snapshot" in explorer.over_time_message.value
    assert list(snapshots.list(store)["label"]) == ["first", "second"]
    # The newest two are chosen; the analyst picks them again explicitly, then compares.
    ids = [value for _, value in explorer.snapshot_after.options]
    assert len(ids) == 2 and explorer.snapshot_after.value == ids[1]
    explorer.snapshot_before.value, explorer.snapshot_after.value = ids
    assert not explorer.compare_button.disabled
    explorer.compare_button.click()
    assert "→" in explorer.over_time_message.value and "mean_rbo" in explorer.over_time_summary.value
    assert explorer.over_time_figure is not None
    assert explorer.over_time_output.outputs[0]["data"][PLOTLY_MIME]
    titles = {}
    for name in ("drift_over_time", "item_churn", "rank_shift", "cohort_flow"):
        explorer.over_time_chart.value = name
        titles[name] = explorer.over_time_figure.layout.title.text
    assert "snapshot to snapshot" in titles["drift_over_time"] and "Cohort membership" in titles["cohort_flow"]
    assert "How far items moved in" in titles["rank_shift"]
    explorer.over_time_chart.value = "rank_shift"
    groups = list(explorer.over_time_group.options)
    assert len(groups) >= 2
    explorer.over_time_group.value = groups[1]
    assert groups[1] in explorer.over_time_figure.layout.title.text
    summary = explorer.over_time.summary()
    assert isinstance(summary, pd.DataFrame) and (summary["mean_rbo"] == 1.0).all()  # the same org twice


def test_a_store_that_is_a_file_is_refused_in_the_tab(sample_server, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    explorer = ProfileExplorer(sample_server.client(), org_ids=sample_server.org.user_ids, store=a_file)
    explorer.store_open.click()
    assert "is a file" in explorer.over_time_message.value and explorer.over_time is None
    explorer.snapshot_save.click()  # before any fetch: says why nothing was saved
    assert "Not saved" in explorer.over_time_message.value
