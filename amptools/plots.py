"""Plotly figures for recommendation sets, cohorts, computations and propensities.

Every function takes a tidy DataFrame from :mod:`amptools.tables` first and
everything else by keyword, uses plotly.express's argument names (``color``,
``facet_col``, ``labels``, ``title``, ``height``, ``width``) and returns a
:class:`plotly.graph_objects.Figure` without showing it.

One vocabulary, shared with :mod:`amptools.metrics`: ``by`` is a grouping that is
not drawn as colour (the axes of a heatmap, a user's lists), ``color`` the column
whose values get one colour each, ``facet_col`` one panel per value; ``top_n`` is
always "the n most frequent items per group", and ``max_*`` caps how many
cohorts, intersections, groups, users or points a figure shows.  Old spellings
(``top_n=`` of the cohort figures) keep working for now with a DeprecationWarning.

Scale: figures are built from aggregates (counts, histogram bins computed with
numpy, box-plot quartiles, kernel densities), never from one plotted mark per row,
and point clouds use WebGL (``Scattergl``) and are sampled above a cap.  A figure
from 100,000 users builds in well under a second and stays small enough to embed
in a notebook.  Whenever a figure shows a sample or only the largest groups, its
title says so.

Empty input gives an empty figure carrying the note "No data to plot" (and the
usual title), so a notebook cell that runs on an empty selection still renders;
a missing column raises :class:`ValueError` naming the missing and expected columns.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from amptools import metrics
from amptools.frames import ID_COLUMNS, LIST_COLUMNS, deprecated_arguments, moved_names, require_columns, shared_docs
from amptools.grouping import user_codes
from amptools.query import ORG_REQUESTS_PER_MINUTE
from amptools.tables import cohort_labels

__all__ = [
    "call_plan",
    "cohort_flow",
    "cohort_heatmap",
    "cohort_overlap",
    "cohort_sizes",
    "cohort_upset",
    "computation_distribution",
    "computation_scatter",
    "control_vs_treatment",
    "drift_over_time",
    "item_churn",
    "item_frequency",
    "long_tail",
    "propensity_distribution",
    "rank_comparison",
    "rank_shift",
    "rec_overlap_heatmap",
    "user_lists",
]

# The columns each kind of figure needs at least (the tables' own lists are longer); a
# recommendations figure needs a list's columns (amptools.frames.LIST_COLUMNS).
NEEDS_COHORTS: tuple[str, ...] = ("user_id", "device_id", "cohort_id")
NEEDS_COMPUTATIONS: tuple[str, ...] = ("user_id", "device_id", "computation", "value")
NEEDS_PROPENSITIES: tuple[str, ...] = ("user_id", "device_id", "prediction_id", "propensity_type", "value")

#: Words an analyst reads instead of column names; ``labels=`` overrides them.
DEFAULT_LABELS: dict[str, str] = {
    "user_id": "User",
    "device_id": "Device",
    "rec_id": "Recommendation set",
    "child_rec_id": "Recommendation sub-set",
    "recommendation_source": "Model",
    "is_control": "Experiment group",
    "last_updated": "Last updated",
    "rank": "Rank",
    "item": "Item",
    "cohort_id": "Cohort",
    "computation": "Computed property",
    "value": "Value",
    "prediction_id": "Prediction",
    "propensity_type": "Propensity type",
}
NO_DATA = "No data to plot"
TEMPLATE = "plotly_white"

Kind = Literal["histogram", "box", "violin"]

# ---------------------------------------------------------------------------- shared docstrings

_MISSING = object()  # stands for NaN / pd.NA as a dict key

_DOCS: dict[str, str] = {
    "recs": """recs : DataFrame
        The recommendations table from ``amptools.tables.recommendations``.""",
    "cohorts": """cohorts : DataFrame
        Cohort membership: either the long table from ``amptools.tables.cohorts``
        (``user_id``, ``device_id``, ``cohort_id``) or the wide one from
        ``amptools.tables.cohort_matrix`` (one bool column per cohort).""",
    "groups": """groups : DataFrame, optional
        Who is in which group, joined on ``user_id`` and ``device_id``: the cohorts
        table (split by ``cohort_id``) or the recommendations table, ideally of one
        rec set (split by ``is_control``).  A user in several groups counts in each.
        Without it every user is in one group, "All users".
    color : str, optional
        The column of ``groups`` to split by; defaults to ``cohort_id`` when present,
        else ``is_control``.
    max_groups : int, default 10
        Show only this many largest groups (the title says so when some are left out).""",
    "kind": """kind : {"histogram", "box", "violin"}, default "histogram"
        Histogram: bins computed with numpy over all groups, bars show the share of
        each group's users per bin.  Box: quartiles and 1.5 IQR whiskers precomputed.
        Violin: kernel density estimated with numpy on a grid, drawn as filled
        outlines with the median marked.
    nbins : int, default 40
        Histogram bins.""",
    "by": """by : str, default "rec_id"
        The column that names a user's lists (``rec_id``, ``recommendation_source``,
        ``child_rec_id``...).""",
    "user": """user_id : str
        The user whose lists are shown.
    device_id : str, optional
        Needed only when the user id alone is ambiguous or empty.""",
    "names": """names : cohort list, mapping or CohortClient, optional
        Shows cohorts by name: the frame of ``CohortClient.list_cohorts()``, a
        ``{cohort_id: name}`` mapping, or a ``CohortClient`` (asked for its list).
        Ids without a name stay as they are; a long table's ``cohort_name`` column
        (``tables.cohorts(ps, names=...)``) is used too.""",
    "churn": """churn : DataFrame
        ``amptools.metrics.item_churn(before, after)``.
    by : str, default "rec_id"
        The column naming the sets.
    group : hashable, optional
        The set to show (a value of ``by``); the first, sorted, by default.""",
    "common": """labels : mapping, optional
        Display names replacing the default words for columns and group values,
        e.g. ``{"rec_id": "Shelf", "home_page": "Home page"}``.
    title : str, optional
        Figure title; a descriptive default is used when omitted.
    height, width : int, optional
        Figure size in pixels.""",
    "returns": """Returns
    -------
    plotly.graph_objects.Figure
        Not shown; display it or call ``.show()``.  Empty input gives an empty figure
        with the note "No data to plot".

    Raises
    ------
    ValueError
        When a required column is missing (the message names it and the columns
        expected).""",
}

# Fills ``{recs}``, ``{common}``... placeholders with the shared pieces.
_shared_docs = shared_docs(**_DOCS)

_MOVED = moved_names(__name__, {"USER_KEY": ("amptools.tables.ID_COLUMNS", ID_COLUMNS),
                                "NEEDS_RECOMMENDATIONS": ("amptools.frames.LIST_COLUMNS", LIST_COLUMNS)})


def __getattr__(name: str) -> Any:
    return _MOVED(name)


# ---------------------------------------------------------------------------- helpers


def _label(key: Hashable, labels: Mapping[Hashable, str] | None) -> str:
    """Display name for a column or a group value."""
    if labels and key in labels:
        return labels[key]
    if isinstance(key, (bool, np.bool_)):
        return "Control" if key else "Treatment"
    if isinstance(key, str) and key in DEFAULT_LABELS:
        return DEFAULT_LABELS[key]
    return str(key)


def _layout(fig: go.Figure, *, title: str, height: int | None, width: int | None, **extra: object) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title={"text": title}, height=height, width=width, **extra)
    return fig


def _empty_figure(title: str, *, height: int | None, width: int | None) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=NO_DATA, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 16})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title=title, height=height, width=width)


def _sorted_values(values: Sequence[Hashable]) -> list[Hashable]:
    try:
        return sorted(values)  # type: ignore[type-var]  # mixed types fall to the except below
    except TypeError:
        return list(values)


def _in_sorted_order(frame: pd.DataFrame, column: str) -> list[tuple[Hashable, pd.DataFrame]]:
    """Groups of ``frame`` by ``column`` in sorted value order (as every figure orders groups)."""
    groups = dict(list(frame.groupby(column, observed=True, sort=False)))
    return [(key, groups[key]) for key in _sorted_values(list(groups))]


def _user_frame(frame: pd.DataFrame, user_id: str, device_id: str | None, function: str) -> pd.DataFrame:
    mask = frame["user_id"] == user_id
    if device_id is not None:
        mask &= frame["device_id"] == device_id
    sub = frame[mask]
    devices = pd.unique(sub["device_id"])
    if len(devices) > 1:
        raise ValueError(f"{function}(): user {user_id!r} has several device ids {list(devices)}; pass device_id=")
    return sub


def _ordered_lists(sub: pd.DataFrame, by: str) -> dict[Hashable, list[Hashable]]:
    """One list of distinct items per value of ``by``, in rank order."""
    lists: dict[Hashable, list[Hashable]] = {}
    for key, group in sub.sort_values("rank", kind="stable").groupby(by, observed=True, sort=False):
        lists[key] = list(dict.fromkeys(group["item"].astype(object)))
    return {key: lists[key] for key in _sorted_values(list(lists))}


# ---------------------------------------------------------------------------- recommendation sets


@_shared_docs
def rec_overlap_heatmap(
    recs: pd.DataFrame, *, by: str = "rec_id", metric: metrics.Metric = "jaccard", k: int | None = None, p: float = 0.9,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Heatmap of the mean similarity between recommendation sets (or models).

    Each cell is the mean, over users who got both, of the similarity of their two
    lists (:func:`amptools.metrics.overlap_matrix`); values are written in the
    cells and the hover gives the number of shared users.

    Parameters
    ----------
    {recs}
    {by}
    metric : {{"jaccard", "overlap", "rbo"}}, default "jaccard"
        Jaccard and overlap ignore order; rank-biased overlap weighs the top ranks.
    k : int, optional
        Jaccard/overlap of the top ``k`` items only.
    p : float, default 0.9
        RBO persistence.
    {common}

    {returns}
    """
    require_columns(recs, [*LIST_COLUMNS, by], "rec_overlap_heatmap")
    metric_name = {"jaccard": "Jaccard similarity", "overlap": "Overlap", "rbo": f"Rank-biased overlap (p={p})"}.get(metric, metric)
    group_name = _label(by, labels)
    title = title or f"{metric_name} between {group_name.lower()}s (mean over shared users)"
    values = metrics.overlap_matrix(recs, by=by, metric=metric, k=k, p=p)
    counts = values.attrs["n_users"]
    if values.empty:
        return _empty_figure(title, height=height, width=width)
    names = [_label(value, labels) for value in values.index]
    z = values.to_numpy()
    text = np.where(np.isnan(z), "–", np.vectorize(lambda v: f"{v:.2f}")(np.nan_to_num(z)))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            customdata=counts.to_numpy(),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar={"title": {"text": metric_name}},
            hovertemplate=(
                f"{group_name}: %{{y}}<br>{group_name}: %{{x}}<br>{metric_name}: %{{z:.3f}}"
                "<br>Users with both: %{customdata:,}<extra></extra>"
            ),
        )
    )
    fig.update_yaxes(autorange="reversed", title_text=group_name)
    fig.update_xaxes(title_text=group_name, side="bottom")
    return _layout(fig, title=title, height=height, width=width)


