"""The real widgets in plain pytest: set ``.value``, ``.click()``, check tables, figures and files."""

from __future__ import annotations

import base64
import json
import re
import threading
import warnings
from datetime import datetime, timezone

import pandas as pd
import pytest

from amptools import export, tables
from amptools.errors import InvalidQueryError
from amptools.query import ProfileQuery
from amptools.sample import SampleServer
from amptools.widgets import ProfileExplorer, QueryOptions, UserChooser

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def upload_value(name: str, content: bytes, mime: str = "text/csv") -> tuple[dict[str, object], ...]:
    """What ipywidgets 8's FileUpload holds after the browser sent one file."""
    return ({"name": name, "type": mime, "size": len(content), "content": memoryview(content),
             "last_modified": datetime(2024, 6, 11, tzinfo=timezone.utc)},)


def direct_fetch(server: SampleServer, ids: list[str], query: ProfileQuery, id_type: str = "user_id"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return server.client().get_profiles(ids, query, id_type=id_type, progress=False)


def make_explorer(server: SampleServer, **kwargs: object) -> ProfileExplorer:
    return ProfileExplorer(server.client(), org_ids=server.org.user_ids,
                           org_device_ids=server.org.device_ids, **kwargs)


# ---------------------------------------------------------------------------- UserChooser
def test_chooser_pasted_list_reports_duplicates():
    chooser = UserChooser()
    assert chooser.method == "paste" and chooser.ids == []
    chooser.pasted.value = "u1\nu2\n\nu1\n  u3  \n"
    assert chooser.ids == ["u1", "u2", "u3"]
    assert chooser.id_type == "user_id"
    assert "3 user ids" in chooser.message.value and "duplicate" in chooser.message.value
    chooser.pasted.value = "a b, c"
    assert chooser.ids == ["a b", "c"]
    chooser.separator.value = "whitespace"
    assert chooser.ids == ["a", "b,", "c"]  # an explicit separator is taken literally


def test_chooser_one_id_and_device_ids():
    chooser = UserChooser()
    chooser.method = "one"
    chooser.single.value = "  Zoë & Łukasz  "
    assert chooser.ids == ["Zoë & Łukasz"]
    chooser.id_type = "device_id"
    assert chooser.id_type == "device_id" and "device id" in chooser.message.value


def test_chooser_csv_upload_reads_the_id_column_and_sets_the_id_type():
    chooser = UserChooser()
    chooser.method = "upload"
    chooser.upload.value = upload_value("ids.csv", b"\xef\xbb\xbfname,device_id\nA,d-1\nB,d-2\nC,d-1\n")
    assert chooser.ids == ["d-1", "d-2"]
    assert chooser.id_type == "device_id"
    assert "ids.csv" in chooser.message.value and "duplicate" in chooser.message.value
    chooser.upload.value = upload_value("plain.txt", b"testUser\nuser-000001\n", "text/plain")
    assert chooser.ids == ["testUser", "user-000001"]


def test_chooser_sample_pick(sample_server):
    chooser = UserChooser(org_ids=sample_server.org.user_ids, org_device_ids=sample_server.org.device_ids,
                          sample_size=5)
    assert chooser.method == "sample"
    first = chooser.ids
    assert len(first) == 5 and first[0] == "testUser"
    chooser.sample_size.value = 8
    assert len(chooser.ids) == 8 and chooser.ids[:1] == ["testUser"]
    chooser.reshuffle.click()
    assert chooser.ids != first and chooser.ids[0] == "testUser"
    chooser.include_test_user.value = False
    assert "testUser" not in chooser.ids
    chooser.include_test_user.value = True
    chooser.id_type = "device_id"
    assert chooser.ids[0] == sample_server.org.device_ids[0]
    assert all(i in sample_server.org.device_ids for i in chooser.ids)


# ---------------------------------------------------------------------------- QueryOptions
def test_options_return_a_query():
    options = QueryOptions(amp_props=False, cohort_ids=False)
    options.recs.value = ["home-feed", "similar-items"]
    options.rec_type.value = "model"
    options.amp_props.value = True
    options.computations.value = "chosen"
    options.computation_ids.value = ["orders_90d"]
    options.predictions.value = ["0x10x", "0x2a7c"]
    options.propensity_type.value = "pct"
    assert options.valid and options.message.value == ""
    assert options.query == ProfileQuery(recs=("home-feed", "similar-items"), rec_type="model", amp_props=True,
                                         computations=("orders_90d",), predictions=("0x10x", "0x2a7c"),
                                         propensity_type="pct")


def test_options_show_what_to_fix():
    options = QueryOptions(amp_props=False, cohort_ids=False)
    assert "Nothing is asked for" in options.message.value
    options.rec_type.value = "random"
    assert "rec_type is set but no recommendation ids" in options.message.value
    options.rec_type.value = ""
    options.recs.value = ["a,b"]
    assert "contains a comma" in options.message.value
    with pytest.raises(InvalidQueryError, match="comma"):
        options.query
    options.recs.value = []
    options.computations.value = "chosen"
    assert "no computation id" in options.error
    options.computation_ids.value = ["computed-prop-1"]
    assert options.error is None and options.message.value == ""


# ---------------------------------------------------------------------------- ProfileExplorer
def test_explorer_displays_itself(sample_server):
    explorer = make_explorer(sample_server)
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert explorer.tab_names == ["Summary", "Recommendations", "Properties", "Cohorts", "Computations",
                                  "Propensities", "Failures", "Charts", "Export", "Message preview",
                                  "Over time"]
    assert list(explorer.results.titles) == explorer.tab_names


def test_pasted_users_fetch_and_fill_the_tabs(sample_server):
    explorer = make_explorer(sample_server)
    ids = ["testUser", *sample_server.org.user_ids[1:5]]
    explorer.users.method = "paste"
    explorer.users.pasted.value = "\n".join([*ids, ids[1]])
    explorer.options.recs.value = ["testRecId", "home-feed"]
    explorer.options.computations.value = "all"
    explorer.options.predictions.value = ["0x10x"]
    assert not explorer.fetch_button.disabled
    explorer.fetch_button.click()
    assert explorer.wait(30)
    query = ProfileQuery(recs=("testRecId", "home-feed"), amp_props=True, cohort_ids=True, computations=True,
                         predictions=("0x10x",))
    direct = direct_fetch(sample_server, ids, query)
    results = explorer.controller.tables
    pd.testing.assert_frame_equal(results["summary"], tables.summary(direct))
    pd.testing.assert_frame_equal(results["recommendations"], tables.recommendations(direct))
    # On the sample org the explorer knows the cohorts' names (its Cohorts API), so it shows them.
    names = sample_server.org.cohort_names
    pd.testing.assert_frame_equal(results["cohort_matrix"], tables.cohort_matrix(direct, names=names))
    assert results["summary"]["user_id"].tolist() == ids
    recs = results["recommendations"]
    test_items = recs[(recs["user_id"] == "testUser") & (recs["rec_id"] == "testRecId")]["item"].tolist()
    assert test_items == ["cookie", "cracker", "chocolate milk", "donut", "croissant"]
    # What the tabs show.
    for user in ids:
        assert f">{user}<" in explorer.table_views["summary"].value
    assert "chocolate milk" in explorer.table_views["recommendations"].value
    assert "All active users" in explorer.table_views["cohort_matrix"].value
    assert "0x10x" in explorer.table_views["propensities"].value
    assert "5 fetched" in explorer.status.value
    assert explorer.progress.value == explorer.progress.max == 5
    # The org's quota beside the progress bar: what this fetch took of it.
    assert "requests in the last minute" in explorer.quota.value
    row = next(child for child in explorer.children if explorer.progress in getattr(child, "children", ()))
    assert explorer.quota in row.children
    assert not explorer.fetch_button.disabled and explorer.cancel_button.disabled


def test_uploaded_device_ids_fetch(sample_server):
    explorer = make_explorer(sample_server)
    devices = list(sample_server.org.device_ids[:3])
    explorer.users.method = "upload"
    csv = ("device_id,note\n" + "\n".join(f"{d},x" for d in devices) + "\n").encode()
    explorer.users.upload.value = upload_value("devices.csv", csv)
    assert explorer.users.id_type == "device_id"
    explorer.options.recs.value = []
    explorer.options.predictions.value = []
    explorer.fetch_button.click()
    assert explorer.wait(30)
    summary = explorer.controller.table("summary")
    assert summary["device_id"].tolist() == devices
    assert summary["user_id"].tolist()[0] == "testUser"
    assert (summary["status"] == "ok").all()


def test_invalid_options_disable_fetch_and_send_nothing(sample_server):
    explorer = make_explorer(sample_server)
    explorer.options.recs.value = ["home,feed"]
    assert explorer.fetch_button.disabled
    assert "contains a comma" in explorer.options.message.value
    assert "contains a comma" in explorer.status.value
    before = len(sample_server.arrivals)
    explorer.fetch_button.click()  # click() runs the handler even on a disabled button
    assert explorer.wait(1)
    assert len(sample_server.arrivals) == before
    assert explorer.controller.result is None
    assert explorer.notes.value == ""
    explorer.options.recs.value = ["home-feed"]
    assert not explorer.fetch_button.disabled


def test_no_users_disables_fetch(sample_server):
    explorer = make_explorer(sample_server)
    explorer.users.method = "paste"
    assert explorer.fetch_button.disabled and "at least one user" in explorer.status.value
    before = len(sample_server.arrivals)
    explorer.fetch_button.click()
    assert len(sample_server.arrivals) == before


def test_exposure_note_appears_once(sample_server):
    explorer = make_explorer(sample_server, sample_size=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            explorer.fetch_button.click()
            assert explorer.wait(30)
    assert explorer.notes.value.count("recommendation exposure event") == 1
    assert explorer.controller.notes and len(explorer.controller.notes) == 1
    assert not [w for w in caught if "exposure" in str(w.message)]


def test_cancel_stops_a_slow_fetch_and_keeps_partial_results():
    with SampleServer(latency=0.2) as server:
        explorer = ProfileExplorer(server.client(), org_ids=server.org.user_ids, workers=2, sample_size=40)
        explorer.options.recs.value = []
        explorer.options.predictions.value = []
        started = threading.Event()
        explorer.progress.observe(lambda change: change["new"] >= 2 and started.set(), names="value")
        explorer.fetch_button.click()
        assert explorer.fetch_button.disabled and not explorer.cancel_button.disabled
        assert started.wait(20)
        explorer.cancel_button.click()
        assert explorer.wait(20)
        # (The cohort names the explorer lists come from the Cohorts API, another path.)
        arrivals = [a for a in server.arrivals if a.path == "/v1/userprofile"]
    result = explorer.controller.result
    assert result.cancelled and 2 <= result.counts["ok"] < 40
    # Every request that reached the server is an attempt of a user kept as ok (the ones in
    # flight at the cancel included); the rest was never asked.
    outcomes = result.outcomes
    asked = outcomes[outcomes["attempts"] > 0]
    assert len(arrivals) == outcomes["attempts"].sum()
    assert set(asked["status"]) == {"ok"} and len(asked) == result.counts["ok"]
    assert {a.params["user_id"] for a in arrivals} == set(asked["id"])
    never = outcomes[outcomes["attempts"] == 0]
    assert len(never) == 40 - result.counts["ok"] and (never["error"] == "cancelled before it was fetched").all()
    assert "cancelled" in explorer.status.value
    summary = explorer.controller.table("summary")
    assert (summary["status"] == "ok").sum() == result.counts["ok"]
    assert "cancelled before it was fetched" in explorer.table_views["failures"].value
    assert explorer.progress.bar_style == "warning"
    assert not explorer.fetch_button.disabled and explorer.cancel_button.disabled


@pytest.fixture(scope="module")
def fetched_explorer(sample_server) -> ProfileExplorer:
    explorer = make_explorer(sample_server, sample_size=25)
    explorer.fetch_button.click()
    assert explorer.wait(60)
    return explorer


def test_charts_tab_builds_figures(fetched_explorer):
    explorer = fetched_explorer
    explorer.select_tab("Charts")
    assert explorer.results.selected_index == explorer.tab_names.index("Charts")
    names = [value for _, value in explorer.chart_picker.options]
    assert "item_frequency" in names and "cohort_sizes" in names and "propensity_distribution" in names
    explorer.chart_picker.value = "item_frequency"
    assert {trace.name for trace in explorer.figure.data} == {"home-feed", "similar-items"}
    assert explorer.figure.layout.title.text.startswith("Top 10")
    output = explorer.chart_output.outputs[0]
    assert output["output_type"] == "display_data" and PLOTLY_MIME in output["data"]
    explorer.chart_option_widgets["top_n"].value = 3
    assert explorer.figure.layout.title.text.startswith("Top 3")
    explorer.chart_option_widgets["color"].value = "recommendation_source"
    models = set(explorer.controller.table("recommendations")["recommendation_source"].dropna())
    assert {trace.name for trace in explorer.figure.data} == models
    explorer.chart_picker.value = "cohort_sizes"
    cohorts = explorer.controller.table("cohorts")
    bars = explorer.figure.data[0]
    assert set(bars.x if bars.orientation != "h" else bars.y) == set(cohorts["cohort_name"])
    explorer.chart_picker.value = "computation_distribution"
    explorer.chart_option_widgets["computation"].value = "orders_90d"
    explorer.chart_option_widgets["split"].value = "none"
    assert "orders_90d" in explorer.figure.layout.title.text
    assert len(explorer.figure.data) == 1


def test_export_tab_writes_the_marketing_csv_with_a_download_link(fetched_explorer, tmp_path):
    explorer = fetched_explorer
    assert not explorer.export_button.disabled
    assert [v for _, v in explorer.export_rec_id.options] == ["home-feed", "similar-items"]
    explorer.export_folder.value = str(tmp_path / "exports")
    explorer.export_choice.value = "marketing"
    explorer.export_rec_id.value = "similar-items"
    explorer.export_top_n.value = 3
    explorer.export_button.click()
    path = explorer.last_export
    assert path is not None and path.parent == tmp_path / "exports" and path.exists()
    back = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    expected = export.marketing_table(explorer.controller.result, rec_id="similar-items", top_n=3)
    assert back.columns.tolist() == expected.columns.tolist()
    assert back["user_id"].tolist() == expected["user_id"].tolist()
    assert back["rec_3"].tolist() == expected["rec_3"].fillna("").astype(str).tolist()
    match = re.search(r'<a download="([^"]+)" href="data:text/csv;base64,([^"]+)"', explorer.export_link.value)
    assert match and match.group(1) == path.name
    assert base64.b64decode(match.group(2)) == path.read_bytes()

    explorer.export_choice.value = "recommendations"
    assert explorer.marketing_box.layout.display == "none"
    explorer.export_button.click()
    back = pd.read_csv(explorer.last_export, dtype=str, encoding="utf-8-sig")
    assert len(back) == len(explorer.controller.table("recommendations"))


def test_export_tab_offers_both_braze_files(fetched_explorer, tmp_path):
    explorer = fetched_explorer
    labels = dict((v, label) for label, v in explorer.export_choice.options)
    assert "Braze (CSV import)" in labels["braze_csv"] and "/users/track" in labels["braze_json"]
    explorer.export_folder.value = str(tmp_path)
    explorer.export_choice.value = "braze_csv"
    assert explorer.marketing_box.layout.display == ""
    explorer.export_rec_id.value = "home-feed"
    explorer.export_button.click()
    path = explorer.last_export
    assert path.suffix == ".csv" and path.read_bytes().startswith(b"external_id,")
    assert f'download="{path.name}"' in explorer.export_link.value
    explorer.export_choice.value = "braze_json"
    explorer.export_button.click()
    batches = explorer.last_export
    assert batches.suffix == ".jsonl" and batches != path
    first = json.loads(batches.read_text().splitlines()[0])["attributes"]
    assert [o["external_id"] for o in first] == [p.user_id for p in explorer.controller.result.profiles][:75]
    assert f'download="{batches.name}"' in explorer.export_link.value
    # The sample's "country" holds names, which Braze's default attribute "country" would misread.
    explorer.export_props.value = True
    explorer.export_choice.value = "braze_csv"
    explorer.export_button.click()
    assert explorer.last_export == batches  # nothing new written
    assert "Export failed" in explorer.export_link.value and "<br>  - column &#x27;country&#x27;" in (
        explorer.export_link.value)


def test_default_explorer_on_a_sample_client_uses_the_sample_org(sample_server):
    explorer = ProfileExplorer(sample_server.client())  # is_sample: the default org's ids
    assert explorer.users.method == "sample" and explorer.users.ids[0] == "testUser"
    assert explorer.options.valid and explorer.options.query.asks_recommendations
    assert str(explorer.controller.export_folder) == "exports"


def test_message_preview_tab_renders_every_users_message(fetched_explorer):
    from amptools import braze

    explorer = fetched_explorer
    explorer.select_tab("Message preview")
    template = explorer.preview_template.value
    assert braze.parse_tag(template).query.recs == explorer.controller.result.query.recs
    assert not explorer.preview_button.disabled
    explorer.preview_button.click()
    previews = explorer.previews
    assert len(previews) == len(explorer.controller.result.ids)
    rank = {"error": 0, "aborted": 1}
    keys = [rank.get(s, 2 if u else 3) for s, u in zip(previews["status"], previews["unresolved"].fillna(""))]
    assert keys == sorted(keys) and "rendered" in set(previews["status"])
    assert "rendered" in explorer.preview_message.value and "<table" in explorer.preview_view.value

    # The analyst's own template: aborted and unresolved come first.
    explorer.preview_template.value = (template.split("\n")[0] + "\n{% if ${user_id} == 'testUser' %}"
                                       "{% abort_message('not the test user') %}{% endif %}Hi {{${nickname}}}")
    explorer.preview_button.click()
    previews = explorer.previews
    assert previews["status"].tolist()[0] == "aborted" and previews["user_id"].iloc[0] == "testUser"
    assert set(previews["status"].iloc[1:]) == {"rendered"}
    assert (previews["unresolved"].iloc[1:] == "${nickname}").all()
    assert "not the test user ×1" in explorer.preview_message.value

    explorer.preview_template.value = "{% if %}"
    explorer.preview_button.click()
    assert "line 1" in explorer.preview_view.value and "#b00020" in explorer.preview_message.value


def test_message_preview_follows_the_form_until_edited(sample_server):
    from amptools import braze

    explorer = make_explorer(sample_server)
    assert explorer.preview_button.disabled  # nothing fetched yet
    assert braze.parse_tag(explorer.preview_template.value).query == explorer.options.query
    explorer.options.recs.value = ["email-picks"]
    explorer.options.amp_props.value = False
    assert braze.parse_tag(explorer.preview_template.value).query == explorer.options.query
    explorer.preview_template.value = "my own {{${first_name}}}"
    explorer.options.cohort_ids.value = False
    assert explorer.preview_template.value == "my own {{${first_name}}}"
