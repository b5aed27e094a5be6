"""Tests for amptools.plots: figure objects (trace types, plotted values, words), not pixels."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from amptools import plots

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def make_recs(lists: dict[tuple[str, str], list[str]], *, control: set[tuple[str, str]] = frozenset(),
              source: dict[str, str] | None = None) -> pd.DataFrame:
    """Recommendations table in the tables.recommendations schema, from {(user, rec_id): items}."""
    rows = [
        {"user_id": user, "device_id": f"d-{user}", "rec_id": rec_id, "child_rec_id": rec_id,
         "recommendation_source": (source or {}).get(rec_id, "collab"), "is_control": (user, rec_id) in control,
         "last_updated": pd.Timestamp("2024-01-01", tz="UTC"), "rank": rank, "item": item}
        for (user, rec_id), items in lists.items() for rank, item in enumerate(items, start=1)
    ]
    frame = pd.DataFrame(rows)
    for column in ("rec_id", "child_rec_id", "recommendation_source", "item"):
        frame[column] = pd.Categorical(frame[column], categories=[*pd.unique(frame[column]), "never-used"])
    return frame


def random_tables(n_users: int = 300, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    lists, control = {}, set()
    for u in range(n_users):
        for rec_id in ("home", "cart"):
            lists[(f"u{u}", rec_id)] = [f"i{x}" for x in rng.choice(30, 5, replace=False, p=np.r_[np.full(10, 0.06), np.full(20, 0.02)])]
            if rng.random() < 0.2:
                control.add((f"u{u}", rec_id))
    recs = make_recs(lists, control=control, source={"home": "collab", "cart": "popular"})
    members = [(f"u{u}", f"d-u{u}", f"c{c}") for u in range(n_users) for c in range(6) if rng.random() < 0.5 / (c + 1) + 0.1]
    cohorts = pd.DataFrame(members, columns=["user_id", "device_id", "cohort_id"]).astype({"cohort_id": "category"})
    computations = pd.DataFrame(
        [(f"u{u}", f"d-u{u}", name, float(rng.normal(10 * (k + 1), 3))) for u in range(n_users) for k, name in enumerate(["ltv", "orders"])],
        columns=["user_id", "device_id", "computation", "value"])
    computations.loc[3, "value"] = np.nan  # unparseable value
    computations["raw"] = computations["value"].astype(str)
    propensities = pd.DataFrame(
        [(f"u{u}", f"d-u{u}", "churn", "score", float(rng.beta(2, 5))) for u in range(n_users)],
        columns=["user_id", "device_id", "prediction_id", "propensity_type", "value"])
    return {"recs": recs, "cohorts": cohorts, "computations": computations, "propensities": propensities}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return random_tables()


# ---------------------------------------------------------------------------- recommendation figures


def test_rec_overlap_heatmap_values_and_words():
    recs = make_recs({("u1", "A"): ["a", "b"], ("u1", "B"): ["a", "c"], ("u2", "A"): ["x"], ("u2", "B"): ["x"]})
    fig = plots.rec_overlap_heatmap(recs, title=None)
    assert isinstance(fig, go.Figure) and isinstance(fig.data[0], go.Heatmap)
    z = np.array(fig.data[0].z, dtype=float)
    # u1: |{a}| / |{a,b,c}| = 1/3, u2: 1 -> mean 2/3
    assert z[0, 1] == pytest.approx((1 / 3 + 1) / 2) and z[0, 0] == 1.0
    assert list(fig.data[0].x) == ["A", "B"]
    assert fig.data[0].text[0][1] == "0.67"
    assert "Jaccard" in fig.layout.title.text and "recommendation set" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "Recommendation set"
    assert "Users with both" in fig.data[0].hovertemplate
    rbo = plots.rec_overlap_heatmap(recs, metric="rbo", by="rec_id", labels={"A": "Home page"})
    assert "Rank-biased overlap" in rbo.layout.title.text and rbo.data[0].x[0] == "Home page"


def test_item_frequency_against_pandas(tables):
    recs = tables["recs"]
    fig = plots.item_frequency(recs, color="rec_id", top_n=5)
    assert all(isinstance(trace, go.Bar) for trace in fig.data)
    assert [trace.name for trace in fig.data] == ["cart", "home"]
    expected = recs.groupby(["rec_id", "item"], observed=True).size() / recs.groupby("rec_id", observed=True)["user_id"].nunique()
    for trace in fig.data:
        # Every bar is pandas' share; none is missing here (every item is in both sets).
        assert list(trace.x) == pytest.approx([expected[(trace.name, item)] for item in trace.y])
    assert fig.layout.xaxis.title.text == "Share of lists containing the item"
    assert fig.layout.yaxis.title.text == "Item"
    assert "never-used" not in set(fig.data[0].y)
    # An item one set never holds has no bar in that set (NaN), and only there.
    few = make_recs({("u1", "A"): ["a", "b"], ("u2", "A"): ["a"], ("u1", "B"): ["c"]})
    bars = {trace.name: dict(zip(trace.y, trace.x)) for trace in plots.item_frequency(few, top_n=5).data}
    assert bars == {"A": pytest.approx({"a": 1.0, "b": 0.5, "c": np.nan}, nan_ok=True),
                    "B": pytest.approx({"a": np.nan, "b": np.nan, "c": 1.0}, nan_ok=True)}


def test_control_vs_treatment(tables):
    recs = tables["recs"]
    fig = plots.control_vs_treatment(recs, top_n=4)
    assert {trace.name for trace in fig.data} == {"Control", "Treatment"}
    assert len(fig.data) == 4  # two rec sets × two arms
    home_control = [t for t in fig.data if t.name == "Control" and t.xaxis == "x2"][0]  # second panel = "home"
    sub = recs[(recs["rec_id"] == "home") & recs["is_control"]]
    n_lists = sub["user_id"].nunique()
    for item, share in zip(home_control.y, home_control.x):
        assert share == pytest.approx((sub["item"] == item).sum() / n_lists)
    assert [a.text for a in fig.layout.annotations][:2] == ["Recommendation set: cart", "Recommendation set: home"]


def test_user_lists_and_rank_comparison():
    recs = make_recs({("u1", "A"): ["a", "b", "c"], ("u1", "B"): ["c", "a", "d"], ("u2", "A"): ["z"]})
    fig = plots.user_lists(recs, user_id="u1")
    by_status = {trace.name: trace for trace in fig.data}
    assert sorted(by_status["In every list"].text) == ["a", "a", "c", "c"]
    assert list(by_status["Only in this list"].text) == ["b", "d"]
    assert "u1" in fig.layout.title.text and fig.layout.yaxis.title.text == "Rank"
    slope = plots.rank_comparison(recs, user_id="u1", left="A", right="B")
    lines = slope.data[0]
    # a: rank 1 -> 2, c: rank 3 -> 1
    assert list(lines.y) == [1, 2, None, 3, 1, None]
    assert list(slope.layout.xaxis.ticktext) == ["A", "B"]
    # The last list's item names stand right of its marks: the axis leaves room for them.
    assert fig.layout.xaxis.range[1] > len({"A", "B"}) - 0.5
    empty = plots.user_lists(recs, user_id="nobody")
    assert empty.layout.annotations[0].text == plots.NO_DATA


def test_long_tail(tables):
    fig = plots.long_tail(tables["recs"])
    names = [trace.name for trace in fig.data]
    assert names == ["collab", "popular", "Perfectly even"]
    assert fig.data[0].y[-1] == pytest.approx(1.0) and fig.data[0].x[0] == 0.0
    assert fig.layout.yaxis.title.text == "Cumulative share of recommendations"


# ---------------------------------------------------------------------------- cohort figures


def test_cohort_sizes_long_and_wide_agree(tables):
    cohorts = tables["cohorts"]
    fig = plots.cohort_sizes(cohorts)
    expected = cohorts["cohort_id"].value_counts()
    assert dict(zip(fig.data[0].x, fig.data[0].y)) == expected.to_dict()
    assert list(fig.data[0].y) == sorted(fig.data[0].y, reverse=True)
    wide = pd.crosstab([cohorts["user_id"], cohorts["device_id"]], cohorts["cohort_id"]).astype(bool).reset_index()
    wide.columns.name = None
    fig_wide = plots.cohort_sizes(wide)
    assert list(fig_wide.data[0].x) == list(fig.data[0].x) and list(fig_wide.data[0].y) == list(fig.data[0].y)
    assert fig.layout.yaxis.title.text == "Users" and fig.layout.xaxis.title.text == "Cohort"


def test_cohort_heatmap_samples_and_sorts(tables):
    cohorts = tables["cohorts"]
    fig = plots.cohort_heatmap(cohorts, max_users=50, seed=3)
    z = np.array(fig.data[0].z)
    assert z.shape == (50, cohorts["cohort_id"].nunique())
    assert "random sample of 50" in fig.layout.title.text and "seed 3" in fig.layout.title.text
    assert list(z[:, 0]) == sorted(z[:, 0], reverse=True)  # members of the largest cohort first
    assert fig.data[0].x[0] == cohorts["cohort_id"].value_counts().index[0]
    small = plots.cohort_heatmap(cohorts.iloc[:5])
    assert "sample" not in small.layout.title.text
    # Slanted names above the grid get a top margin that grows with the longest.
    renamed = plots.cohort_heatmap(cohorts, names={c: "a much longer cohort name" for c in cohorts["cohort_id"]})
    assert renamed.layout.margin.t > fig.layout.margin.t


def test_cohort_overlap_matches_pandas(tables):
    cohorts = tables["cohorts"]
    fig = plots.cohort_overlap(cohorts)
    names = list(fig.data[0].x)
    members = {c: set(g["user_id"]) for c, g in cohorts.groupby("cohort_id", observed=True)}
    a, b = names[0], names[1]
    assert fig.data[0].z[0][1] == pytest.approx(len(members[a] & members[b]) / len(members[a] | members[b]))
    assert fig.data[0].z[0][0] == 1.0


def test_cohort_upset(tables):
    cohorts = tables["cohorts"]
    fig = plots.cohort_upset(cohorts, max_intersections=5)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    intersections, set_sizes = bars[0], bars[1]
    patterns = cohorts.groupby("user_id")["cohort_id"].apply(lambda s: frozenset(s)).value_counts()
    assert list(intersections.y) == list(patterns.to_numpy()[:5])
    assert sorted(set_sizes.x, reverse=True) == list(cohorts["cohort_id"].value_counts().to_numpy())
    assert any(isinstance(t, go.Scatter) and t.mode == "lines" for t in fig.data)
    assert fig.layout.yaxis.title.text == "Users in exactly these cohorts"


def test_cohort_figures_take_max_cohorts_and_warn_on_the_old_top_n(tables):
    cohorts = tables["cohorts"]
    assert len(plots.cohort_sizes(cohorts, max_cohorts=3).data[0].x) == 3
    assert len(plots.cohort_overlap(cohorts, max_cohorts=2).data[0].x) == 2
    assert len(plots.cohort_heatmap(cohorts, max_cohorts=4).data[0].x) == 4
    with pytest.warns(DeprecationWarning, match=r"^amptools\.plots\.cohort_sizes\(\): top_n= is deprecated, use max_cohorts="):
        old = plots.cohort_sizes(cohorts, top_n=3)
    assert old.to_dict() == plots.cohort_sizes(cohorts, max_cohorts=3).to_dict()
    with pytest.warns(DeprecationWarning, match="use max_intersections="):
        old = plots.cohort_upset(cohorts, top_n=4)
    assert len(old.data[0].y) == 4 and old.layout.title.text.startswith("Top 4 cohort intersections")
    with pytest.raises(TypeError, match="pass only max_cohorts="):
        plots.cohort_overlap(cohorts, top_n=2, max_cohorts=2)


def test_every_figure_takes_the_frame_then_keywords():
    import inspect
    for name in plots.__all__:
        parameters = list(inspect.signature(getattr(plots, name)).parameters.values())
        assert parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[1:]), name
        assert "top_n" not in inspect.signature(getattr(plots, name)).parameters or name in (
            "item_frequency", "control_vs_treatment", "item_churn", "rank_shift"), f"{name}: top_n means items per group only"


# ---------------------------------------------------------------------------- computations and propensities


def test_computation_distribution_histogram(tables):
    computations, cohorts = tables["computations"], tables["cohorts"]
    fig = plots.computation_distribution(computations, computation="ltv", groups=cohorts, nbins=10)
    assert all(isinstance(t, go.Bar) for t in fig.data)
    joined = computations[computations["computation"] == "ltv"].dropna(subset=["value"]).merge(cohorts, on=["user_id", "device_id"])
    c0 = joined[joined["cohort_id"] == "c0"]["value"].to_numpy()
    trace = [t for t in fig.data if t.name == "c0"][0]
    edges = np.histogram_bin_edges(joined["value"], bins=10)  # bins shared by all cohorts
    assert np.array(trace.x) == pytest.approx((edges[:-1] + edges[1:]) / 2)
    counts, _ = np.histogram(c0, bins=edges)
    assert np.array(trace.y) == pytest.approx(counts / len(c0))
    assert fig.layout.yaxis.title.text == "Share of users" and fig.layout.xaxis.title.text == "ltv"
    assert "by cohort" in fig.layout.title.text.lower()


def test_computation_distribution_box_and_violin(tables):
    computations, recs = tables["computations"], tables["recs"]
    home = recs[recs["rec_id"] == "home"]
    fig = plots.computation_distribution(computations, computation="orders", groups=home, kind="box")
    assert {t.name for t in fig.data} == {"Control", "Treatment"}
    values = computations[computations["computation"] == "orders"].merge(
        home[["user_id", "device_id", "is_control"]].drop_duplicates(), on=["user_id", "device_id"])
    control = values[values["is_control"]]["value"].dropna()
    trace = [t for t in fig.data if t.name == "Control"][0]
    assert isinstance(trace, go.Box) and trace.median[0] == pytest.approx(control.median())
    assert trace.q1[0] == pytest.approx(control.quantile(0.25))
    violin = plots.computation_distribution(computations, computation="orders", kind="violin")
    assert violin.data[0].fill == "toself" and violin.data[0].name == "All users"
    with pytest.raises(ValueError, match="kind"):
        plots.computation_distribution(computations, computation="orders", kind="pie")


def test_computation_scatter_webgl_and_sampling(tables):
    computations, cohorts = tables["computations"], tables["cohorts"]
    fig = plots.computation_scatter(computations, x="ltv", y="orders", groups=cohorts)
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert fig.layout.xaxis.title.text == "ltv" and fig.layout.yaxis.title.text == "orders"
    sampled = plots.computation_scatter(computations, x="ltv", y="orders", max_points=50)
    assert sum(len(t.x) for t in sampled.data) == 50 and "random sample of 50" in sampled.layout.title.text


def test_propensity_distribution(tables):
    fig = plots.propensity_distribution(tables["propensities"], groups=tables["cohorts"], nbins=20)
    assert fig.layout.xaxis.title.text == "Propensity score (0–1)"
    assert all(isinstance(t, go.Bar) and len(t.x) == 20 for t in fig.data)


# ---------------------------------------------------------------------------- errors, empty input, scale


@pytest.mark.parametrize(
    ("function", "frame_name", "kwargs", "missing"),
    [
        (plots.rec_overlap_heatmap, "recs", {}, "item"),
        (plots.item_frequency, "recs", {}, "item"),
        (plots.long_tail, "recs", {}, "item"),
        (plots.cohort_sizes, "cohorts", {}, "user_id"),
        (plots.computation_distribution, "computations", {"computation": "ltv"}, "value"),
        (plots.propensity_distribution, "propensities", {}, "value"),
    ],
)
def test_missing_column_error_names_columns(tables, function, frame_name, kwargs, missing):
    frame = tables[frame_name].drop(columns=missing)
    with pytest.raises(ValueError, match=rf"missing column\(s\) '{missing}'.*expects the columns"):
        function(frame, **kwargs)


def test_empty_input_gives_note(tables):
    empty_figures = [
        plots.rec_overlap_heatmap(tables["recs"].iloc[:0]),
        plots.item_frequency(tables["recs"].iloc[:0]),
        plots.long_tail(tables["recs"].iloc[:0]),
        plots.control_vs_treatment(tables["recs"].iloc[:0]),
        plots.cohort_sizes(tables["cohorts"].iloc[:0]),
        plots.cohort_heatmap(tables["cohorts"].iloc[:0]),
        plots.cohort_upset(tables["cohorts"].iloc[:0]),
        plots.computation_distribution(tables["computations"], computation="does-not-exist"),
        plots.computation_scatter(tables["computations"].iloc[:0], x="ltv", y="orders"),
        plots.propensity_distribution(tables["propensities"].iloc[:0]),
    ]
    for fig in empty_figures:
        assert len(fig.data) == 0 and fig.layout.annotations[0].text == plots.NO_DATA
        assert fig.layout.title.text


def test_figures_do_not_change_input(tables):
    before = {name: frame.copy() for name, frame in tables.items()}
    plots.item_frequency(tables["recs"])
    plots.cohort_upset(tables["cohorts"])
    plots.computation_distribution(tables["computations"], computation="ltv", groups=tables["cohorts"])
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(frame, before[name])


def test_shared_docstrings_filled():
    assert "{common}" not in plots.item_frequency.__doc__
    assert "Figure size in pixels" in plots.cohort_upset.__doc__


CHROMIUM = Path("/usr/bin/chromium")


def _read_png(data: bytes) -> tuple[int, int, int, int, bytes]:
    """Width, height, bit depth, colour type and the inflated image data of a PNG.

    The chunks are walked by hand (length, type, data, CRC) so the test needs no
    imaging library.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    position, compressed = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"IDAT":
            compressed.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return width, height, depth, colour_type, zlib.decompress(b"".join(compressed))


