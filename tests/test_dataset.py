"""The deterministic sample org: documented answers, determinism and data shape."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import DOCUMENTED_QUERIES

from amptools.sample import SampleOrg, SampleRequestError
from amptools.sample.dataset import ORG_DEFINITION_PATH, load_definition

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "data" / "samples"
DOCUMENTED = DOCUMENTED_QUERIES
REC_IDS = "home-feed,similar-items,email-picks,trending-now"
EVERYTHING: dict[str, str] = {
    "get_recs": "true",
    "rec_id": REC_IDS,
    "get_amp_props": "true",
    "get_cohort_ids": "true",
    "get_computations": "true",
    "get_propensity": "true",
    "prediction_id": "0x10x,0x2a7c,0x3f1e",
}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def org() -> SampleOrg:
    return SampleOrg()


@pytest.fixture(scope="module")
def users(org: SampleOrg) -> list[dict[str, Any]]:
    """userData of every synthetic user with everything asked for."""
    return [org.payload(i, EVERYTHING)["userData"] for i in range(1, org.n_users)]


def _recs(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rec["rec_id"]: rec for rec in payload["userData"]["recommendations"] or []}


# ---------------------------------------------------------------- documented
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_answers_are_exact(org: SampleOrg, name: str) -> None:
    expected = json.loads((SAMPLE_DIR / f"{name}.json").read_text(encoding="utf-8"))
    got = org.payload(org.find(user_id="testUser"), DOCUMENTED[name])
    assert got == expected
    # Same key order too, so a dump is byte-for-byte the documented JSON.
    assert json.dumps(got) == json.dumps(expected)


def test_sample_files_are_verbatim_from_the_seed() -> None:
    # The project's seed document, kept in the repository (data/seed/) so that this check
    # never depends on what sits beside the checkout; where shared/ is beside it too, the
    # kept copy must be that document byte for byte.
    seed = SAMPLE_DIR.parent / "seed" / "000_07b98d14e13ff0fc.txt"
    assert seed.exists(), f"the seed document {seed} is missing from the checkout"
    for shared in (SAMPLE_DIR.parents[2] / "shared", Path("/work/shared")):
        original = shared / "seeds" / seed.name
        if original.exists():
            assert original.read_bytes() == seed.read_bytes()
    blocks = re.findall(r"```json\n(.*?)```", seed.read_text(encoding="utf-8"), re.S)
    names = ["one_rec", "two_recs", "user_properties", "cohort_ids", "one_computation",
             "all_computations"]
    for name, block in zip(names, blocks, strict=True):
        assert (SAMPLE_DIR / f"{name}.json").read_text(encoding="utf-8") == block


def test_org_json_symlink_points_at_package_data() -> None:
    link = SAMPLE_DIR / "sample_org.json"
    assert link.is_symlink()
    assert link.resolve() == ORG_DEFINITION_PATH.resolve()
    assert load_definition(link) == load_definition()


def test_test_user_by_device_and_prediction(org: SampleOrg) -> None:
    assert org.find(device_id="ffff-ffff-ffff-ffff") == 0
    assert org.find(user_id="testUser", device_id="ffff-ffff-ffff-ffff") == 0
    data = org.payload(0, {"get_propensity": "true", "prediction_id": "0x10x"})["userData"]
    assert data["propensity"] == 0.500001
    assert data["propensities"] == [{"prop": 0.500001, "pred_id": "0x10x", "prop_type": "score"}]


# -------------------------------------------------------------- determinism
def test_same_seed_same_payloads_different_seed_differs() -> None:
    first, again, other = SampleOrg(seed=7), SampleOrg(seed=7), SampleOrg(seed=8)
    indices = [1, 2, 50, 97, 1999]
    assert [first.payload(i, EVERYTHING) for i in indices] == [
        again.payload(i, EVERYTHING) for i in indices
    ]
    assert list(first.device_ids[:50]) == list(again.device_ids[:50])
    assert [first.payload(i, EVERYTHING) for i in indices] != [
        other.payload(i, EVERYTHING) for i in indices
    ]
    assert first.device_ids[1] != other.device_ids[1]
    # The test user does not depend on the seed.
    assert other.payload(0, DOCUMENTED["two_recs"]) == first.payload(0, DOCUMENTED["two_recs"])


def test_payload_does_not_depend_on_generation_order() -> None:
    forwards, backwards = SampleOrg(n_users=50), SampleOrg(n_users=50)
    ahead = [forwards.payload(i, EVERYTHING) for i in range(50)]
    behind = [backwards.payload(i, EVERYTHING) for i in reversed(range(50))][::-1]
    assert ahead == behind


def test_payload_is_a_fresh_object(org: SampleOrg) -> None:
    first = org.payload(3, EVERYTHING)
    first["userData"]["amp_props"]["platform"] = "changed"
    first["userData"]["cohort_ids"].append("changed")
    if first["userData"]["recommendations"]:
        first["userData"]["recommendations"][0]["items"].append("changed")
    assert org.payload(3, EVERYTHING) != first


# --------------------------------------------------------------------- ids
def test_ids_are_unique_and_findable(org: SampleOrg) -> None:
    user_ids, device_ids = list(org.user_ids), list(org.device_ids)
    assert len(user_ids) == len(device_ids) == org.n_users == len(org)
    assert len(set(user_ids)) == len(set(device_ids)) == org.n_users
    uuid_like = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    assert all(uuid_like.match(device) for device in device_ids[1:])
    for i in range(org.n_users):
        assert org.find(user_id=user_ids[i]) == i
        assert org.find(device_id=device_ids[i]) == i
        assert org.find(user_id=user_ids[i], device_id=device_ids[i]) == i
    assert org.user_ids[-1] == user_ids[-1]
    assert org.user_ids[2:4] == user_ids[2:4]


def test_hostile_user_ids_exist(org: SampleOrg) -> None:
    special = [uid for uid in org.user_ids if not re.match(r"^(user-\d{6}|testUser)$", uid)]
    assert special, "some user ids should need URL encoding"
    assert any(" " in uid and "&" in uid for uid in special)
    assert any(not uid.isascii() for uid in special)


@pytest.mark.parametrize(
    ("user_id", "device_id"),
    [
        ("nobody", None),
        (None, "ffff-ffff-ffff-fffe"),
        ("user-000001", "ffff-ffff-ffff-ffff"),  # two different users
        ("user-999999", None),
        ("user-00001", None),
        (None, None),
        ("", ""),
    ],
)
def test_find_unknown_or_mismatched_is_none(
    org: SampleOrg, user_id: str | None, device_id: str | None
) -> None:
    assert org.find(user_id=user_id, device_id=device_id) is None


def test_ids_beyond_n_users_are_unknown() -> None:
    small, large = SampleOrg(n_users=10), SampleOrg(n_users=100)
    assert small.find(user_id=large.user_ids[50]) is None
    assert small.find(device_id=large.device_ids[50]) is None
    with pytest.raises(IndexError):
        small.payload(10, {})


# -------------------------------------------------------------------- shape
def test_nothing_asked_is_all_null(org: SampleOrg) -> None:
    data = org.payload(5, {})["userData"]
    assert list(data) == ["recommendations", "user_id", "device_id", "amp_props", "cohort_ids"]
    assert data["recommendations"] is data["amp_props"] is data["cohort_ids"] is None
    assert data["user_id"] == org.user_ids[5]
    assert data["device_id"] == org.device_ids[5]


def test_key_order_with_propensity(org: SampleOrg) -> None:
    data = org.payload(5, EVERYTHING)["userData"]
    assert list(data) == ["recommendations", "user_id", "device_id", "amp_props", "cohort_ids",
                          "propensity", "propensities"]


# ----------------------------------------------------------- recommendations
def test_recommendation_lists(org: SampleOrg, users: list[dict[str, Any]]) -> None:
    catalog = set(org.catalog)
    assert 200 <= len(catalog) <= 500
    sources = set()
    for data in users:
        for rec in data["recommendations"] or []:
            assert list(rec) == ["rec_id", "child_rec_id", "items", "is_control",
                                 "recommendation_source", "last_updated"]
            assert len(rec["items"]) == 10 == len(set(rec["items"]))
            assert set(rec["items"]) <= catalog
            assert isinstance(rec["is_control"], bool)
            assert org.as_of - 3 * 86400 <= rec["last_updated"] <= org.as_of
            assert rec["child_rec_id"].startswith(rec["rec_id"])
            sources.add(rec["recommendation_source"])
    assert 2 <= len(sources) <= 3
    children = Counter(
        rec["child_rec_id"] != rec["rec_id"]
        for data in users for rec in data["recommendations"] or []
    )
    assert 0 < children[True] < children[False]


def test_little_history_users_get_null(users: list[dict[str, Any]]) -> None:
    share = sum(data["recommendations"] is None for data in users) / len(users)
    assert 0.01 <= share <= 0.08


@pytest.mark.parametrize("rec_id", REC_IDS.split(","))
def test_control_users_get_random_items(org: SampleOrg, rec_id: str) -> None:
    control = 0
    with_recs = 0
    for i in range(1, 800):
        default = _recs(org.payload(i, {"get_recs": "true", "rec_id": rec_id}))
        if rec_id not in default:
            continue
        with_recs += 1
        model = _recs(org.payload(i, {"get_recs": "true", "rec_id": rec_id, "rec_type": "model"}))
        random = _recs(org.payload(i, {"get_recs": "true", "rec_id": rec_id, "rec_type": "random"}))
        assert model[rec_id]["is_control"] is False
        assert random[rec_id]["is_control"] is True
        assert model[rec_id]["items"] != random[rec_id]["items"]
        if default[rec_id]["is_control"]:
            control += 1
            assert default[rec_id]["items"] == random[rec_id]["items"]
        else:
            assert default[rec_id]["items"] == model[rec_id]["items"]
    assert 0.05 <= control / with_recs <= 0.25


def test_bad_rec_type_and_missing_rec_id_are_errors(org: SampleOrg) -> None:
    with pytest.raises(SampleRequestError, match="rec_type"):
        org.payload(1, {"get_recs": "true", "rec_id": "home-feed", "rec_type": "popular"})
    with pytest.raises(SampleRequestError, match="rec_id"):
        org.payload(1, {"get_recs": "true"})


def test_unknown_rec_ids_are_omitted(org: SampleOrg) -> None:
    index = next(i for i in range(1, 100) if org.payload(i, EVERYTHING)["userData"]["recommendations"])
    recs = org.payload(index, {"get_recs": "true", "rec_id": "nope,home-feed,testRecId"})
    assert [rec["rec_id"] for rec in recs["userData"]["recommendations"]] == ["home-feed"]
    none = org.payload(index, {"get_recs": "true", "rec_id": "nope"})
    assert none["userData"]["recommendations"] == []


def test_models_differ_and_same_model_lists_correlate(
    org: SampleOrg, users: list[dict[str, Any]]
) -> None:
    by_popularity = sorted(range(len(org.catalog)), key=lambda j: -org.popularity[j])
    rank = {org.catalog[j]: r for r, j in enumerate(by_popularity)}
    mean_rank: dict[str, list[float]] = {}
    same, different = [], []
    for data in users:
        recs = {rec["rec_id"]: rec for rec in data["recommendations"] or []}
        treated = {k: set(v["items"]) for k, v in recs.items() if not v["is_control"]}
        for rec in recs.values():
            if not rec["is_control"]:
                mean_rank.setdefault(rec["recommendation_source"], []).append(
                    sum(rank[i] for i in rec["items"]) / 10
                )
        if {"home-feed", "email-picks", "similar-items"} <= set(treated):
            same.append(len(treated["home-feed"] & treated["email-picks"]) / 10)
            different.append(len(treated["home-feed"] & treated["similar-items"]) / 10)
    averages = {model: sum(v) / len(v) for model, v in mean_rank.items()}
    # The popularity baseline recommends the head, the two-tower model the long tail.
    assert averages["pop-baseline-v2"] < averages["als-v3"] < averages["two-tower-v1"]
    assert sum(same) / len(same) > sum(different) / len(different) + 0.1


# ---------------------------------------------------------------- cohorts
def test_cohorts_overlap_with_structure(org: SampleOrg, users: list[dict[str, Any]]) -> None:
    assert 20 <= len(org.cohort_ids) <= 40
    sizes = Counter(cid for data in users for cid in data["cohort_ids"])
    shares = [sizes[cid] / len(users) for cid in org.cohort_ids]
    assert min(shares) < 0.01 and max(shares) > 0.4
    assert all(set(data["cohort_ids"]) <= set(org.cohort_ids) for data in users)
    assert any(data["cohort_ids"] == [] for data in users)
    # Power users fill the "Power users" cohort, lapsed users the "Dormant" one.
    by_segment: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for i, data in enumerate(users, start=1):
        segment = org.segment(i)
        totals[segment] += 1
        by_segment.setdefault(segment, Counter()).update(data["cohort_ids"])
    assert by_segment["power"]["cohort3"] / totals["power"] > 5 * by_segment["casual"]["cohort3"] / totals["casual"]
    assert by_segment["lapsed"]["cohort20"] / totals["lapsed"] > 5 * by_segment["regular"]["cohort20"] / totals["regular"]


# ------------------------------------------------------------- properties
def test_properties_have_mixed_types(org: SampleOrg, users: list[dict[str, Any]]) -> None:
    assert 25 <= len(org.property_names) - len(org.sparse_property_names) <= 40
    types: dict[str, set[type]] = {}
    present: Counter[str] = Counter()
    values: list[str] = []
    for data in users:
        props = {k: v for k, v in data["amp_props"].items() if k in org.property_names}
        present.update(props.keys())
        for name, value in props.items():
            types.setdefault(name, set()).add(type(value))
            if isinstance(value, str):
                values.append(value)
        assert DATE.match(props["first_used"]) and DATE.match(props["last_used"])
        assert props["last_used"] >= props["first_used"]
    seen = set().union(*types.values())
    assert {str, int, float, bool} <= seen
    assert all(len(kinds) == 1 for kinds in types.values()), types
    assert {"gp:email", "gp:first_name", "gp:phone"} <= set(present)
    assert any(count < len(users) for count in present.values()), "some properties go missing"
    assert any(v.startswith("=") for v in values)
    assert any(v.startswith("+") for v in values)
    assert any(v.startswith("-") for v in values)
    assert any(v.startswith("@") for v in values)
    assert any("\n" in v for v in values)
    assert any(not v.isascii() for v in values)
    assert all("@" in data["amp_props"]["gp:email"] for data in users if "gp:email" in data["amp_props"])


# ----------------------------------------------------------- computations
def test_sparse_properties_are_on_one_to_five_percent_of_users(org: SampleOrg) -> None:
    """A real org's UTM fields and experiment flags: a dozen keys, each on few users."""
    assert len(org.sparse_property_names) == 12
    n = 4000
    big = SampleOrg(n_users=n)
    present: Counter[str] = Counter()
    kinds: dict[str, set[type]] = {}
    for i in range(1, n):
        props = big.payload(i, {"get_amp_props": "true"})["userData"]["amp_props"]
        for name in big.sparse_property_names:
            if name in props:
                present[name] += 1
                kinds.setdefault(name, set()).add(type(props[name]))
    for name in big.sparse_property_names:
        assert 0.005 <= present[name] / n <= 0.07, (name, present[name])
    # Mostly text (a merged answer cannot tell text properties from computations by type).
    assert sum(kinds[name] == {str} for name in kinds) >= 8
    assert {bool, int} <= set().union(*kinds.values())