@_shared_docs
def item_frequency(
    recs: pd.DataFrame, *, color: str | None = "rec_id", top_n: int = 10,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Horizontal bars: the most recommended items, grouped by set or model.

    The value is the share of lists (user × rec set) in the group holding the item,
    so groups of different sizes compare fairly.  The items shown are the union of
    each group's top ``top_n``, ordered by their overall share.

    Parameters
    ----------
    {recs}
    color : str or None, default "rec_id"
        Column giving one bar colour per value (``recommendation_source``,
        ``is_control``...); ``None`` for one colour.
    top_n : int, default 10
        Items per group.
    {common}

    {returns}
    """
    by = [color] if color else []
    require_columns(recs, [*LIST_COLUMNS, *by], "item_frequency")
    group_name = _label(color, labels) if color else None
    title = title or (f"Top {top_n} items by {group_name.lower()}" if group_name else f"Top {top_n} items")
    frequency = metrics.item_frequency(recs, by=by or None)
    if frequency.empty:
        return _empty_figure(title, height=height, width=width)
    # item_frequency sorts each group by count, so the head of each group is its top
    top = frequency.groupby(by, observed=True, sort=False).head(top_n) if by else frequency.head(top_n)
    shown = top["item"].unique()
    frequency = frequency[frequency["item"].isin(shown)]
    item_order = frequency.groupby("item")["n_lists"].sum().sort_values(ascending=True, kind="stable").index
    item_names = [str(item) for item in item_order]
    fig = go.Figure()
    groups = _in_sorted_order(frequency, color) if color else [("All lists", frequency)]
    for key, group in groups:
        share = group.set_index("item")["share_of_lists"].reindex(item_order)
        count = group.set_index("item")["n_lists"].reindex(item_order)
        name = _label(key, labels)
        fig.add_trace(
            go.Bar(
                x=share.to_numpy(),
                y=item_names,
                orientation="h",
                name=name,
                customdata=count.to_numpy(),
                hovertemplate=f"{group_name or 'Lists'}: {name}<br>Item: %{{y}}<br>Share of lists: %{{x:.1%}}<br>Lists: %{{customdata:,}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="Share of lists containing the item", tickformat=".0%")
    fig.update_yaxes(title_text="Item")
    return _layout(fig, title=title, height=height or max(400, 22 * len(item_names) * max(1, len(fig.data)) // 2 + 150),
                   width=width, barmode="group", legend_title_text=group_name or "")


@_shared_docs
def control_vs_treatment(
    recs: pd.DataFrame, *, facet_col: str = "rec_id", top_n: int = 10,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """What control users see next to what treatment users see, per rec set.

    One panel per value of ``facet_col``; in each, the ``top_n`` items most often
    shown to treatment users (plus control's top items) with the share of each
    arm's lists holding them.  Control users get a random selection, so a model
    that personalises shows a very different profile from control.

    Parameters
    ----------
    {recs}
    facet_col : str, default "rec_id"
        One panel per value of this column.
    top_n : int, default 10
        Items per arm and panel.
    {common}

    {returns}
    """
    require_columns(recs, [*LIST_COLUMNS, "is_control", facet_col], "control_vs_treatment")
    facet_name = _label(facet_col, labels)
    title = title or f"Items shown to control vs treatment users, by {facet_name.lower()}"
    frequency = metrics.item_frequency(recs, by=[facet_col, "is_control"])
    if frequency.empty:
        return _empty_figure(title, height=height, width=width)
    panels = _sorted_values(list(pd.unique(frequency[facet_col])))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{facet_name}: {_label(p, labels)}" for p in panels],
                        horizontal_spacing=min(0.12, 0.5 / max(1, len(panels))))
    colours = {False: "#1f77b4", True: "#aaaaaa"}
    for column, panel in enumerate(panels, start=1):
        sub = frequency[frequency[facet_col] == panel]
        top = sub.sort_values(["is_control", "n_lists"], ascending=[True, False]).groupby("is_control").head(top_n)
        shown = top.groupby("item")["share_of_lists"].max().sort_values(kind="stable").index
        for arm in (True, False):
            arm_rows = sub[sub["is_control"] == arm].set_index("item")
            share = arm_rows["share_of_lists"].reindex(shown).fillna(0.0)
            name = _label(arm, labels)
            fig.add_trace(
                go.Bar(x=share.to_numpy(), y=[str(i) for i in shown], orientation="h", name=name,
                       legendgroup=name, showlegend=column == 1, marker_color=colours[arm],
                       hovertemplate=f"{name}<br>Item: %{{y}}<br>Share of lists: %{{x:.1%}}<extra></extra>"),
                row=1, col=column,
            )
    fig.update_xaxes(title_text="Share of lists containing the item", tickformat=".0%")
    fig.update_yaxes(title_text="Item", col=1)
    return _layout(fig, title=title, height=height or max(450, 40 * top_n + 150), width=width,
                   barmode="group", legend_title_text=_label("is_control", labels))


@_shared_docs
def user_lists(
    recs: pd.DataFrame, *, user_id: str, device_id: str | None = None, by: str = "rec_id",
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """One user's lists side by side, items at their rank, shared items marked.

    Each column is one list; an item's colour says whether it is in every list,
    in some other list, or only in this one.

    Parameters
    ----------
    {recs}
    {user}
    {by}
    {common}

    {returns}
    """
    require_columns(recs, [*LIST_COLUMNS, by], "user_lists")
    title = title or f"Recommendations for user {user_id}"
    lists = _ordered_lists(_user_frame(recs, user_id, device_id, "user_lists"), by)
    if not lists:
        return _empty_figure(title, height=height, width=width)
    holders: dict[Hashable, int] = {}
    for items in lists.values():
        for item in items:
            holders[item] = holders.get(item, 0) + 1
    statuses = {"In every list": "#2ca02c", "In some other list": "#ff7f0e", "Only in this list": "#bbbbbb"}
    points: dict[str, dict[str, list[object]]] = {status: {"x": [], "y": [], "text": []} for status in statuses}
    for key, items in lists.items():
        for rank, item in enumerate(items, start=1):
            count = holders[item]
            status = "In every list" if count == len(lists) and len(lists) > 1 else "In some other list" if count > 1 else "Only in this list"
            points[status]["x"].append(_label(key, labels))
            points[status]["y"].append(rank)
            points[status]["text"].append(str(item))
    fig = go.Figure()
    for status, colour in statuses.items():
        fig.add_trace(
            go.Scatter(x=points[status]["x"], y=points[status]["y"], text=points[status]["text"], name=status,
                       mode="markers+text", textposition="middle right", marker={"size": 12, "color": colour, "symbol": "square"},
                       hovertemplate=f"%{{x}}<br>Rank %{{y}}: %{{text}}<br>{status}<extra></extra>")
        )
    depth = max(len(items) for items in lists.values())
    fig.update_yaxes(title_text="Rank", autorange="reversed", dtick=1 if depth <= 30 else None)
    fig.update_xaxes(title_text=_label(by, labels), type="category",
                     categoryorder="array", categoryarray=[_label(key, labels) for key in lists],
                     # Room right of the last list for its items' names, which sit beside the marks.
                     range=[-0.5, len(lists) - 0.5 + 0.6])
    return _layout(fig, title=title, height=height or max(400, 30 * depth + 150), width=width,
                   legend_title_text="Item is")


@_shared_docs
def rank_comparison(
    recs: pd.DataFrame, *, user_id: str, left: Hashable, right: Hashable, device_id: str | None = None, by: str = "rec_id",
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Slope chart of one user's two lists: shared items joined across ranks.

    Parameters
    ----------
    {recs}
    {user}
    left, right : hashable
        The two values of ``by`` (two rec sets, two models) to compare.
    {by}
    {common}

    {returns}
    """
    require_columns(recs, [*LIST_COLUMNS, by], "rank_comparison")
    left_name, right_name = _label(left, labels), _label(right, labels)
    lists = _ordered_lists(_user_frame(recs, user_id, device_id, "rank_comparison"), by)
    first, second = lists.get(left, []), lists.get(right, [])
    title = title or f"Ranks of user {user_id}'s items: {left_name} vs {right_name}"
    if not first and not second:
        return _empty_figure(title, height=height, width=width)
    rank_first = {item: rank for rank, item in enumerate(first, start=1)}
    rank_second = {item: rank for rank, item in enumerate(second, start=1)}
    shared = [item for item in first if item in rank_second]
    fig = go.Figure()
    line_x: list[object] = []
    line_y: list[object] = []
    for item in shared:
        line_x += [0, 1, None]
        line_y += [rank_first[item], rank_second[item], None]
    fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines", name="Same item", line={"color": "#1f77b4", "width": 2},
                             hoverinfo="skip"))
    for x, items, ranks, other, side, position in (
        (0, first, rank_first, rank_second, left_name, "middle left"),
        (1, second, rank_second, rank_first, right_name, "middle right"),
    ):
        in_both = [item in other for item in items]
        fig.add_trace(
            go.Scatter(
                x=[x] * len(items), y=[ranks[i] for i in items], text=[str(i) for i in items], mode="markers+text",
                textposition=position, name=side, showlegend=False,
                marker={"size": 11, "color": ["#1f77b4" if both else "#bbbbbb" for both in in_both]},
                customdata=[other.get(i, "not in the other list") for i in items],
                hovertemplate=f"{side}<br>%{{text}} at rank %{{y}}<br>Other list: %{{customdata}}<extra></extra>",
            )
        )
    depth = max(len(first), len(second))
    fig.update_xaxes(tickvals=[0, 1], ticktext=[left_name, right_name], range=[-0.6, 1.6], title_text=_label(by, labels),
                     showgrid=False)
    fig.update_yaxes(title_text="Rank", autorange="reversed", dtick=1 if depth <= 30 else None)
    return _layout(fig, title=title, height=height or max(400, 30 * depth + 150), width=width)