@pytest.mark.slow
def _rendered(fig: go.Figure) -> bytes:
    """The figure as a 900×600 PNG. kaleido's browser tab can run a render before its own
    scripts have loaded when the machine is busy ("kaleido_scopes is not defined", seen once
    under a loaded full suite): that one error of kaleido's is retried, once."""
    try:
        return fig.to_image(format="png", width=900, height=600)
    except Exception as error:  # noqa: BLE001 - only kaleido's not-ready page is retried
        if "kaleido_scopes is not defined" not in str(error):
            raise
        return fig.to_image(format="png", width=900, height=600)


def test_write_pngs(tables, monkeypatch):
    if not CHROMIUM.exists():
        if os.environ.get("AMPTOOLS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AMPTOOLS_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium): kaleido needs it to render PNGs")
    monkeypatch.setenv("BROWSER_PATH", str(CHROMIUM))  # where kaleido looks for a browser first
    ARTIFACTS.mkdir(exist_ok=True)
    figures = {
        "rec_overlap_heatmap": plots.rec_overlap_heatmap(tables["recs"], metric="rbo"),
        "item_frequency": plots.item_frequency(tables["recs"]),
        "cohort_upset": plots.cohort_upset(tables["cohorts"]),
        "computation_distribution": plots.computation_distribution(tables["computations"], computation="ltv",
                                                                   groups=tables["cohorts"], kind="violin"),
    }
    # what "blank" looks like: a white page of the same size from the same renderer
    blank = go.Figure(layout={"template": plots.TEMPLATE, "xaxis": {"visible": False}, "yaxis": {"visible": False}})
    blank_pixels = _read_png(_rendered(blank))[4]
    for name, fig in figures.items():
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(_rendered(fig))
        data = path.read_bytes()
        width, height, depth, colour_type, pixels = _read_png(data)
        assert (width, height, depth) == (900, 600, 8), name
        channels = {2: 3, 6: 4}[colour_type]  # RGB or RGBA
        assert len(pixels) == height * (1 + width * channels), f"{name}: truncated image data"
        # a drawn figure holds text, marks and colours: far more to compress than a white page
        # (recompressed here, so the measure does not depend on the browser's PNG encoder)
        assert pixels != blank_pixels, f"{name} is blank"
        drawn, white = len(zlib.compress(pixels)), len(zlib.compress(blank_pixels))
        assert drawn > 5 * white, f"{name} is nearly blank ({drawn:,} vs {white:,} bytes compressed)"
        assert len(set(pixels)) > 100, f"{name} has almost no distinct byte values (a white page has 3)"