def test_some_computations_are_enabled_for_some_users_only(org: SampleOrg) -> None:
    assert org.partial_computation_ids == ["trial_days_left", "churn_risk_score", "open_cart_value"]
    enabled: Counter[str] = Counter()
    for i in range(1, 1000):
        every = org.payload(i, {"get_computations": "true"})["userData"]["amp_props"]
        assert set(every) <= set(org.computation_ids)
        enabled.update(k for k in every if k in org.partial_computation_ids)
        listed = org.payload(i, {"comp_id": "trial_days_left"})["userData"]["amp_props"]
        assert listed["trial_days_left"] == every.get("trial_days_left")  # null when not enabled
    assert 40 <= enabled["trial_days_left"] <= 150
    assert 250 <= enabled["churn_risk_score"] <= 450


def test_the_clash_switch_names_a_computation_like_a_property() -> None:
    plain, clashing = SampleOrg(), SampleOrg(clash=True)
    assert "lifetime_value" not in plain.computation_ids
    assert "lifetime_value" in clashing.computation_ids and "lifetime_value" in clashing.property_names
    both = [i for i in range(1, 300) if "lifetime_value" in clashing.user_computations(i)]
    assert 60 <= len(both) <= 180  # enabled for some users only
    i = both[0]
    merged = clashing.payload(i, {"get_amp_props": "true", "get_computations": "true"})["userData"]["amp_props"]
    props = clashing.payload(i, {"get_amp_props": "true"})["userData"]["amp_props"]
    comps = clashing.payload(i, {"get_computations": "true"})["userData"]["amp_props"]
    assert merged["lifetime_value"] == comps["lifetime_value"] != props["lifetime_value"]
    # Switching the clash on changes nothing else.
    assert plain.payload(i, {"get_amp_props": "true"})["userData"]["amp_props"] == props
    assert {k: v for k, v in comps.items() if k != "lifetime_value"} == \
        plain.payload(i, {"get_computations": "true"})["userData"]["amp_props"]


