"""CohortClient against the sample org's real Cohorts API and its storage host."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import pickle
import threading
import time
import zipfile

import pandas as pd
import pytest

import amptools as amp
from amptools.cohorts import (
    COHORT_COLUMNS,
    CohortClient,
    CohortJobTimeout,
    downloads_spent,
    read_member_file,
)
from amptools.errors import (
    AuthenticationError,
    ConfigurationError,
    FetchCancelled,
    InvalidQueryError,
    NotFoundError,
    ResponseFormatError,
)
from amptools.sample import SampleServer

N_USERS = 400  # small org: its memberships are computed in a fraction of a second


@pytest.fixture
def server():
    with SampleServer(n_users=N_USERS) as srv:
        srv.cohorts.job_delay = 0.2
        srv.cohorts.inline_limit = 20
        yield srv


def fast(srv: SampleServer, **kwargs) -> CohortClient:
    return srv.cohort_client(poll_base=0.02, poll_cap=0.1, **kwargs)


def cohort_paths(srv: SampleServer) -> list[str]:
    return [a.path for a in srv.arrivals if a.path.startswith("/api/")]


def profile_cohorts(srv: SampleServer) -> dict[str, set[str]]:
    """Who the Profile API says is in which cohort: the truth the Cohorts API must match."""
    ps = srv.client().get_profiles(list(srv.org.user_ids), cohort_ids=True, progress=False, workers=4)
    members: dict[str, set[str]] = {}
    for profile in ps.profiles:
        for cohort_id in profile.cohort_ids or ():
            members.setdefault(cohort_id, set()).add(profile.user_id)
    return members


# -- listing --------------------------------------------------------------------------
def test_listing_has_names_sizes_and_sync_targets_consistent_with_profiles(server):
    listing = fast(server).list_cohorts(include_archived=True)
    assert tuple(listing.columns) == COHORT_COLUMNS
    assert str(listing["size"].dtype) == "Int64"
    assert str(listing["last_computed"].dtype) == "datetime64[us, UTC]"
    truth = profile_cohorts(server)
    synced = listing[listing["synced_to"].map(lambda targets: "profile_api" in targets)]
    # Profiles list exactly the cohorts synced to the Profile API, with their true sizes.
    assert set(truth) <= set(synced["cohort_id"])
    for row in synced.itertuples():
        assert row.size == len(truth.get(row.cohort_id, ())), row.name
    names = dict(zip(listing["cohort_id"], listing["name"]))
    assert names["cohort3"] == "Power users"
    assert not set(truth) & set(listing.loc[~listing.index.isin(synced.index), "cohort_id"])


def test_listing_leaves_archived_cohorts_out_unless_asked(server):
    client = fast(server)
    shown = client.list_cohorts()
    every = client.list_cohorts(include_archived=True)
    assert not shown["archived"].any()
    assert set(every["cohort_id"]) - set(shown["cohort_id"]) == {"cohort30"}
    assert list(shown["size"]) == sorted(shown["size"], reverse=True)


# -- downloading ------------------------------------------------------------------------
def test_request_poll_redirect_download_matches_the_profile_api(server):
    client = fast(server)
    stages: list[str] = []
    before = downloads_spent()
    members = client.members("Power users", on_progress=lambda stage, message: stages.append(stage))
    truth = profile_cohorts(server)["cohort3"]
    assert list(members.columns[:2]) == ["amplitude_id", "user_id"]
    assert str(members["amplitude_id"].dtype) == "Int64"
    assert set(members["user_id"]) == truth
    assert len(truth) > server.cohorts.inline_limit  # so the file came through the storage host
    paths = cohort_paths(server)
    assert paths[0] == "/api/3/cohorts"
    assert paths[1] == "/api/5/cohorts/request/cohort3"
    statuses = [p for p in paths if "request-status" in p]
    assert len(statuses) >= 2  # it really polled through JOB INPROGRESS
    assert paths[-1].endswith("/file")
    assert [r.status for r in server.cohorts.storage.requests] == [200]
    assert stages[0] == "requested" and "waiting" in stages and stages[-1] == "done"
    assert downloads_spent() == before + 1
    assert members.attrs["cohort"]["downloads_spent"] == before + 1
    assert members.attrs["cohort"]["from_cache"] is False


def test_small_cohorts_come_in_the_body_with_properties(server):
    client = fast(server)
    row = client.list_cohorts().query(f"size <= {server.cohorts.inline_limit} and size > 0").iloc[0]
    members = client.members(row["cohort_id"], prop_keys=["platform", "country"])
    assert list(members.columns) == ["amplitude_id", "user_id", "platform", "country"]
    assert len(members) == row["size"]
    assert server.cohorts.storage.requests == []
    first = server.org.find(user_id=members["user_id"].iloc[0])
    assert members["platform"].iloc[0] == server.org.payload(first, {"get_amp_props": "true"})["userData"]["amp_props"]["platform"]


def test_the_storage_host_never_receives_the_authorization_header(server):
    fast(server).members("cohort1")
    received = server.cohorts.storage.requests
    assert received
    for request in received:
        assert "authorization" not in request.headers
        assert not any(server.secret_key in value or server.api_key in value
                       for value in request.headers.values())


def test_an_expired_storage_link_is_asked_for_again(server):
    server.cohorts.storage.expire_next(1)
    members = fast(server).members("cohort1")
    assert len(members) == server.cohorts.definitions()[0]["size"]
    assert [r.status for r in server.cohorts.storage.requests] == [403, 200]
    assert sum(p.endswith("/file") for p in cohort_paths(server)) == 2
    assert server.cohorts.downloads == 1  # renewing the link spends no download


def test_a_job_that_never_completes_ends_at_max_wait(server):
    server.cohorts.job_delay = float("inf")
    client = fast(server)
    start = time.monotonic()
    with pytest.raises(CohortJobTimeout, match=r"did not complete within max_wait=0.5 s") as caught:
        client.members("Power users", max_wait=0.5)
    assert 0.4 < time.monotonic() - start < 5
    assert isinstance(caught.value, TimeoutError)
    # Calling again resumes the same job: no second download is spent.
    server.cohorts.job_delay = 0.0
    server.cohorts._jobs[next(iter(server.cohorts._jobs))].ready_at = 0.0
    client.members("Power users")
    assert server.cohorts.downloads == 1


def test_cancel_stops_the_wait(server):
    server.cohorts.job_delay = float("inf")
    client = server.cohort_client(poll_base=5.0, poll_cap=5.0)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(FetchCancelled, match="cohort 'Power users'"):
        client.members("Power users", cancel=cancel)
    assert time.monotonic() - start < 3


def test_an_unchanged_cohort_is_never_downloaded_twice(server, tmp_path):
    client = fast(server)
    first = client.members("Power users")
    sent = len(server.arrivals)
    second = client.members("Power users")
    assert len(server.arrivals) == sent  # not even the listing: it is fresh
    pd.testing.assert_frame_equal(first, second)
    assert second.attrs["cohort"]["from_cache"] is True

    # With cache=, a new session spends no download either; a recomputed cohort is fetched again.
    path = tmp_path / "cohorts.sqlite"
    fast(server, cache=path).members("Power users")
    downloads = server.cohorts.downloads
    fast(server, cache=path).members("Power users")
    assert server.cohorts.downloads == downloads
    server.cohorts.recompute("cohort3")
    fast(server, cache=path).members("Power users")
    assert server.cohorts.downloads == downloads + 1


def test_usage_reads_the_api_and_counts_this_process(server):
    client = fast(server)
    client.members("Beta testers")
    usage = client.usage()
    # The path and shape three independent clients of the API use (issue 19).
    assert cohort_paths(server)[-1] == "/api/3/cohorts/usage"
    assert usage["downloads_this_month"] == server.cohorts.downloads == 1
    assert usage["monthly_limit"] == 500
    assert usage["resets_at"] == pd.Timestamp("2024-07-01", tz="UTC")
    assert usage["downloads_this_process"] == downloads_spent() >= 1


def test_usage_falls_back_to_the_older_path_and_reads_any_shape():
    from test_hardening import Hostile, send

    hostile = Hostile()
    try:
        hostile.answer = lambda h: (send(h, 200, {"usage": {"cohort_downloads": 7, "monthly_limit": 450}})
                                    if h.path == "/api/5/cohorts/usage" else send(h, 404, {"error": "no"}))
        usage = CohortClient("api", "secret", base_url=hostile.url).usage()
        assert hostile.paths == ["/api/3/cohorts/usage", "/api/5/cohorts/usage"]
        assert (usage["downloads_this_month"], usage["monthly_limit"], usage["resets_at"]) == (7, 450, None)
        hostile.answer = lambda h: send(h, 404, {"error": "no"})
        assert CohortClient("api", "secret", base_url=hostile.url).usage()["downloads_this_month"] is None
    finally:
        hostile.close()


# -- errors --------------------------------------------------------------------------------
def test_wrong_keys_give_an_authentication_error_naming_both(server):
    client = CohortClient(server.api_key, "not-the-secret", base_url=server.url)
    with pytest.raises(AuthenticationError, match="API key.*secret key") as caught:
        client.list_cohorts()
    assert caught.value.status == 401
    assert "not-the-secret" not in str(caught.value) + repr(caught.value)


def test_a_cohort_gone_since_the_listing_is_a_404(server):
    client = fast(server)
    client.list_cohorts()
    server.cohorts.remove("cohort5")
    with pytest.raises(NotFoundError, match=r"cohort 'Beta testers' \(cohort5\) is not in this project"):
        client.members("Beta testers")


def test_unknown_and_ambiguous_names_list_the_candidates(server):
    client = fast(server)
    with pytest.raises(InvalidQueryError, match=r"Did you mean 'Power users' \(cohort3\)"):
        client.members("Power user")
    assert not [p for p in cohort_paths(server) if "/request" in p]
    server.cohorts.rename("cohort4", "Power users")
    client.list_cohorts()
    with pytest.raises(InvalidQueryError, match=r"2 cohorts are named 'Power users'.*cohort3.*cohort4|cohort4.*cohort3"):
        client.members("Power users")
    assert client.members("cohort3")["user_id"].notna().all()


def test_keys_are_checked_and_never_shown(server, monkeypatch, caplog):
    with pytest.raises(ConfigurationError, match="API key"):
        CohortClient("", "x")
    with pytest.raises(ConfigurationError, match="plain http"):
        CohortClient("a", "b", base_url="http://example.com")
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "s3cr3t-canary")
    with pytest.raises(ConfigurationError, match="AMPLITUDE_API_KEY is not set.*AMPLITUDE_SECRET_KEY"):
        CohortClient.from_env()
    assert CohortClient("a", "b", region="eu").base_url == "https://analytics.eu.amplitude.com"
    caplog.set_level(logging.DEBUG)
    client = fast(server)
    client.members("Power users")
    shown = repr(client) + repr(client.__dict__) + caplog.text
    assert server.secret_key not in shown and server.api_key not in shown
    with pytest.raises(TypeError):
        pickle.dumps(client)


def test_connect_uses_the_sample_org_without_keys(monkeypatch):
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    client = amp.cohorts.connect()
    assert client.is_sample
    assert "Power users" in client.cohort_names().values()
    profile_client = amp.connect()
    assert amp.cohorts.for_profile_client(profile_client).base_url == profile_client.base_url


# -- the file reader -------------------------------------------------------------------------
def test_member_files_are_read_tolerantly():
    plain = b'\xef\xbb\xbf"Amplitude ID","User ID","plan"\n1,u1,pro\n2,,free\n\n'
    frame = read_member_file(plain)
    assert list(frame.columns) == ["amplitude_id", "user_id", "plan"]
    assert frame["amplitude_id"].tolist() == [1, 2]
    assert frame["user_id"].isna().tolist() == [False, True]
    assert read_member_file(gzip.compress(plain)).equals(frame)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cohort.csv", plain)
    assert read_member_file(buffer.getvalue()).equals(frame)
    only_users = read_member_file(b"user_id\tcountry\nu1\tFR\n")
    assert list(only_users.columns) == ["amplitude_id", "user_id", "country"]
    assert only_users["amplitude_id"].isna().all()
    empty = read_member_file(b"amplitude_id,user_id\n")
    assert len(empty) == 0 and list(empty.columns) == ["amplitude_id", "user_id"]
    with pytest.raises(ResponseFormatError, match="'email'"):
        read_member_file(b"email\na@example.com\n")


# -- names in tables and figures ----------------------------------------------------------------
@pytest.fixture(scope="module")
def named():
    """Profiles with cohort ids, and the org's cohort client (one small org for the module)."""
    with SampleServer(n_users=60) as srv:
        ps = srv.client().get_profiles(list(srv.org.user_ids), cohort_ids=True, progress=False)
        yield ps, srv.cohort_client(), srv.org.cohort_names