# ---------------------------------------------------------------------------- a Braze send's load
def test_call_plan_figure_marks_the_throttled_minutes():
    from amptools import braze

    plan = braze.call_plan(5, send_rate_per_minute=4, renders_per_message=2, other_calls_per_minute=1, limit=6)
    fig = plots.call_plan(plan)
    send, other = fig.data
    assert list(send.y) == [8, 2] and list(other.y) == [1, 1]
    assert list(send.marker.color) == ["#d62728", "#1f77b4"]  # only minute 0 is over
    assert fig.layout.barmode == "stack"
    assert fig.layout.shapes[0].y0 == 6
    assert "1 of 2 minutes over the limit of 6" in fig.layout.title.text
    assert "rate limit of 2 messages a minute" in fig.layout.title.text
    calm = plots.call_plan(braze.call_plan(5, send_rate_per_minute=2), title="Mine")
    assert calm.layout.title.text == "Mine"
    assert "stays under" in plots.call_plan(braze.call_plan(5, send_rate_per_minute=2)).layout.title.text


def test_call_plan_figure_empty_and_missing_columns():
    from amptools import braze

    empty = plots.call_plan(braze.call_plan(0, send_rate_per_minute=3))
    assert empty.layout.annotations[0].text == plots.NO_DATA
    with pytest.raises(ValueError, match="'api_calls'"):
        plots.call_plan(pd.DataFrame({"minute": [0]}))