def test_changes_while_running() -> None:
    org = SampleOrg()
    before = org.payload(5, {"get_amp_props": "true", "get_computations": "true"})["userData"]["amp_props"]
    org.add_computation("plan")  # the name of a property: a clash
    org.remove_computation("orders_90d")
    org.add_property("orders_90d")
    after = org.payload(5, {"get_amp_props": "true", "get_computations": "true"})["userData"]["amp_props"]
    comps = org.payload(5, {"get_computations": "true"})["userData"]["amp_props"]
    props = org.payload(5, {"get_amp_props": "true"})["userData"]["amp_props"]
    assert "plan" in comps and "orders_90d" not in comps
    assert isinstance(props["orders_90d"], str) and props["plan"] == before["plan"]
    assert after["plan"] == comps["plan"] != before["plan"]
    assert after["orders_90d"] == props["orders_90d"]
    # The documented test user never changes.
    assert org.payload(0, {"get_computations": "true"}) == SampleOrg().payload(0, {"get_computations": "true"})


def test_computations_are_strings_inside_amp_props(org: SampleOrg, users: list[dict[str, Any]]) -> None:
    assert len(org.computation_ids) == 9
    kinds: Counter[str] = Counter()
    for data in users:
        for comp in org.computation_ids:
            if comp not in data["amp_props"]:
                assert comp in org.partial_computation_ids
                continue
            value = data["amp_props"][comp]
            if value is None:
                kinds["null"] += 1
                continue
            assert isinstance(value, str)
            try:
                float(value)
                kinds["number" if value.lower() != "nan" else "nonnumeric"] += 1
            except ValueError:
                kinds["nonnumeric"] += 1
    assert kinds["number"] > 0.9 * sum(kinds.values())
    assert kinds["null"] > 0 and kinds["nonnumeric"] > 0