def test_tables_show_names_falling_back_to_ids(named):
    ps, client, truth = named
    long = amp.tables.cohorts(ps, names=client)
    assert tuple(long.columns) == amp.tables.COHORT_NAMED_COLUMNS
    assert str(long["cohort_name"].dtype) == "category"
    assert (long["cohort_name"].astype(str) == long["cohort_id"].astype(str).map(truth)).all()
    partial = amp.tables.cohorts(ps, names={"cohort1": "Everyone"})
    assert set(partial.loc[partial["cohort_id"] == "cohort1", "cohort_name"]) == {"Everyone"}
    assert set(partial.loc[partial["cohort_id"] == "cohort3", "cohort_name"]) == {"cohort3"}
    assert amp.tables.cohorts([], names=client).columns.tolist() == list(amp.tables.COHORT_NAMED_COLUMNS)

    by_id = amp.tables.cohort_matrix(ps)
    by_name = amp.tables.cohort_matrix(ps, names=client.list_cohorts())
    assert [truth.get(c, c) for c in by_id.columns] == list(by_name.columns)
    assert by_name["Power users"].equals(by_id["cohort3"])
    chosen = amp.tables.cohort_matrix(ps, cohorts=["Power users", "cohort1"], names=client)
    assert list(chosen.columns) == ["user_id", "device_id", "Power users", "All active users"]
    twins = amp.tables.cohort_matrix(ps, cohorts=["cohort1", "cohort3"], names={"cohort1": "Same", "cohort3": "Same"})
    assert list(twins.columns)[2:] == ["Same (cohort1)", "Same (cohort3)"]
    with pytest.raises(InvalidQueryError, match="names="):
        amp.tables.cohorts(ps, names=42)