# ---------------------------------------------------------------------------- over time (snapshots)


def _two_snapshots() -> tuple[pd.DataFrame, pd.DataFrame]:
    before = make_recs({("u1", "home"): ["a", "b", "c"], ("u2", "home"): ["a", "b", "c"],
                        ("u3", "home"): ["x", "y"], ("u1", "cart"): ["p"]})
    after = make_recs({("u1", "home"): ["b", "a", "d"], ("u2", "home"): ["a", "b", "c"],
                       ("u3", "home"): ["y", "z"], ("u1", "cart"): ["p"], ("u9", "home"): ["a"]})
    return before, after


def test_item_churn_shows_who_gained_and_lost_each_item():
    from amptools import metrics

    churn = metrics.item_churn(*_two_snapshots())
    fig = plots.item_churn(churn, group="home")
    entered, left = fig.data
    assert (entered.name, left.name) == ("Entered", "Left")
    # home: u1 lost c and gained d; u3 lost x and gained z (u9 is in one snapshot only)
    gained = dict(zip(entered.y, entered.x))
    lost = dict(zip(left.y, -np.asarray(left.x)))
    assert gained == {"d": 1, "z": 1, "c": 0, "x": 0} and lost == {"d": 0, "z": 0, "c": 1, "x": 1}
    assert "Recommendation set" not in fig.layout.title.text and "home" in fig.layout.title.text
    assert fig.layout.barmode == "relative"
    with pytest.raises(ValueError, match=r"item_churn\(\): rec_id 'nope' is not in the table"):
        plots.item_churn(churn, group="nope")
    nothing = plots.item_churn(churn, group="cart")  # nothing moved in the cart
    assert nothing.layout.annotations[0].text == "No data to plot"