@_shared_docs
def long_tail(
    recs: pd.DataFrame, *, color: str | None = "recommendation_source", max_points: int = 500,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Long-tail curves: share of recommendations taken by the top x % of items.

    One line per value of ``color`` (:func:`amptools.metrics.long_tail`), with the
    diagonal of a perfectly even spread for reference.  A curve that rises steeply
    means a few items take most recommendations.

    Parameters
    ----------
    {recs}
    color : str or None, default "recommendation_source"
        One curve per value of this column; ``None`` for one curve.
    max_points : int, default 500
        Points kept per curve (the curve is monotone, so thinning loses nothing visible).
    {common}

    {returns}
    """
    by = [color] if color else []
    require_columns(recs, [*LIST_COLUMNS, *by], "long_tail")
    group_name = _label(color, labels) if color else "All"
    title = title or (f"Long tail of recommended items by {group_name.lower()}" if color else "Long tail of recommended items")
    curve = metrics.long_tail(recs, by=color)
    if curve.empty:
        return _empty_figure(title, height=height, width=width)
    fig = go.Figure()
    groups = _in_sorted_order(curve, color) if color else [("All lists", curve)]
    for key, group in groups:
        keep = np.unique(np.linspace(0, len(group) - 1, min(len(group), max_points)).round().astype(int))
        thin = group.iloc[keep]
        fig.add_trace(
            go.Scatter(x=np.r_[0.0, thin["item_fraction"]], y=np.r_[0.0, thin["cumulative_share"]], mode="lines",
                       name=_label(key, labels), customdata=np.r_[0, thin["item_rank"]],
                       hovertemplate="Top %{x:.1%} of items (%{customdata:,})<br>take %{y:.1%} of recommendations<extra>"
                       + _label(key, labels) + "</extra>")
        )
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Perfectly even", line={"dash": "dot", "color": "#999999"},
                             hoverinfo="skip"))
    fig.update_xaxes(title_text="Share of recommended items (most recommended first)", tickformat=".0%", range=[0, 1])
    fig.update_yaxes(title_text="Cumulative share of recommendations", tickformat=".0%", range=[0, 1.02])
    return _layout(fig, title=title, height=height, width=width, legend_title_text=group_name)


# ---------------------------------------------------------------------------- cohorts


def _membership(cohorts: pd.DataFrame, function: str) -> tuple[np.ndarray, list[Hashable], pd.DataFrame]:
    """Boolean users × cohorts matrix, cohort names, and the user keys (rows)."""
    require_columns(cohorts, list(ID_COLUMNS), function)
    if "cohort_id" in cohorts.columns:
        require_columns(cohorts, list(NEEDS_COHORTS), function)
        long = cohorts.dropna(subset=["cohort_id"])
        user_code = user_codes(long)
        first_row = np.unique(user_code, return_index=True)[1]
        cohort_code, cohort_names = pd.factorize(long["cohort_id"].astype(object))
        matrix = np.zeros((len(first_row), len(cohort_names)), dtype=bool)
        matrix[user_code, cohort_code] = True
        user_index = pd.MultiIndex.from_arrays([long["user_id"].to_numpy()[first_row], long["device_id"].to_numpy()[first_row]])
        keys = pd.DataFrame({"user_id": user_index.get_level_values(0), "device_id": user_index.get_level_values(1)})
        return matrix, list(cohort_names), keys
    cohort_columns = [c for c in cohorts.columns if c not in ID_COLUMNS and pd.api.types.is_bool_dtype(cohorts[c])]
    if not cohort_columns:
        raise ValueError(
            f"{function}(): missing column(s) 'cohort_id'. It expects the long cohorts table "
            f"('user_id', 'device_id', 'cohort_id') or the cohort matrix (bool columns, one per cohort); "
            f"the frame has {', '.join(map(repr, map(str, cohorts.columns)))}."
        )
    matrix = cohorts[cohort_columns].fillna(False).to_numpy(dtype=bool)
    return matrix, cohort_columns, cohorts[list(ID_COLUMNS)].reset_index(drop=True)


def _shared_counts(matrix: np.ndarray) -> np.ndarray:
    """``matrix.T @ matrix`` for a boolean users × cohorts matrix, exactly, without BLAS.

    Each cohort's column is packed into 64-bit words and pairs are counted with
    AND + popcount: no float matmul, whose BLAS threads spin on a busy machine.
    """
    n_users, n_cohorts = matrix.shape
    bits = np.packbits(np.ascontiguousarray(matrix.T), axis=1)  # cohorts × bytes
    bits = np.pad(bits, ((0, 0), (0, -bits.shape[1] % 8))).view(np.uint64)
    shared = np.empty((n_cohorts, n_cohorts), dtype=np.int64)
    for i in range(n_cohorts):
        shared[i] = np.bitwise_count(bits & bits[i]).sum(axis=1, dtype=np.int64)
    return shared


def _named(labels: Mapping[Hashable, str] | None, names: object, cohorts: pd.DataFrame) -> Mapping[Hashable, str] | None:
    """``labels`` with the cohorts' names added (what ``labels`` says wins)."""
    long = "cohort_id" in cohorts.columns
    if names is None and long and "cohort_name" in cohorts.columns:
        pairs = cohorts[["cohort_id", "cohort_name"]].dropna().drop_duplicates("cohort_id")
        names = dict(zip(pairs["cohort_id"].astype(str), pairs["cohort_name"].astype(str)))
    if names is None:
        return labels
    ids = cohorts["cohort_id"].dropna().astype(str).unique() if long else [c for c in cohorts.columns if c not in ID_COLUMNS]
    named: dict[Hashable, str] = {**(labels or {})}
    for cohort_id, label in cohort_labels(map(str, ids), names).items():
        named.setdefault(cohort_id, label)
    return named


def _cohort_order(matrix: np.ndarray, names: list[Hashable], max_cohorts: int | None) -> tuple[np.ndarray, list[Hashable], np.ndarray]:
    """Cohorts sorted largest first (ties by name), cut to ``max_cohorts``."""
    sizes = matrix.sum(axis=0)
    order = sorted(range(len(names)), key=lambda i: (-sizes[i], str(names[i])))
    if max_cohorts is not None:
        order = order[:max_cohorts]
    return matrix[:, order], [names[i] for i in order], sizes[order]


def _largest_cohorts(
    cohorts: pd.DataFrame, labels: Mapping[Hashable, str] | None, names: object, max_cohorts: int | None, function: str,
) -> tuple[Mapping[Hashable, str] | None, pd.DataFrame, np.ndarray, list[Hashable], np.ndarray]:
    """What every cohort figure starts from.

    Returns ``labels`` with the cohorts' names added, the user keys (one row per user
    with any cohort), and the users × cohorts matrix, the cohorts' ids and their sizes,
    cut to the ``max_cohorts`` largest cohorts, largest first.
    """
    named = _named(labels, names, cohorts)
    matrix, cohort_ids, users = _membership(cohorts, function)
    return (named, users, *_cohort_order(matrix, cohort_ids, max_cohorts))


@_shared_docs
@deprecated_arguments(top_n="max_cohorts")
def cohort_sizes(
    cohorts: pd.DataFrame, *, max_cohorts: int | None = None, names: object = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Bar chart of users per cohort, largest first, with the share of all users.

    Parameters
    ----------
    {cohorts}
    max_cohorts : int, optional
        Show only the largest ``max_cohorts`` cohorts (formerly ``top_n``).
    {names}
    {common}

    {returns}
    """
    labels, users, matrix, names, sizes = _largest_cohorts(cohorts, labels, names, max_cohorts, "cohort_sizes")
    n_users = len(users)
    shown = f"{len(names)} largest cohorts" if max_cohorts is not None and len(names) == max_cohorts else "Cohort sizes"
    title = title or f"{shown} ({n_users:,} users with any cohort)"
    if not names:
        return _empty_figure(title, height=height, width=width)
    fig = go.Figure(
        go.Bar(x=[_label(n, labels) for n in names], y=sizes, customdata=sizes / max(n_users, 1),
               hovertemplate="Cohort: %{x}<br>Users: %{y:,}<br>Share of users: %{customdata:.1%}<extra></extra>",
               marker_color="#1f77b4")
    )
    fig.update_xaxes(title_text=_label("cohort_id", labels), type="category")
    fig.update_yaxes(title_text="Users")
    return _layout(fig, title=title, height=height, width=width)


@_shared_docs
@deprecated_arguments(top_n="max_cohorts")
def cohort_heatmap(
    cohorts: pd.DataFrame, *, max_users: int = 500, max_cohorts: int | None = 50, seed: int = 0, names: object = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Membership heatmap: users (rows) × cohorts (columns), sorted so structure shows.

    Cohorts are ordered largest first; users are ordered by their membership pattern
    (lexicographically over that cohort order), so users sharing a pattern form
    blocks.  When there are more than ``max_users`` users a seeded random sample is
    drawn and the title says so.

    Parameters
    ----------
    {cohorts}
    max_users : int, default 500
        Row cap; more users are sampled (seeded).
    max_cohorts : int or None, default 50
        Show the largest ``max_cohorts`` cohorts (formerly ``top_n``).
    seed : int, default 0
        Seed of the user sample.
    {names}
    {common}

    {returns}
    """
    labels, users, matrix, names, _ = _largest_cohorts(cohorts, labels, names, max_cohorts, "cohort_heatmap")
    n_users = len(users)
    sampled = n_users > max_users
    title = title or (f"Cohort membership of a random sample of {max_users:,} of {n_users:,} users (seed {seed})"
                      if sampled else f"Cohort membership of {n_users:,} users")
    if not n_users or not names:
        return _empty_figure(title, height=height, width=width)
    rows = np.sort(np.random.default_rng(seed).choice(n_users, size=max_users, replace=False)) if sampled else np.arange(n_users)
    sample = matrix[rows]
    # lexsort's last key is primary: the largest cohort first, members before non-members
    order = np.lexsort([~sample[:, j] for j in range(sample.shape[1] - 1, -1, -1)])
    sample = sample[order]
    row_users = users.iloc[rows[order]]
    user_labels = [str(u) if isinstance(u, str) and u else str(d) for u, d in zip(row_users["user_id"], row_users["device_id"])]
    fig = go.Figure(
        go.Heatmap(z=sample.astype(np.int8), x=[_label(n, labels) for n in names], y=list(range(len(rows))),
                   customdata=np.repeat(np.array(user_labels, dtype=object)[:, None], len(names), axis=1),
                   colorscale=[[0, "#f4f4f4"], [1, "#1f77b4"]], zmin=0, zmax=1, showscale=False, xgap=1,
                   hovertemplate="User: %{customdata}<br>Cohort: %{x}<br>Member: %{z}<extra></extra>")
    )
    fig.update_xaxes(title_text=_label("cohort_id", labels), type="category", side="top", tickangle=-45)
    fig.update_yaxes(title_text="Users (sorted by membership pattern)", showticklabels=False, autorange="reversed")
    # The cohort names stand slanted above the grid: the top margin makes room for the
    # longest, so they never run into the title.
    longest = max(len(_label(n, labels)) for n in names)
    return _layout(fig, title=title, height=height or 600, width=width,
                   margin={"t": 100 + 5 * min(longest, 40)}, title_y=0.97, title_yanchor="top")


@_shared_docs
@deprecated_arguments(top_n="max_cohorts")
def cohort_overlap(
    cohorts: pd.DataFrame, *, max_cohorts: int | None = 30, names: object = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Heatmap of the Jaccard similarity between cohorts' member sets.

    Parameters
    ----------
    {cohorts}
    max_cohorts : int or None, default 30
        Show the largest ``max_cohorts`` cohorts (formerly ``top_n``).
    {names}
    {common}

    {returns}
    """
    labels, _, matrix, names, sizes = _largest_cohorts(cohorts, labels, names, max_cohorts, "cohort_overlap")
    title = title or ("Overlap between cohorts (Jaccard similarity of members)" if max_cohorts is None or len(names) < max_cohorts
                      else f"Overlap between the {len(names)} largest cohorts (Jaccard similarity of members)")
    if not names:
        return _empty_figure(title, height=height, width=width)
    shared = _shared_counts(matrix)
    union = sizes[:, None] + sizes[None, :] - shared
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, shared / union, np.nan)
    display = [_label(n, labels) for n in names]
    fig = go.Figure(
        go.Heatmap(z=jaccard, x=display, y=display, customdata=shared, zmin=0, zmax=1, colorscale="Blues",
                   text=np.vectorize(lambda v: f"{v:.2f}")(np.nan_to_num(jaccard)), texttemplate="%{text}" if len(names) <= 15 else None,
                   colorbar={"title": {"text": "Jaccard"}},
                   hovertemplate="Cohort: %{y}<br>Cohort: %{x}<br>Jaccard: %{z:.3f}<br>Users in both: %{customdata:,}<extra></extra>")
    )
    fig.update_xaxes(title_text=_label("cohort_id", labels), type="category")
    fig.update_yaxes(title_text=_label("cohort_id", labels), type="category", autorange="reversed")
    return _layout(fig, title=title, height=height, width=width)


@_shared_docs
@deprecated_arguments(top_n="max_intersections")
def cohort_upset(
    cohorts: pd.DataFrame, *, max_intersections: int = 15, max_cohorts: int = 10, names: object = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """UpSet-style chart of cohort intersections.

    Intersections are exclusive: a user counts in the one combination that is
    exactly the set of (shown) cohorts they belong to.  Top: intersection sizes;
    below: a dot matrix with the member cohorts joined by a line; left: cohort
    sizes.  Only the ``max_cohorts`` largest cohorts and the ``max_intersections`` largest
    intersections are shown (users in none of the shown cohorts are not counted).

    Parameters
    ----------
    {cohorts}
    max_intersections : int, default 15
        Intersections shown, largest first (formerly ``top_n``).
    max_cohorts : int, default 10
        Cohorts considered, largest first.
    {names}
    {common}

    {returns}
    """
    labels, _, matrix, names, sizes = _largest_cohorts(cohorts, labels, names, max_cohorts, "cohort_upset")
    title = title or f"Top {max_intersections} cohort intersections" + (f" among the {len(names)} largest cohorts" if len(names) == max_cohorts else "")
    matrix = matrix[matrix.any(axis=1)]
    if not len(matrix):
        return _empty_figure(title, height=height, width=width)
    weights = (1 << np.arange(matrix.shape[1], dtype=np.int64))
    patterns, counts = np.unique(matrix.astype(np.int64) @ weights, return_counts=True)
    order = np.lexsort((patterns, -counts))[:max_intersections]
    patterns, counts = patterns[order], counts[order]
    members = (patterns[:, None] >> np.arange(len(names))[None, :]) & 1 == 1  # intersections × cohorts
    display = [_label(n, labels) for n in names]
    columns = list(range(len(patterns)))
    fig = make_subplots(rows=2, cols=2, shared_xaxes="columns", shared_yaxes="rows", row_heights=[0.6, 0.4],
                        column_widths=[0.2, 0.8], horizontal_spacing=0.01, vertical_spacing=0.02,
                        specs=[[None, {"type": "xy"}], [{"type": "xy"}, {"type": "xy"}]])
    member_lists = ["<br>".join(d for d, m in zip(display, row) if m) for row in members]
    fig.add_trace(go.Bar(x=columns, y=counts, name="Intersection size", marker_color="#333333", showlegend=False,
                         customdata=member_lists, text=counts, textposition="outside",
                         hovertemplate="Users in exactly these cohorts: %{y:,}<br>%{customdata}<extra></extra>"), row=1, col=2)
    y_positions = np.arange(len(names))
    grid_x, grid_y = np.meshgrid(columns, y_positions, indexing="ij")
    fig.add_trace(go.Scatter(x=grid_x.ravel(), y=grid_y.ravel(), mode="markers", showlegend=False, hoverinfo="skip",
                             marker={"size": 11, "color": "#dddddd"}), row=2, col=2)
    line_x: list[object] = []
    line_y: list[object] = []
    dot_x, dot_y = [], []
    for column, row in zip(columns, members):
        ys = y_positions[row]
        dot_x += [column] * len(ys)
        dot_y += list(ys)
        if len(ys) > 1:
            line_x += [column, column, None]
            line_y += [int(ys.min()), int(ys.max()), None]
    fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines", line={"color": "#333333", "width": 3}, showlegend=False,
                             hoverinfo="skip"), row=2, col=2)
    fig.add_trace(go.Scatter(x=dot_x, y=dot_y, mode="markers", marker={"size": 11, "color": "#333333"}, showlegend=False,
                             name="Member", hoverinfo="skip"), row=2, col=2)
    fig.add_trace(go.Bar(x=sizes, y=y_positions, orientation="h", marker_color="#1f77b4", showlegend=False, name="Cohort size",
                         customdata=display, hovertemplate="%{customdata}: %{x:,} users<extra></extra>"), row=2, col=1)
    fig.update_xaxes(autorange="reversed", title_text="Users in cohort", row=2, col=1)
    fig.update_yaxes(tickvals=y_positions, ticktext=display, autorange="reversed", row=2, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=2, col=2)
    fig.update_xaxes(showticklabels=False, showgrid=False, row=2, col=2)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(title_text="Users in exactly these cohorts", row=1, col=2)
    return _layout(fig, title=title, height=height or 600 + 10 * len(names), width=width, bargap=0.3)


# ---------------------------------------------------------------------------- computations & propensities


def _attach_groups(values: pd.DataFrame, groups: pd.DataFrame | None, color: str | None, max_groups: int,
                   function: str) -> tuple[pd.DataFrame, str | None, int]:
    """Add a ``_group`` column (one row per user × group); returns groups left out."""
    frame = values.copy()
    if groups is None:
        frame["_group"] = "All users"
        return frame, None, 0
    if color is None:
        color = "cohort_id" if "cohort_id" in groups.columns else "is_control" if "is_control" in groups.columns else None
        if color is None:
            raise ValueError(f"{function}(): pass color= naming the column of `groups` to split by "
                             f"(e.g. 'cohort_id' or 'is_control'); `groups` has {list(map(str, groups.columns))}")
    require_columns(groups, [*ID_COLUMNS, color], function)
    # an inner join on (user_id, device_id) done on integer codes: both frames' users
    # are coded together, memberships de-duplicated on (user, group) codes
    n_values = len(frame)
    keys = pd.concat([frame[list(ID_COLUMNS)], groups[list(ID_COLUMNS)]], ignore_index=True)
    user = user_codes(keys)
    value_user, member_user = user[:n_values], user[n_values:]
    group_code, group_values = pd.factorize(groups[color], use_na_sentinel=False)
    member_key = member_user * max(len(group_values), 1) + group_code
    first = ~pd.Series(member_key).duplicated().to_numpy()
    member_user, group_code = member_user[first], group_code[first]
    order = np.argsort(member_user, kind="stable")
    sorted_user = member_user[order]
    start = np.searchsorted(sorted_user, value_user, side="left")
    n_matches = np.searchsorted(sorted_user, value_user, side="right") - start
    value_row = np.repeat(np.arange(n_values), n_matches)
    offsets = np.arange(len(value_row)) - np.repeat(np.cumsum(n_matches) - n_matches, n_matches)
    member = order[np.repeat(start, n_matches) + offsets]
    frame = frame.iloc[value_row].reset_index(drop=True)
    member_group = group_code[member]
    sizes = np.bincount(member_group, minlength=len(group_values))
    sizes[np.asarray(pd.isna(pd.Index(group_values)), dtype=bool)] = 0  # a missing group is no group
    first_seen = np.full(len(group_values), len(member_group), dtype=np.int64)
    first_seen[member_group[::-1]] = np.arange(len(member_group) - 1, -1, -1)
    by_size = np.lexsort((first_seen, -sizes))  # largest first, ties in order of first appearance
    n_present = int((sizes > 0).sum())
    kept = by_size[: min(max_groups, n_present)]
    keep = np.isin(member_group, kept)
    frame = frame[keep].reset_index(drop=True)
    frame["_group"] = np.asarray(pd.Index(group_values).astype(object))[member_group[keep]]
    return frame, color, max(0, n_present - max_groups)


def _group_order(frame: pd.DataFrame) -> list[Hashable]:
    return _sorted_values(list(pd.unique(frame["_group"])))


def _tukey(values: np.ndarray) -> dict[str, float]:
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    inside_low = values[values >= q1 - 1.5 * iqr]
    inside_high = values[values <= q3 + 1.5 * iqr]
    return {"q1": q1, "median": median, "q3": q3, "lowerfence": inside_low.min(), "upperfence": inside_high.max(),
            "mean": values.mean()}


def _density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density on ``grid`` (Scott's bandwidth) via binning + convolution: O(n + grid)."""
    if len(values) < 2 or np.ptp(values) == 0:
        return np.where(np.isclose(grid, values.mean() if len(values) else 0.0), 1.0, 0.0)
    bandwidth = 1.06 * values.std() * len(values) ** (-1 / 5)
    step = grid[1] - grid[0]
    counts, _ = np.histogram(values, bins=len(grid), range=(grid[0] - step / 2, grid[-1] + step / 2))
    half = int(np.ceil(4 * bandwidth / step))
    offsets = np.arange(-half, half + 1) * step
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    smooth: np.ndarray = np.convolve(counts, kernel, mode="full")[half:half + len(grid)]
    density: np.ndarray = smooth / (smooth.sum() * step)
    return density


def _distribution_traces(frame: pd.DataFrame, kind: Kind, nbins: int, value_name: str, group_name: str,
                         labels: Mapping[Hashable, str] | None, *, show_legend: bool, bins: np.ndarray | None = None) -> list[go.BaseTraceType]:
    """Aggregated traces for the ``value`` column split by ``_group``."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    traces: list[go.BaseTraceType] = []
    finite = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    if finite.empty:
        return traces
    values_all = finite["value"].to_numpy(dtype=float)
    edges = bins if bins is not None else np.histogram_bin_edges(values_all, bins=nbins)
    group_code, group_values = pd.factorize(finite["_group"], use_na_sentinel=False)
    by_group = np.argsort(group_code, kind="stable")
    bounds = np.searchsorted(group_code[by_group], np.arange(len(group_values) + 1))
    code_of = {(_MISSING if pd.isna(value) else value): code for code, value in enumerate(group_values)}
    for position, key in enumerate(_group_order(finite)):
        code = code_of.get(_MISSING if pd.isna(key) else key)
        rows = by_group[bounds[code]:bounds[code + 1]] if code is not None else np.zeros(0, dtype=np.int64)
        values = values_all[np.sort(rows)]
        name = _label(key, labels)
        colour = palette[position % len(palette)]
        common = {"name": name, "legendgroup": name, "showlegend": show_legend}
        if kind == "histogram":
            counts, _ = np.histogram(values, bins=edges)
            traces.append(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts / len(values), width=np.diff(edges),
                                 customdata=np.c_[edges[:-1], edges[1:], counts], marker_color=colour, opacity=0.6,
                                 hovertemplate=f"{group_name}: {name}<br>{value_name}: %{{customdata[0]:.4g}} to %{{customdata[1]:.4g}}"
                                 "<br>Share of users: %{y:.1%}<br>Users: %{customdata[2]:,}<extra></extra>", **common))
        elif kind == "box":
            stats = _tukey(values)
            traces.append(go.Box(x=[name], q1=[stats["q1"]], median=[stats["median"]], q3=[stats["q3"]],
                                 lowerfence=[stats["lowerfence"]], upperfence=[stats["upperfence"]], mean=[stats["mean"]],
                                 marker_color=colour, boxpoints=False, **common))
        elif kind == "violin":
            # each violin spans its own group's range, as plotly's own violins do
            own = np.linspace(values.min(), values.max(), 200) if np.ptp(values) > 0 else np.array([values.min()] * 2)
            density = _density(values, own) if np.ptp(values) > 0 else np.ones(2)
            half_width = 0.4 * density / density.max() if density.max() > 0 else density
            traces.append(go.Scatter(x=np.r_[position - half_width, (position + half_width)[::-1]], y=np.r_[own, own[::-1]],
                                     fill="toself", mode="lines", line={"color": colour, "width": 1}, hoverinfo="skip", **common))
            median = float(np.median(values))
            traces.append(go.Scatter(x=[position], y=[median], mode="markers", marker={"color": "white", "line": {"color": colour, "width": 2}, "size": 9},
                                     name=name, legendgroup=name, showlegend=False,
                                     hovertemplate=f"{group_name}: {name}<br>Median {value_name}: %{{y:.4g}}<br>Users: {len(values):,}<extra></extra>"))
        else:
            raise ValueError(f"kind must be 'histogram', 'box' or 'violin', got {kind!r}")
    return traces


def _style_distribution(fig: go.Figure, kind: Kind, value_name: str, group_name: str, groups: list[str], **where: int) -> None:
    if kind == "histogram":
        fig.update_xaxes(title_text=value_name, **where)
        fig.update_yaxes(title_text="Share of users", tickformat=".0%", **where)
    elif kind == "box":
        fig.update_xaxes(title_text=group_name, type="category", **where)
        fig.update_yaxes(title_text=value_name, **where)
    else:
        fig.update_xaxes(title_text=group_name, tickvals=list(range(len(groups))), ticktext=groups, **where)
        fig.update_yaxes(title_text=value_name, **where)


def _split_note(group_name: str | None, left_out: int, max_groups: int) -> str:
    if group_name is None:
        return ""
    note = f" by {group_name.lower()}"
    if left_out:
        note += f" ({max_groups} largest of {max_groups + left_out} shown)"
    return note


@_shared_docs
def computation_distribution(
    computations: pd.DataFrame, *, computation: str,
    groups: pd.DataFrame | None = None, color: str | None = None, max_groups: int = 10,
    kind: Kind = "histogram", nbins: int = 40,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Distribution of one computed property, split by cohort or by control/treatment.

    Parameters
    ----------
    computations : DataFrame
        The computations table from ``amptools.tables.computations``; values that
        did not parse (NaN) are left out.
    computation : str
        The computed property to show.
    {groups}
    {kind}
    {common}

    {returns}
    """
    require_columns(computations, list(NEEDS_COMPUTATIONS), "computation_distribution")
    values = computations.loc[computations["computation"] == computation, [*ID_COLUMNS, "value"]]
    frame, color, left_out = _attach_groups(values, groups, color, max_groups, "computation_distribution")
    group_name = _label(color, labels) if color else "Users"
    value_name = _label(computation, labels)
    title = title or f"Distribution of {value_name}{_split_note(_label(color, labels) if color else None, left_out, max_groups)}"
    traces = _distribution_traces(frame, kind, nbins, value_name, group_name, labels, show_legend=True)
    if not traces:
        return _empty_figure(title, height=height, width=width)
    fig = go.Figure(traces)
    names = [_label(k, labels) for k in _group_order(frame[np.isfinite(frame["value"].astype(float))])]
    _style_distribution(fig, kind, value_name, group_name, names)
    return _layout(fig, title=title, height=height, width=width, barmode="overlay", legend_title_text=group_name)


@_shared_docs
def propensity_distribution(
    propensities: pd.DataFrame, *, prediction_id: str | Sequence[str] | None = None,
    groups: pd.DataFrame | None = None, color: str | None = None, max_groups: int = 10,
    kind: Kind = "histogram", nbins: int = 40,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Propensity distributions by cohort (or control/treatment), one panel per prediction.

    Scores (0–1) and percentiles (0–100) get panels of their own, and histogram bins
    span the whole scale, so panels and groups compare at a glance.

    Parameters
    ----------
    propensities : DataFrame
        The propensities table from ``amptools.tables.propensities``.
    prediction_id : str or list of str, optional
        Predictions to show (default: all, one panel each).
    {groups}
    {kind}
    {common}

    {returns}
    """
    require_columns(propensities, list(NEEDS_PROPENSITIES), "propensity_distribution")
    wanted = [prediction_id] if isinstance(prediction_id, str) else prediction_id
    data = propensities if wanted is None else propensities[propensities["prediction_id"].isin(list(wanted))]
    frame, color, left_out = _attach_groups(data[[*ID_COLUMNS, "prediction_id", "propensity_type", "value"]], groups, color,
                                            max_groups, "propensity_distribution")
    group_name = _label(color, labels) if color else "Users"
    title = title or f"Propensity distribution{_split_note(_label(color, labels) if color else None, left_out, max_groups)}"
    panels = [(p, t) for (p, t), _ in frame.groupby(["prediction_id", "propensity_type"], observed=True, sort=True)]
    if not panels:
        return _empty_figure(title, height=height, width=width)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{_label(p, labels)}" for p, _ in panels])
    for column, (prediction, propensity_type) in enumerate(panels, start=1):
        sub = frame[(frame["prediction_id"] == prediction) & (frame["propensity_type"] == propensity_type)]
        value_name = "Percentile (0–100)" if str(propensity_type) == "pct" else "Propensity score (0–1)"
        bounds = (0.0, 100.0) if str(propensity_type) == "pct" else (0.0, 1.0)
        bins = np.linspace(*bounds, nbins + 1) if kind == "histogram" else None
        for trace in _distribution_traces(sub, kind, nbins, value_name, group_name, labels, show_legend=column == 1, bins=bins):
            fig.add_trace(trace, row=1, col=column)
        names = [_label(k, labels) for k in _group_order(sub)]
        _style_distribution(fig, kind, value_name, group_name, names, row=1, col=column)
    return _layout(fig, title=title, height=height, width=width, barmode="overlay", legend_title_text=group_name)


@_shared_docs
def computation_scatter(
    computations: pd.DataFrame, *, x: str, y: str,
    groups: pd.DataFrame | None = None, color: str | None = None, max_groups: int = 10,
    max_points: int = 10_000, seed: int = 0,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Scatter of two computed properties per user, coloured by cohort (WebGL).

    Users with either value missing are left out.  A user in several groups is
    drawn once per group.  Above ``max_points`` points a seeded random sample is
    drawn and the title says so.

    Parameters
    ----------
    computations : DataFrame
        The computations table from ``amptools.tables.computations``.
    x, y : str
        The two computed properties.
    {groups}
    max_points : int, default 10000
        Point cap.
    seed : int, default 0
        Seed of the sample.
    {common}

    {returns}
    """
    require_columns(computations, list(NEEDS_COMPUTATIONS), "computation_scatter")
    pair = computations[computations["computation"].isin([x, y])]
    wide = pair.pivot_table(index=list(ID_COLUMNS), columns="computation", values="value", aggfunc="first", observed=True)
    wide = wide.reindex(columns=[x, y]).dropna().reset_index()
    wide.columns = [*ID_COLUMNS, "_x", "_y"]
    frame, color, left_out = _attach_groups(wide, groups, color, max_groups, "computation_scatter")
    x_name, y_name = _label(x, labels), _label(y, labels)
    group_name = _label(color, labels) if color else "Users"
    n_points = len(frame)
    sampled = n_points > max_points
    if sampled:
        frame = frame.iloc[np.sort(np.random.default_rng(seed).choice(n_points, size=max_points, replace=False))]
    title = title or (f"{y_name} vs {x_name}{_split_note(_label(color, labels) if color else None, left_out, max_groups)}"
                      + (f" — random sample of {max_points:,} of {n_points:,} points (seed {seed})" if sampled else ""))
    if frame.empty:
        return _empty_figure(title, height=height, width=width)
    fig = go.Figure()
    for key in _group_order(frame):
        sub = frame[frame["_group"] == key]
        name = _label(key, labels)
        ids = np.where(sub["user_id"].fillna("").astype(str) != "", sub["user_id"].fillna("").astype(str), sub["device_id"].astype(str))
        fig.add_trace(go.Scattergl(x=sub["_x"].to_numpy(), y=sub["_y"].to_numpy(), mode="markers", name=name,
                                   marker={"size": 4, "opacity": 0.6}, text=ids,
                                   hovertemplate=f"User: %{{text}}<br>{x_name}: %{{x:.4g}}<br>{y_name}: %{{y:.4g}}<extra>{name}</extra>"))
    fig.update_xaxes(title_text=x_name)
    fig.update_yaxes(title_text=y_name)
    return _layout(fig, title=title, height=height, width=width, legend_title_text=group_name)


# ---------------------------------------------------------------------------- a Braze send's load

#: The columns :func:`call_plan` needs (``amptools.braze.call_plan`` gives them all).
NEEDS_CALL_PLAN: tuple[str, ...] = ("minute", "api_calls", "other_calls", "cache_hits", "throttled",
                                    "exposure_events")


@_shared_docs
def call_plan(
    plan: pd.DataFrame, *, limit: int | None = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """Profile API calls per minute of a Braze send, against the org limit.

    Stacked bars: the send's calls (red in minutes over the limit) and the org's other
    calls; a dashed line marks the limit. Hovering a minute shows its cache hits and
    the exposure events it logs.  The title says how many minutes are over the limit.

    Parameters
    ----------
    plan : DataFrame
        The minute-by-minute plan from ``amptools.braze.call_plan``.
    limit : int, optional
        The org's requests a minute; ``plan.attrs["limit"]`` (else 600) by default.
    {common}

    {returns}
    """
    require_columns(plan, list(NEEDS_CALL_PLAN), "call_plan")
    limit = int(limit if limit is not None else plan.attrs.get("limit", ORG_REQUESTS_PER_MINUTE))
    throttled = plan["throttled"].to_numpy(dtype=bool)
    over = int(throttled.sum())
    minutes = len(plan)
    if title is None:
        verdict = (f"{over:,} of {minutes:,} minutes over the limit of {limit:,}" if over
                   else f"stays under the limit of {limit:,}")
        rate = plan.attrs.get("recommended_rate")
        advice = f" — a Braze rate limit of {rate:,} messages a minute keeps it under" if over and rate else ""
        title = f"Profile API calls per minute during the send: {verdict}{advice}"
    if plan.empty:
        return _empty_figure(title, height=height, width=width)
    words = {"api_calls": "The send's calls", "other_calls": "Other calls", "minute": "Minute of the send",
             **(labels or {})}
    send_name, other_name, minute_name = (_label(key, words) for key in ("api_calls", "other_calls", "minute"))
    x = plan["minute"].to_numpy()
    extra = np.column_stack([plan["cache_hits"].to_numpy(), plan["exposure_events"].to_numpy()])
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=x, y=plan["api_calls"].to_numpy(), name=send_name, customdata=extra,
        marker={"color": np.where(throttled, "#d62728", "#1f77b4")},
        hovertemplate=(f"{minute_name} %{{x}}<br>{send_name}: %{{y:,}}<br>Cache hits: %{{customdata[0]:,}}"
                       "<br>Exposure events: %{customdata[1]:,}<extra></extra>"),
    ))
    fig.add_trace(go.Bar(x=x, y=plan["other_calls"].to_numpy(), name=other_name, marker={"color": "#b0b0b0"},
                         hovertemplate=f"{minute_name} %{{x}}<br>{other_name}: %{{y:,}}<extra></extra>"))
    fig.add_hline(y=limit, line={"dash": "dash", "color": "#d62728"}, annotation_text=f"limit {limit:,}/min",
                  annotation_position="top left")
    fig.update_xaxes(title_text=minute_name)
    fig.update_yaxes(title_text="Requests per minute")
    return _layout(fig, title=title, height=height, width=width, barmode="stack", bargap=0.05)


# ---------------------------------------------------------------------------- over time (snapshots)

#: The columns :func:`drift_over_time` needs (``amptools.snapshots.drift_history`` gives them all).
NEEDS_DRIFT_HISTORY: tuple[str, ...] = ("before", "after", "taken_at_after", "n_users_compared",
                                        "share_changed", "mean_jaccard", "mean_rbo")
#: The columns :func:`item_churn` and :func:`rank_shift` need (``amptools.metrics.item_churn``).
NEEDS_ITEM_CHURN: tuple[str, ...] = ("item", "n_entered", "n_left", "n_stayed", "mean_rank_before",
                                     "mean_rank_after")
#: The columns :func:`cohort_flow` needs (``amptools.tables.cohort_changes``).
NEEDS_COHORT_CHANGES: tuple[str, ...] = ("user_id", "device_id", "cohort_id", "change")

_DRIFT_METRICS = {"rbo": ("mean_rbo", "Mean rank-biased overlap with the snapshot before"),
                  "jaccard": ("mean_jaccard", "Mean Jaccard similarity with the snapshot before"),
                  "share_changed": ("share_changed", "Share of users whose list changed")}
_ENTERED, _LEFT, _STAYED = "#2ca02c", "#d62728", "#9ecae1"


@_shared_docs
def drift_over_time(
    history: pd.DataFrame, *, metric: Literal["rbo", "jaccard", "share_changed"] = "rbo", color: str = "rec_id",
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """How much each set's lists changed from one snapshot to the next, across a store.

    One line per value of ``color``; each point is a snapshot compared with the one
    before it (the hover gives both, and how many users were compared).  A drop shows
    a retrain; a flat line at 1.0 means nothing changed.

    Parameters
    ----------
    history : DataFrame
        ``amptools.snapshots.drift_history(store)``: one row per pair of consecutive
        snapshots and set.
    metric : {{"rbo", "jaccard", "share_changed"}}, default "rbo"
        The mean RBO or Jaccard similarity of the users' lists, or the share of users
        whose list changed.
    color : str, default "rec_id"
        One line per value of this column (the ``by`` of the history).
    {common}

    {returns}
    """
    require_columns(history, [*NEEDS_DRIFT_HISTORY, color], "drift_over_time")
    if metric not in _DRIFT_METRICS:
        raise ValueError(f"metric must be 'rbo', 'jaccard' or 'share_changed', got {metric!r}")
    column, axis_title = _DRIFT_METRICS[metric]
    group_name = _label(color, labels)
    title = title or f"{axis_title.split(' with ')[0]} from snapshot to snapshot, by {group_name.lower()}"
    if history.empty:
        return _empty_figure(title, height=height, width=width)
    fig = go.Figure()
    for key, group in _in_sorted_order(history.sort_values("taken_at_after", kind="stable"), color):
        name = _label(key, labels)
        extra = np.column_stack([group["before"].astype(str), group["after"].astype(str),
                                 group["n_users_compared"].to_numpy()])
        fig.add_trace(go.Scatter(
            x=group["taken_at_after"], y=group[column], mode="lines+markers", name=name, customdata=extra,
            hovertemplate=(f"{group_name}: {name}<br>%{{x|%Y-%m-%d %H:%M}}<br>{axis_title}: %{{y:.3f}}"
                           "<br>%{customdata[0]} → %{customdata[1]}<br>Users compared: %{customdata[2]:,}<extra></extra>"),
        ))
    fig.update_xaxes(title_text="Snapshot taken (UTC)")
    values = history[column].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    # Similarities sit near 1 between snapshots: the axis starts a little below the lowest point.
    low = 0.0 if metric == "share_changed" or not len(values) else max(0.0, float(values.min()) - 0.05)
    high = max(1.0, float(values.max()) if len(values) else 1.0) if metric != "share_changed" else None
    fig.update_yaxes(title_text=axis_title, range=[low, high + 0.01] if high is not None else None,
                     rangemode="tozero" if metric == "share_changed" else None,
                     tickformat=".0%" if metric == "share_changed" else None)
    return _layout(fig, title=title, height=height, width=width, legend_title_text=group_name)


def _one_set(churn: pd.DataFrame, by: str, group: Hashable | None, labels: Mapping[Hashable, str] | None,
             function: str) -> tuple[pd.DataFrame, str]:
    """The churn rows of one value of ``by`` (the first, sorted, by default), and " in <it>" for a title."""
    require_columns(churn, NEEDS_ITEM_CHURN, function)
    if by not in churn.columns:
        return churn, ""
    values = _sorted_values(list(pd.unique(churn[by].dropna())))
    if group is None:
        group = values[0] if values else None
    elif group not in values:
        raise ValueError(f"{function}(): {by} {group!r} is not in the table; it holds "
                         f"{', '.join(map(repr, map(str, values))) or 'nothing'}.")
    return churn[churn[by] == group], f" in {_label(group, labels)}" if group is not None else ""


@_shared_docs
def item_churn(
    churn: pd.DataFrame, *, by: str = "rec_id", group: Hashable | None = None, top_n: int = 10,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """The items that entered and left the users' lists of one set, by how many users.

    Diverging bars, most churn first: to the right the users whose list gained the
    item, to the left those whose list lost it; the hover adds those who kept it.

    Parameters
    ----------
    {churn}
    top_n : int, default 10
        Items shown: those that most users gained or lost.
    {common}

    {returns}
    """
    rows, shown = _one_set(churn, by, group, labels, "item_churn")
    title = title or f"Items that entered and left the lists{shown} (top {top_n} by users)"
    moved = rows[(rows["n_entered"] > 0) | (rows["n_left"] > 0)]
    if moved.empty:
        return _empty_figure(title, height=height, width=width)
    top = moved.assign(_churn=moved["n_entered"] + moved["n_left"]).sort_values(
        ["_churn", "item"], ascending=[False, True], kind="stable").head(top_n).iloc[::-1]
    names = [str(item) for item in top["item"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=top["n_entered"], y=names, orientation="h", name="Entered", marker_color=_ENTERED,
                         customdata=top["n_stayed"],
                         hovertemplate="%{y}: entered %{x:,} users' lists<br>kept by %{customdata:,}<extra></extra>"))
    fig.add_trace(go.Bar(x=-top["n_left"], y=names, orientation="h", name="Left", marker_color=_LEFT,
                         customdata=np.column_stack([top["n_left"], top["n_stayed"]]),
                         hovertemplate="%{y}: left %{customdata[0]:,} users' lists<br>kept by %{customdata[1]:,}<extra></extra>"))
    largest = int(max(top["n_entered"].max(), top["n_left"].max()))
    ticks = np.unique(np.round(np.linspace(-largest, largest, 9)).astype(int))
    fig.update_xaxes(title_text="Users whose list lost (left) or gained (right) the item",
                     tickvals=ticks, ticktext=[f"{abs(int(t)):,}" for t in ticks])
    fig.update_yaxes(title_text=_label("item", labels))
    return _layout(fig, title=title, height=height or max(400, 28 * len(names) + 150), width=width,
                   barmode="relative", legend_title_text="")


@_shared_docs
def rank_shift(
    churn: pd.DataFrame, *, by: str = "rec_id", group: Hashable | None = None, top_n: int = 15,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """How far items moved in one set's lists: mean rank before and after, item by item.

    For the items most users kept in both snapshots, a dumbbell from the mean rank
    before to the mean rank after (among those users); green when the item moved up,
    red when it moved down.

    Parameters
    ----------
    {churn}
    top_n : int, default 15
        Items shown: those most users kept in both.
    {common}

    {returns}
    """
    rows, shown = _one_set(churn, by, group, labels, "rank_shift")
    title = title or f"How far items moved{shown}: mean rank before and after (top {top_n} kept items)"
    kept = rows[rows["n_stayed"] > 0]
    if kept.empty:
        return _empty_figure(title, height=height, width=width)
    top = kept.sort_values(["n_stayed", "item"], ascending=[False, True], kind="stable").head(top_n)
    top = top.sort_values("mean_rank_after", kind="stable").iloc[::-1]
    names = [str(item) for item in top["item"]]
    before, after = top["mean_rank_before"].to_numpy(), top["mean_rank_after"].to_numpy()
    fig = go.Figure()
    for direction, colour, mask in (("Moved up", _ENTERED, after < before), ("Moved down", _LEFT, after > before),
                                    ("Same rank", "#999999", after == before)):
        line_x: list[object] = []
        line_y: list[object] = []
        for name, start, end in zip(np.array(names, dtype=object)[mask], before[mask], after[mask]):
            line_x += [start, end, None]
            line_y += [name, name, None]
        fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines", line={"color": colour, "width": 3},
                                 name=direction, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=before, y=names, mode="markers", name="Before", marker={"color": "#bbbbbb", "size": 10},
                             customdata=top["n_stayed"],
                             hovertemplate="%{y}: mean rank %{x:.2f} before<br>users: %{customdata:,}<extra></extra>"))
    fig.add_trace(go.Scatter(x=after, y=names, mode="markers", name="After", marker={"color": "#1f77b4", "size": 10},
                             customdata=top["n_stayed"],
                             hovertemplate="%{y}: mean rank %{x:.2f} after<br>users: %{customdata:,}<extra></extra>"))
    fig.update_xaxes(title_text="Mean rank among the users who kept the item (1 is the top)", autorange="reversed")
    fig.update_yaxes(title_text=_label("item", labels))
    return _layout(fig, title=title, height=height or max(400, 28 * len(names) + 150), width=width,
                   legend_title_text="")


@_shared_docs
def cohort_flow(
    changes: pd.DataFrame, *, max_cohorts: int | None = 8, names: object = None,
    labels: Mapping[Hashable, str] | None = None, title: str | None = None, height: int | None = None, width: int | None = None,
) -> go.Figure:
    """A Sankey of cohort membership between two snapshots: who stayed, left and joined.

    Left: each cohort's members before, and "Not in the cohort"; right: the same after.
    A cohort's band to itself is the users who stayed; to "Left the cohort", those who
    left; from "Not in the cohort", those who joined.

    Parameters
    ----------
    changes : DataFrame
        ``amptools.tables.cohort_changes(before, after)``.
    max_cohorts : int or None, default 8
        Show the cohorts with the most members before or after (the title says so when
        some are left out).
    {names}
    {common}

    {returns}
    """
    require_columns(changes, NEEDS_COHORT_CHANGES, "cohort_flow")
    named = _named(labels, names, changes)
    counts = changes.groupby(["cohort_id", "change"], observed=True).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["joined", "left", "stayed"], fill_value=0)
    size = counts["stayed"] + counts[["joined", "left"]].max(axis=1)
    order = sorted(counts.index, key=lambda c: (-int(size[c]), str(c)))
    left_out = len(order) - max_cohorts if max_cohorts is not None and len(order) > max_cohorts else 0
    order = order[:max_cohorts] if max_cohorts is not None else order
    users = len(changes[["user_id", "device_id"]].drop_duplicates())
    title = title or (f"Cohort membership between two snapshots ({users:,} users in both"
                      + (f"; the {len(order)} largest of {len(order) + left_out} cohorts)" if left_out else ")"))
    if not order:
        return _empty_figure(title, height=height, width=width)
    shown = [_label(cohort, named) for cohort in order]
    node_names = [f"{name} (before)" for name in shown] + ["Not in the cohort"] + \
                 [f"{name} (after)" for name in shown] + ["Left the cohort"]
    outside_before, outside_after = len(order), 2 * len(order) + 1
    source, target, value, colour, what = [], [], [], [], []
    for i, cohort in enumerate(order):
        for flow, start, end, tint in (("stayed", i, len(order) + 1 + i, "#c6dbef"),
                                        ("left", i, outside_after, "#f4a6a6"),
                                        ("joined", outside_before, len(order) + 1 + i, "#a9dba0")):
            n = int(counts.loc[cohort, flow])
            if n:
                source.append(start)
                target.append(end)
                value.append(n)
                colour.append(tint)
                what.append(f"{shown[i]}: {flow}")
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node={"label": node_names, "pad": 12, "thickness": 14,
              "color": ["#1f77b4"] * len(order) + ["#bbbbbb"] + ["#1f77b4"] * len(order) + ["#bbbbbb"]},
        link={"source": source, "target": target, "value": value, "color": colour, "customdata": what,
              "hovertemplate": "%{customdata}: %{value:,} users<extra></extra>"},
    ))
    return _layout(fig, title=title, height=height or max(450, 45 * len(order) + 150), width=width)