def test_computation_requests(org: SampleOrg) -> None:
    only = org.payload(4, {"comp_id": "orders_90d,missing-comp"})["userData"]["amp_props"]
    assert list(only) == ["orders_90d", "missing-comp"]
    assert only["missing-comp"] is None
    every = org.payload(4, {"get_computations": "true"})["userData"]["amp_props"]
    assert list(every) == [c for c in org.computation_ids if c in org.user_computations(4)]
    props = org.payload(4, {"get_amp_props": "true"})["userData"]["amp_props"]
    assert not set(props) & set(org.computation_ids)
    merged = org.payload(4, {"get_amp_props": "true", "get_computations": "true"})["userData"]["amp_props"]
    assert list(merged) == list(props) + list(every)


# ------------------------------------------------------------ predictions
def test_prediction_score_and_percentile_agree(org: SampleOrg) -> None:
    gammas = {p["id"]: p["gamma"] for p in org.definition["predictions"]}
    asked = ",".join(org.prediction_ids)
    for i in range(1, 300):
        scores = org.payload(i, {"get_propensity": "true", "prediction_id": asked})["userData"]
        pcts = org.payload(
            i, {"get_propensity": "true", "prediction_id": asked, "propensity_type": "pct"}
        )["userData"]
        assert scores["propensity"] is None and pcts["propensity"] is None
        for score, pct in zip(scores["propensities"], pcts["propensities"], strict=True):
            assert score["prop_type"] == "score" and pct["prop_type"] == "pct"
            assert 0.0 <= score["prop"] <= 1.0 and 0.0 <= pct["prop"] <= 100.0
            assert score["prop"] == pytest.approx((pct["prop"] / 100) ** gammas[score["pred_id"]], abs=1e-3)