def test_rank_shift_draws_mean_ranks_before_and_after():
    from amptools import metrics

    churn = metrics.item_churn(*_two_snapshots())
    fig = plots.rank_shift(churn, group="home")
    markers = {trace.name: dict(zip(trace.y, trace.x)) for trace in fig.data if trace.mode == "markers"}
    # a: ranks 1,1 before, 2,1 after; b: 2,2 -> 1,2; y: 2 -> 1
    assert markers["Before"] == {"a": 1.0, "b": 2.0, "c": 3.0, "y": 2.0}
    assert markers["After"] == {"a": 1.5, "b": 1.5, "c": 3.0, "y": 1.0}
    lines = {trace.name: [y for y in trace.y if y is not None] for trace in fig.data if trace.mode == "lines"}
    assert set(lines["Moved up"]) == {"b", "y"} and set(lines["Moved down"]) == {"a"}
    assert fig.layout.xaxis.autorange == "reversed"


def test_cohort_flow_is_a_sankey_of_stayed_left_joined():
    changes = pd.DataFrame({"user_id": ["a", "a", "b", "c", "c"], "device_id": ["d"] * 5,
                            "cohort_id": ["c1", "c2", "c1", "c1", "c2"],
                            "change": ["stayed", "left", "joined", "stayed", "joined"]})
    fig = plots.cohort_flow(changes, names={"c1": "Power users"})
    sankey = fig.data[0]
    assert isinstance(sankey, go.Sankey)
    labels = list(sankey.node.label)
    assert labels == ["Power users (before)", "c2 (before)", "Not in the cohort",
                      "Power users (after)", "c2 (after)", "Left the cohort"]
    flows = {(labels[s], labels[t]): v for s, t, v in zip(sankey.link.source, sankey.link.target, sankey.link.value)}
    assert flows == {("Power users (before)", "Power users (after)"): 2, ("Not in the cohort", "Power users (after)"): 1,
                     ("c2 (before)", "Left the cohort"): 1, ("Not in the cohort", "c2 (after)"): 1}
    assert "3 users in both" in fig.layout.title.text
    capped = plots.cohort_flow(changes, max_cohorts=1)
    assert "the 1 largest of 2 cohorts" in capped.layout.title.text


