"""The explorer's logic without widgets: parsing ids, building queries, the fetch controller."""

from __future__ import annotations

import base64
import json
import re
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest

from amptools import export, tables
from amptools.errors import InvalidQueryError
from amptools.controller import (
    CHARTS,
    ExplorerController,
    build_query,
    check_query,
    download_link,
    parse_id_file,
    parse_ids,
    sample_ids,
    table_html,
)
from amptools.query import ProfileQuery
from amptools.sample import SampleServer

QUERY = ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                     computations=True, predictions=("0x10x",))


# ---------------------------------------------------------------------------- pasted ids
@pytest.mark.parametrize("text, expected", [
    ("a\nb\nc", ["a", "b", "c"]),
    ("a, b,c", ["a", "b", "c"]),
    ("a b\tc", ["a", "b", "c"]),
    ("\n\na\n\n b \n\n", ["a", "b"]),
    ('"a", "b"', ["a", "b"]),
    ("", []),
    ("   \n  ", []),
])
def test_parse_ids_splits_lines_commas_and_spaces(text, expected):
    assert parse_ids(text).ids == expected


def test_parse_ids_reports_duplicates_and_blank_lines():
    parsed = parse_ids("u1\nu2\n\nu1\nu3\nu2\nu1\n")
    assert parsed.ids == ["u1", "u2", "u3"]
    assert parsed.duplicates == ["u1", "u2"]
    assert parsed.blanks == 1
    assert "3 ids" in parsed.message and "2 duplicates" in parsed.message and "'u1'" in parsed.message


def test_several_lines_keep_ids_with_spaces_and_commas():
    # Real ids may hold spaces and commas (the sample org has some): one per line keeps them.
    parsed = parse_ids("jane doe+test@example.com\na,b;c=d?e\nZoë & Łukasz")
    assert parsed.ids == ["jane doe+test@example.com", "a,b;c=d?e", "Zoë & Łukasz"]


def test_explicit_separators():
    assert parse_ids("a b\nc", separator="whitespace").ids == ["a", "b", "c"]
    assert parse_ids("a,b\nc", separator="commas").ids == ["a", "b", "c"]
    assert parse_ids("a b, c", separator="lines").ids == ["a b, c"]
    with pytest.raises(InvalidQueryError, match="separator"):
        parse_ids("a", separator="tabs")


# ---------------------------------------------------------------------------- CSV ids
def test_csv_with_a_user_id_column_keeps_text_and_reports_duplicates():
    content = "\ufeffname,User_ID,score\nA,007,1\nB,u2,2\nC,,3\nD,007,4\n".encode()
    parsed = parse_id_file(content)
    assert parsed.ids == ["007", "u2"]  # leading zeros survive
    assert parsed.duplicates == ["007"]
    assert parsed.blanks == 1
    assert parsed.id_type == "user_id"


def test_csv_with_a_device_id_column_and_semicolons():
    parsed = parse_id_file(b"device_id;x\nd-1;1\nd-2;2\n")
    assert parsed.ids == ["d-1", "d-2"] and parsed.id_type == "device_id"


def test_csv_with_both_columns_prefers_the_asked_id_type():
    content = b"user_id,device_id\nu1,d1\nu2,d2\n"
    assert parse_id_file(content).ids == ["u1", "u2"]
    assert parse_id_file(content, id_type="device_id").ids == ["d1", "d2"]


def test_csv_without_header_is_one_id_per_line():
    parsed = parse_id_file("testUser\r\nuser-000001\r\n\r\ntestUser\r\nZoë & Łukasz\r\n".encode("cp1252",
                                                                                             errors="replace"))
    assert parsed.ids[:2] == ["testUser", "user-000001"]
    assert parsed.duplicates == ["testUser"] and parsed.id_type is None
    assert len(parsed.ids) == 3  # decoded as Windows-1252, not refused


# ---------------------------------------------------------------------------- sample picks
def test_sample_ids_is_reproducible_with_test_user_first(sample_server):
    org_ids = sample_server.org.user_ids
    pick = sample_ids(org_ids, 12, seed=3)
    assert pick[0] == "testUser" and len(pick) == 12 == len(set(pick))
    assert pick == sample_ids(org_ids, 12, seed=3)
    assert pick != sample_ids(org_ids, 12, seed=4)
    assert "testUser" not in sample_ids(org_ids[1:50], 5, include=())
    assert sorted(sample_ids(["a", "b"], 10)) == ["a", "b"]  # no more than the org has


# ---------------------------------------------------------------------------- queries
def test_build_query_from_plain_values():
    query = build_query(recs=["home-feed", " "], rec_type="", amp_props=True, cohort_ids=False,
                        computations="chosen", computation_ids=["orders_90d"], predictions=["0x10x"],
                        propensity_type="pct")
    assert query == ProfileQuery(recs=("home-feed",), amp_props=True, computations=("orders_90d",),
                                 predictions=("0x10x",), propensity_type="pct")
    assert build_query(computations="all").computations is True
    assert build_query(computations="none", amp_props=True).computations is False