def test_figures_show_names(named):
    ps, client, truth = named
    long = amp.tables.cohorts(ps)
    sizes = amp.plots.cohort_sizes(long, names=client)
    assert set(sizes.data[0].x) <= set(truth.values())
    assert "Power users" in sizes.data[0].x
    # The long table's cohort_name column is enough; labels= still wins.
    overlap = amp.plots.cohort_overlap(amp.tables.cohorts(ps, names=client), labels={"cohort1": "Everyone"})
    assert "Everyone" in overlap.data[0].x and "Power users" in overlap.data[0].x
    heat = amp.plots.cohort_heatmap(long, names={"cohort3": "Power users"})
    assert "Power users" in heat.data[0].x and "cohort1" in heat.data[0].x
    upset = amp.plots.cohort_upset(long, names=client)
    shown = list(upset.data[-1].customdata)  # the cohort-size bars, one per cohort shown
    assert shown and set(shown) <= set(truth.values())


# -- the command line ---------------------------------------------------------------------------
def run_cli(*argv: str) -> tuple[int, str, str]:
    from amptools.cli import main

    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_cli_lists_cohorts_and_fetches_one(tmp_path, monkeypatch):
    code, out, _ = run_cli("cohorts", "list", "--sample")
    assert code == 0
    assert "Power users" in out and "profile_api" in out and "cohort30" not in out
    code, out, _ = run_cli("cohorts", "list", "--sample", "--csv", "--archived")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["cohort_id"] for r in rows} >= {"cohort1", "cohort30"}

    code, out, err = run_cli("fetch", "--sample", "--cohort", "Beta testers", "--cohorts",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "'Beta testers'" in err and "users to fetch" in err
    fetched = list(csv.DictReader(open(tmp_path / "cohorts.csv", encoding="utf-8-sig")))
    users = {r["user_id"] for r in fetched}
    assert users and all({"cohort5"} <= {r["cohort_id"] for r in fetched if r["user_id"] == u} for u in users)

    code, _, err = run_cli("fetch", "--sample", "--cohort", "Beta tester", "--out", str(tmp_path))
    assert code == 2 and "Did you mean 'Beta testers' (cohort5)" in err
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "only-the-secret")
    code, _, err = run_cli("cohorts", "list")
    assert code == 2 and "AMPLITUDE_API_KEY is not set" in err and "--sample" in err
    assert "only-the-secret" not in err