def test_drift_over_time_one_line_per_set():
    history = pd.DataFrame({
        "before": ["s1", "s2", "s1", "s2"], "after": ["s2", "s3", "s2", "s3"],
        "taken_at_after": pd.to_datetime(["2024-01-02", "2024-01-03"] * 2, utc=True),
        "rec_id": ["home", "home", "cart", "cart"], "n_users_compared": [10, 10, 5, 5],
        "share_changed": [0.1, 0.5, 0.0, 0.0], "mean_jaccard": [0.9, 0.6, 1.0, 1.0], "mean_rbo": [0.95, 0.5, 1.0, 1.0]})
    fig = plots.drift_over_time(history)
    assert [trace.name for trace in fig.data] == ["cart", "home"]
    assert list(fig.data[1].y) == [0.95, 0.5]
    assert "rank-biased overlap" in fig.layout.yaxis.title.text
    share = plots.drift_over_time(history, metric="share_changed", labels={"home": "Home page"})
    assert list(share.data[1].y) == [0.1, 0.5] and share.data[1].name == "Home page"
    with pytest.raises(ValueError, match="metric must be"):
        plots.drift_over_time(history, metric="cosine")
    assert plots.drift_over_time(history.iloc[:0]).layout.annotations[0].text == "No data to plot"
    with pytest.raises(ValueError, match=r"drift_over_time\(\): missing column\(s\) 'mean_rbo'"):
        plots.drift_over_time(history.drop(columns="mean_rbo"))