def test_propensity_requests(org: SampleOrg) -> None:
    one = org.payload(2, {"get_propensity": "true", "prediction_id": "0x2a7c"})["userData"]
    assert one["propensity"] == one["propensities"][0]["prop"] is not None
    unknown = org.payload(2, {"get_propensity": "true", "prediction_id": "nope"})["userData"]
    assert unknown["propensity"] is None
    assert unknown["propensities"] == [{"prop": None, "pred_id": "nope", "prop_type": "score"}]
    assert "propensity" not in org.payload(2, {"prediction_id": "0x2a7c"})["userData"]
    with pytest.raises(SampleRequestError, match="propensity_type"):
        org.payload(2, {"get_propensity": "true", "prediction_id": "0x10x", "propensity_type": "raw"})


# ------------------------------------------------------------------- speed
def test_large_org_is_lazy_and_payloads_are_fast() -> None:
    """A large org costs about what a small one does, to make and per payload: compared
    with a small org in the same run (a ratio, not a time this machine may not keep)."""

    def cost(n_users: int) -> tuple[float, float]:
        start = time.perf_counter()
        org = SampleOrg(n_users=n_users)
        made = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(n_users // 2, n_users // 2 + 500):
            org.payload(i, EVERYTHING)
        return made, (time.perf_counter() - start) / 500

    small_made, small_payload = min(cost(1_000) for _ in range(3))
    big_made, big_payload = min(cost(100_000) for _ in range(3))
    # Eager work per user would make the large org 100 times dearer.
    assert big_made < 20 * small_made + 0.05, (big_made, small_made)
    assert big_payload < 5 * small_payload, (big_payload, small_payload)
    big = SampleOrg(n_users=100_000)
    assert big.find(user_id=big.user_ids[99_999]) == 99_999