@pytest.mark.parametrize("values, words", [
    ({"computations": "chosen"}, "no computation id"),
    ({"rec_type": "model", "amp_props": True}, "rec_type is set but no recommendation ids"),
    ({"recs": ["a,b"]}, "contains a comma"),
    ({}, "Nothing is asked for"),
])
def test_check_query_says_what_to_fix(values, words):
    query, message = check_query(**values)
    assert query is None and words in message


# ---------------------------------------------------------------------------- the controller
def test_controller_fetches_in_the_background_and_builds_the_tables(sample_server):
    ids = ["testUser", *sample_server.org.user_ids[1:6]]
    controller = ExplorerController(sample_server.client())
    done = threading.Event()
    seen: list[int] = []
    controller.start(ids, QUERY, on_progress=lambda d, t, c: seen.append(d), on_done=lambda c: done.set())
    assert controller.wait(30) and done.is_set() and not controller.running
    assert seen[-1] == len(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = sample_server.client().get_profiles(ids, QUERY, progress=False)
    for name, build in (("summary", tables.summary), ("recommendations", tables.recommendations),
                        ("cohorts", tables.cohorts), ("computations", tables.computations),
                        ("propensities", tables.propensities)):
        pd.testing.assert_frame_equal(controller.table(name), build(direct), obj=name)
    assert controller.table("summary")["user_id"].tolist() == ids
    assert "6 fetched" in controller.status_text()


def test_controller_refuses_bad_ids_before_the_network(sample_server):
    controller = ExplorerController(sample_server.client())
    before = len(sample_server.arrivals)
    with pytest.raises(InvalidQueryError):
        controller.start([], QUERY)
    with pytest.raises(InvalidQueryError, match="not valid"):
        controller.start(["ok-id", "   "], QUERY)
    assert len(sample_server.arrivals) == before
    assert not controller.running


def test_controller_notes_the_exposure_once_and_no_python_warning(sample_server):
    controller = ExplorerController(sample_server.client())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert controller.start(["testUser"], ProfileQuery(amp_props=True)) is None
        controller.wait(30)
        note = controller.start(["testUser"], QUERY)
        controller.wait(30)
        assert controller.start(["testUser"], QUERY) is None
        controller.wait(30)
    assert note is not None and "exposure" in note
    assert controller.notes == [note]
    assert not [w for w in caught if "exposure" in str(w.message)]


def test_cancel_keeps_partial_results():
    with SampleServer(latency=0.2) as server:
        controller = ExplorerController(server.client(), workers=2)
        ids = list(server.org.user_ids[:40])
        two_done = threading.Event()
        controller.start(ids, ProfileQuery(cohort_ids=True),
                         on_progress=lambda done, total, counts: done >= 2 and two_done.set())
        assert two_done.wait(20)
        controller.cancel()
        assert controller.wait(20)
    result = controller.result
    assert result is not None and result.cancelled
    assert 2 <= result.counts["ok"] < len(ids)
    summary = controller.table("summary")
    assert len(summary) == len(ids)
    assert (summary["status"] == "ok").sum() == result.counts["ok"]
    assert "cancelled" in controller.status_text()


@pytest.fixture(scope="module")
def fetched(sample_server) -> ExplorerController:
    controller = ExplorerController(sample_server.client())
    controller.start(["testUser", *sample_server.org.user_ids[1:30]], QUERY)
    assert controller.wait(60)
    return controller


def test_every_available_chart_builds(fetched):
    assert set(fetched.available_charts()) == set(CHARTS)
    for name in CHARTS:
        figure = fetched.figure(name)
        assert figure.data, name
    figure = fetched.figure("item_frequency", color="rec_id", top_n=5)
    assert {trace.name for trace in figure.data} == {"home-feed", "similar-items"}
    with pytest.raises(KeyError, match="unknown chart"):
        fetched.figure("pie")


def test_charts_need_their_table(sample_server):
    controller = ExplorerController(sample_server.client())
    controller.start(["testUser"], ProfileQuery(amp_props=True))
    controller.wait(30)
    assert controller.available_charts() == []
    with pytest.raises(LookupError, match="empty"):
        controller.figure("cohort_sizes")


def test_export_writes_csv_that_reads_back(fetched, tmp_path):
    path = fetched.export("marketing", folder=tmp_path / "out", rec_id="home-feed", top_n=3)
    assert path.parent == tmp_path / "out" and path.suffix == ".csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 with a BOM
    back = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    expected = export.marketing_table(fetched.result, rec_id="home-feed", top_n=3)
    assert back["user_id"].tolist() == expected["user_id"].tolist()
    assert back["rec_1"].tolist() == expected["rec_1"].fillna("").astype(str).tolist()
    summary = fetched.export("summary", folder=tmp_path, filename="s")
    assert summary.name == "s.csv"
    assert pd.read_csv(summary, encoding="utf-8-sig")["user_id"].tolist() == fetched.table("summary")[
        "user_id"].tolist()


def test_export_writes_the_braze_files(fetched, tmp_path):
    path = fetched.export("braze_csv", folder=tmp_path, filename="braze", rec_id="home-feed", top_n=2)
    assert path == tmp_path / "braze.csv" and fetched.exported == [path]
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and data.startswith(b"external_id,device_id,rec_id")
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = export.marketing_table(fetched.result, rec_id="home-feed", top_n=2)
    assert back["external_id"].tolist() == expected["user_id"].tolist()
    assert back["rec_2"].tolist() == expected["rec_2"].fillna("").astype(str).tolist()
    batches = fetched.export("braze_json", folder=tmp_path, rec_id="home-feed", top_n=2)
    assert batches.suffix == ".jsonl" and batches.name.startswith("braze_json-")
    objects = [o for line in batches.read_text().splitlines() for o in json.loads(line)["attributes"]]
    assert [o["external_id"] for o in objects] == expected["user_id"].tolist()
    lists = export.marketing_table(fetched.result, rec_id="home-feed", top_n=2, items_as="list")["rec_items"]
    assert [o.get("rec_items") for o in objects] == [v if isinstance(v, list) else None for v in lists]


def test_download_link_is_a_data_uri_of_the_file(tmp_path):
    path = tmp_path / "a b.csv"
    path.write_bytes("\ufeffuser_id\ntestUser\n".encode())
    link = download_link(path)
    match = re.search(r'<a download="a b.csv" href="data:text/csv;base64,([^"]+)"', link)
    assert match and base64.b64decode(match.group(1)) == path.read_bytes()
    big = download_link(path, max_inline_bytes=4)
    assert "data:" not in big and "a b.csv" in big


def test_table_html_escapes_and_truncates():
    frame = pd.DataFrame({"user_id": ["<b>x</b>", *map(str, range(300))]})
    text = table_html(frame, max_rows=10)
    assert "<b>x</b>" not in text and "&lt;b&gt;" in text
    assert text.count("<tr") == 11 and "301 rows" in text
    assert "Nothing" in table_html(frame.iloc[:0])


def test_export_path_must_be_a_file_name(fetched, tmp_path):
    with pytest.raises(InvalidQueryError, match="folder"):
        fetched.export("summary", folder=tmp_path, filename="../x.csv")
    assert not (tmp_path.parent / "x.csv").exists()
    assert isinstance(fetched.export("failures", folder=tmp_path), Path)


def test_fetching_the_same_users_again_asks_the_service_for_nothing(tmp_path):
    from amptools.controller import ExplorerController
    from amptools.query import ProfileQuery
    from amptools.sample import SampleServer

    with SampleServer() as server:
        controller = ExplorerController(server.client(), export_folder=tmp_path)
        query = ProfileQuery(recs=("home-feed",), cohort_ids=True)
        ids = list(server.org.user_ids[:8])
        controller.start(ids, query)
        assert controller.wait(30) and controller.result.counts["ok"] == 8
        first = len(server.arrivals)
        controller.start(ids, query)
        assert controller.wait(30) and controller.result.counts["ok"] == 8
        assert first == 8 and len(server.arrivals) == first  # no second exposure


# ---------------------------------------------------------------------------- message preview
def test_message_preview_over_the_last_result(fetched):
    from amptools import braze

    template = fetched.message_template()
    assert braze.parse_tag(template).query.recs == QUERY.recs
    previews = fetched.preview_messages(template)
    assert len(previews) == len(fetched.result.ids)
    statuses = previews["status"].tolist()
    # What needs a look comes first: aborted before rendered, unresolved before the rest.
    rank = {"error": 0, "aborted": 1}
    keys = [rank.get(s, 2 if u else 3) for s, u in zip(statuses, previews["unresolved"].fillna(""))]
    assert keys == sorted(keys)
    assert "rendered" in statuses
    summary = fetched.preview_summary(previews)
    assert summary.startswith(f"{statuses.count('rendered'):,} rendered")
    # ${country} is read from the properties table.
    country = fetched.preview_messages("{{${country}}}").set_index("user_id")
    props = fetched.table("properties").set_index("user_id")
    other = fetched.result.ids[1]
    assert country.loc[other, "message"] == str(props.loc[other, "country"])


def test_message_preview_needs_a_result(sample_server):
    controller = ExplorerController(sample_server.client())
    with pytest.raises(LookupError, match="fetch first"):
        controller.preview_messages("hi")
    with pytest.raises(LookupError, match="fetch first"):
        controller.message_template()
    assert "connected_content" in controller.message_template(ProfileQuery(cohort_ids=True))