# -- the explorer's "From a cohort" -------------------------------------------------------------
def test_cohort_picker_lists_searches_fetches_and_caps(server):
    from amptools.controller import CohortPicker

    picker = CohortPicker(fast(server))
    assert picker.choices() == [] and picker.ids() == []
    picker.load()
    labels = dict((value, label) for label, value in picker.choices())
    assert len(labels) == len(server.cohorts.definitions()) - 1  # the archived one is left out
    assert labels["cohort3"].startswith("Power users — ") and " users — computed 2024-06-" in labels["cohort3"]
    assert [value for _, value in picker.choices("POWER")] == ["cohort3"]
    assert [value for _, value in picker.choices("cohort3")] == ["cohort3"]
    stages = []
    picker.start("cohort3", on_progress=lambda stage, message: stages.append(stage))
    assert picker.wait(10) and picker.error is None
    truth = set(server.cohorts.members("cohort3"))
    every = picker.ids()
    assert {server.org.find(user_id=u) for u in every} == truth
    assert picker.ids(cap=5) == every[:5]
    sampled = picker.ids(cap=5, sample=True)
    assert len(sampled) == 5 and set(sampled) <= set(every) and sampled != every[:5]
    assert picker.ids(cap=5, sample=True) == sampled  # seeded
    assert "Power users: " in picker.message and "downloaded" in picker.message
    assert "requested" in stages and stages[-1] == "done"

    server.cohorts.job_delay = float("inf")
    slow = CohortPicker(server.cohort_client(poll_base=5.0))
    slow.load()
    slow.start("cohort1")
    slow.cancel()
    assert slow.wait(5)
    assert isinstance(slow.error, FetchCancelled) and slow.ids() == []
    assert slow.message.startswith("Could not fetch the members")


def test_the_explorer_chooses_users_from_a_cohort_with_real_widgets(server):
    from amptools.widgets import ProfileExplorer

    explorer = ProfileExplorer(server.client(), cohort_client=fast(server))
    chooser = explorer.users
    assert "From a cohort" in chooser.tabs.titles
    chooser.method = "cohort"  # showing the tab lists the cohorts
    assert "Power users" in " ".join(label for label, _ in chooser.cohort_list.options)
    assert chooser.cohort_fetch.disabled and explorer.fetch_button.disabled
    chooser.cohort_search.value = "power"
    assert [value for _, value in chooser.cohort_list.options] == ["cohort3"]
    chooser.cohort_list.value = "cohort3"
    assert not chooser.cohort_fetch.disabled
    chooser.cohort_cap.value = 4
    chooser.cohort_fetch.click()
    assert chooser.cohorts.wait(10)
    assert chooser.cohort_progress.value == chooser.cohort_progress.max
    assert "Power users: " in chooser.cohort_status.value
    assert len(chooser.ids) == 4 and chooser.id_type == "user_id"
    assert "4 user ids" in chooser.message.value
    assert not explorer.fetch_button.disabled
    explorer.options.recs.value = []
    explorer.fetch_button.click()
    assert explorer.wait(30)
    summary = explorer.controller.table("summary")
    assert summary["user_id"].tolist() == chooser.ids
    assert "Power users" in explorer.controller.table("cohort_matrix").columns


def test_the_marketing_table_names_its_cohort_columns(sample_server):
    ps = sample_server.client(rate_limit=100_000).get_profiles(
        list(sample_server.org.user_ids[1:40]), cohort_ids=True, progress=False)
    cohort_client = sample_server.cohort_client()
    named = amp.export.marketing_table(ps, cohorts=True, names=cohort_client)
    by_id = amp.export.marketing_table(ps, cohorts=True)
    names = amp.tables.cohort_names(cohort_client)
    flags = [c for c in by_id.columns if c.startswith("cohort:")]
    assert flags and [c for c in named.columns if c.startswith("cohort:")] != flags
    for column in flags:
        cohort_id = column.split(":", 1)[1]
        assert named[f"cohort:{names.get(cohort_id, cohort_id)}"].equals(by_id[column])
