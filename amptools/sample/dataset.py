"""A deterministic synthetic Amplitude org that answers User Profile API queries.

The org is described by ``org.json`` (next to this module): its seed and size, the
item catalog, the recommendation models and rec ids, the cohorts, the user
properties, the computations, the predictions, and the exact data of the
documented test user (``testUser`` / ``ffff-ffff-ffff-ffff``).

Users are generated lazily: user ``i`` is a pure function of ``(seed, i)`` drawn
with :func:`numpy.random.default_rng`, so ``SampleOrg(n_users=100_000)`` costs
nothing to create and :meth:`SampleOrg.payload` builds one user in well under a
millisecond.

Shape choices (the real service is silent on these, so the sample org decides):

- Index 0 is always the documented test user; indices ``1 .. n_users - 1`` are
  synthetic. User ids are ``user-000042``; about one user in 97 gets a "hostile"
  id such as ``Zoë & Łukasz #194`` (spaces, ``&``, ``+``, ``/``, ``%``, emoji, a
  comma) so URL encoding is exercised. Device ids look like UUIDs and depend on
  the seed.
- A user in an experiment's control group gets ``is_control: true`` and a
  uniform random draw from the catalog. ``rec_type=model`` forces the modelled
  list with ``is_control: false``; ``rec_type=random`` forces a random list with
  ``is_control: true``. Any other ``rec_type`` is an error.
- Unknown rec ids are silently omitted from ``recommendations``; users with too
  little history get ``recommendations: null`` even when asked.
- Unknown comp ids come back as ``null`` inside ``amp_props``; unknown
  prediction ids come back with ``"prop": null``.
- Propensity fields appear only when ``get_propensity=true``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, overload

import numpy as np

from . import clock

__all__ = [
    "ORG_DEFINITION_PATH",
    "SampleOrg",
    "SampleRequestError",
    "load_definition",
]

ORG_DEFINITION_PATH: Path = Path(__file__).with_name("org.json")
"""Where the sample org's definition lives (package data)."""

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# Stream tags keep the catalog's random numbers apart from every user's stream.
_CATALOG_STREAM = (2**32 - 1, 1)
_SQRT2 = math.sqrt(2.0)
_DEVICE_MODULUS = 2**48


class SampleRequestError(ValueError):
    """A query the sample org refuses (HTTP 400 with ``{"error": message}``).

    Parameters
    ----------
    message : str
        The text of the ``error`` field.
    status : int, optional
        The HTTP status the server answers with, 400 by default.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def load_definition(path: str | Path | None = None) -> dict[str, Any]:
    """Read the sample org's definition.

    Parameters
    ----------
    path : str or Path, optional
        A JSON file; the packaged ``org.json`` when omitted.

    Returns
    -------
    dict
        The parsed definition.
    """
    with open(path or ORG_DEFINITION_PATH, encoding="utf-8") as handle:
        definition: dict[str, Any] = json.load(handle)
    return definition


def _flag(params: Mapping[str, str], name: str) -> bool:
    return str(params.get(name, "")).strip().lower() == "true"


def _split_ids(value: str | None) -> list[str]:
    # Ids are never stripped: a space is a legitimate character of an id.
    if not value:
        return []
    return [part for part in value.split(",") if part != ""]


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _normal_cdf(value: float) -> float:
    return 0.5 * (1.0 + math.erf(value / _SQRT2))


@dataclass(slots=True)
class _RecSlot:
    child_rec_id: str
    source: str
    is_control: bool
    model_items: list[str]
    random_items: list[str]
    last_updated: int


@dataclass(slots=True)
class _User:
    index: int
    user_id: str
    device_id: str
    segment: str
    props: dict[str, Any]
    cohorts: list[str]
    computations: dict[str, str | None]
    predictions: dict[str, tuple[float, float]]
    recs: dict[str, _RecSlot] | None


class _IdSequence(Sequence[str]):
    """A lazy, read-only sequence of ids computed from the index."""

    def __init__(self, length: int, make: Callable[[int], str]) -> None:
        self._length = length
        self._make = make

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("user index out of range")
        return self._make(index)

    def __iter__(self) -> Iterator[str]:
        return (self._make(i) for i in range(self._length))

    def __contains__(self, value: object) -> bool:
        return any(value == self._make(i) for i in range(self._length))

    def __repr__(self) -> str:
        return f"<ids of {self._length} sample users>"


class SampleOrg:
    """A deterministic synthetic Amplitude org.

    Parameters
    ----------
    seed : int, optional
        Seed of every random draw; ``org.json``'s ``seed`` when omitted.
    n_users : int, optional
        Number of users including the test user at index 0; ``org.json``'s
        ``n_users`` (2,000) when omitted.
    definition : Mapping, optional
        An org definition with the structure of ``org.json``; the packaged file
        when omitted.
    day : int, optional
        The org's clock (:mod:`amptools.sample.clock`): 0 is the org as drawn; each
        later day a model retrains, users join and leave cohorts and computed
        properties move, deterministically.

    Examples
    --------
    >>> org = SampleOrg()
    >>> org.find(user_id="testUser")
    0
    >>> org.payload(0, {"get_cohort_ids": "true"})["userData"]["cohort_ids"]
    ['cohort1', 'cohort3', 'cohort7']
    """

    def __init__(
        self,
        seed: int | None = None,
        n_users: int | None = None,
        *,
        definition: Mapping[str, Any] | None = None,
        clash: bool = False,
        day: int = 0,
    ) -> None:
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise ValueError(f"day must be a whole number ≥ 0 (0 is the org as drawn), got {day!r}")
        self.day: int = day
        spec = dict(definition) if definition is not None else load_definition()
        self.clash = bool(clash)
        self.definition: dict[str, Any] = spec
        self.seed: int = int(spec["seed"] if seed is None else seed)
        if self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        self.n_users: int = int(spec["n_users"] if n_users is None else n_users)
        if self.n_users < 1:
            raise ValueError("n_users must be at least 1 (index 0 is the test user)")
        self.as_of: int = int(spec["as_of"])
        self._as_of_ordinal = datetime.fromtimestamp(self.as_of, timezone.utc).date().toordinal()
        self._compile_segments(spec)
        self._compile_catalog(spec)
        self._compile_recommendations(spec)
        self._compile_cohorts(spec)
        self._compile_properties(spec)
        self._compile_computations(spec)
        self._compile_predictions(spec)
        self._test = spec["test_user"]
        # The device id's last group is an invertible affine map of the index
        # (mod 2**48), so find() needs no table and the ids still look random.
        mixing = hashlib.blake2b(f"{self.seed}:device-map".encode(), digest_size=12).digest()
        self._device_multiplier = int.from_bytes(mixing[:6], "big") | 1
        self._device_offset = int.from_bytes(mixing[6:], "big")
        self._device_inverse = pow(self._device_multiplier, -1, _DEVICE_MODULUS)
        self._special_every = int(spec.get("special_user_id_every", 0))
        self._special_labels: list[str] = list(spec.get("special_user_id_labels", []))
        # Changes made while the org runs (see add_computation): applied when answering.
        self._added_computations: dict[str, None] = {}
        self._removed_computations: set[str] = set()
        self._added_properties: dict[str, None] = {}
        self.user_ids: Sequence[str] = _IdSequence(self.n_users, self._user_id)
        self.device_ids: Sequence[str] = _IdSequence(self.n_users, self._device_id)
        self._user = functools.lru_cache(maxsize=8192)(self._user_on_day if day else self._build_user)

    def __len__(self) -> int:
        return self.n_users

    def __repr__(self) -> str:
        day = f", day={self.day}" if self.day else ""
        clash = ", clash=True" if self.clash else ""
        return f"SampleOrg(seed={self.seed}, n_users={self.n_users}{day}{clash})"

    # -------------------------------------------------------------------- the clock
    def _user_on_day(self, index: int) -> _User:
        """User ``index`` on this org's day: day 0's user, changed one day at a time."""
        user = self._build_user(index)
        for day in range(1, self.day + 1):
            user = self._next_day(user, self._told(user, day), day)
        return user

    def _told(self, user: _User, day: int) -> clock.Changes:
        return clock.told(
            seed=self.seed, index=user.index, day=day, models=self.models, rec_models=self.rec_models,
            model_items={rec_id: slot.model_items for rec_id, slot in (user.recs or {}).items()},
            catalog=self.catalog, cohort_ids=self.cohort_ids, computations=user.computations,
            computation_specs=self._computations)

    def _next_day(self, user: _User, changes: clock.Changes, day: int) -> _User:
        recs = user.recs
        if recs is not None and changes.retrained:
            recs = {rec_id: replace(slot, model_items=[changes.retrained[rec_id], *slot.model_items[:-1]],
                                    last_updated=self.as_of + day * clock.DAY_SECONDS)
                    if rec_id in changes.retrained else slot for rec_id, slot in recs.items()}
        member = set(user.cohorts) ^ changes.cohort_flips
        return replace(user, recs=recs, cohorts=[c for c in self.cohort_ids if c in member],
                       computations={**user.computations, **changes.computations})

    def changes(self, index: int) -> clock.Changes:
        """What the clock changed for user ``index`` from the day before to this org's day.

        Parameters
        ----------
        index : int
            The user's index.

        Returns
        -------
        amptools.sample.clock.Changes
            The sets retrained (and their new top item), the cohorts joined or left,
            the computations that moved; empty on day 0 and for the test user.
        """
        if self.day == 0:
            return clock.Changes()
        before = SampleOrg(self.seed, self.n_users, definition=self.definition, clash=self.clash, day=self.day - 1)
        return self._told(before._user(index), self.day)

    # ------------------------------------------------------------------ compile
    def _compile_segments(self, spec: Mapping[str, Any]) -> None:
        segments = spec["segments"]
        self.segments: list[str] = list(segments)
        shares = np.array([segments[s]["share"] for s in self.segments], dtype=float)
        self._segment_cumulative = list(np.cumsum(shares / shares.sum()))
        self._segment_engagement = [float(segments[s]["engagement"]) for s in self.segments]

    def _compile_catalog(self, spec: Mapping[str, Any]) -> None:
        catalog = spec["catalog"]
        rng = np.random.default_rng([self.seed, *_CATALOG_STREAM])
        self.categories: list[str] = list(catalog["categories"])
        size = int(catalog["size"])
        item_category = rng.integers(0, len(self.categories), size=size)
        counters = [0] * len(self.categories)
        names = []
        for category in item_category:
            counters[category] += 1
            names.append(f"{self.categories[category]}-{counters[category]:03d}")
        self.catalog: list[str] = names
        self._item_category = item_category
        # Zipf-like popularity over a seeded permutation of the catalog.
        ranks = rng.permutation(size) + 1
        self.popularity: np.ndarray = ranks.astype(float) ** -float(catalog["zipf_exponent"])
        self.popularity /= self.popularity.sum()
        self._log_popularity = np.log(self.popularity)
        self._taste_alpha = np.full(len(self.categories), float(catalog["taste_concentration"]))

    def _compile_recommendations(self, spec: Mapping[str, Any]) -> None:
        recs = spec["recommendations"]
        self.items_per_list: int = int(recs["items_per_list"])
        self._max_age = int(recs["last_updated_max_age_seconds"])
        little = recs["little_history"]
        self._little_history = [
            float(little["segments"].get(s, little["base"])) for s in self.segments
        ]
        self.models: list[str] = list(recs["models"])
        rng = np.random.default_rng([self.seed, *_CATALOG_STREAM, 2])
        static = []
        for name in self.models:
            model = recs["models"][name]
            bias = rng.normal(0.0, float(model["item_bias_sd"]), size=len(self.catalog))
            static.append(float(model["popularity_weight"]) * self._log_popularity + bias)
        self._model_static = np.array(static)
        self._model_taste = np.array([float(recs["models"][m]["taste_weight"]) for m in self.models])
        self._model_noise = np.array([float(recs["models"][m]["noise"]) for m in self.models])
        self.rec_ids: list[str] = [r["rec_id"] for r in recs["rec_ids"]]
        self._rec_model = np.array([self.models.index(r["model"]) for r in recs["rec_ids"]])
        self._rec_noise = np.array([float(r["rec_noise"]) for r in recs["rec_ids"]])
        self._rec_control = [float(r["control_share"]) for r in recs["rec_ids"]]
        self._rec_variants: list[tuple[list[str], list[float]]] = []
        for r in recs["rec_ids"]:
            variants = dict(r.get("variants", {}))
            self._rec_variants.append((list(variants), list(accumulate(variants.values()))))
        self.rec_models: dict[str, str] = {r["rec_id"]: r["model"] for r in recs["rec_ids"]}

    def _compile_cohorts(self, spec: Mapping[str, Any]) -> None:
        cohorts = spec["cohorts"]
        self.cohort_ids: list[str] = [c["id"] for c in cohorts]
        self.cohort_names: dict[str, str] = {c["id"]: c["name"] for c in cohorts}
        base = np.array([c["base_rate"] for c in cohorts], dtype=float)
        self._cohort_logit = np.log(base / (1.0 - base))
        self._cohort_engagement = np.array([c["engagement"] for c in cohorts], dtype=float)
        self._cohort_segment = np.array(
            [[c["segments"].get(s, 0.0) for c in cohorts] for s in self.segments], dtype=float
        )

    def _compile_properties(self, spec: Mapping[str, Any]) -> None:
        self._properties: list[dict[str, Any]] = []
        for prop in spec["properties"]:
            compiled = dict(prop)
            if prop["kind"] == "choice":
                weights = prop.get("weights") or [1.0] * len(prop["values"])
                compiled["cumulative"] = self._cumulative(weights)
                compiled["segment_cumulative"] = [
                    self._cumulative(prop.get("segment_weights", {}).get(s, weights))
                    for s in self.segments
                ]
            elif prop["kind"] == "bool":
                compiled["segment_p_list"] = [
                    float(prop.get("segment_p", {}).get(s, prop["p"])) for s in self.segments
                ]
            elif prop["kind"] == "date":
                compiled["segment_days"] = [
                    prop.get("segment_days_ago", {}).get(s, prop["days_ago"]) for s in self.segments
                ]
            self._properties.append(compiled)
        self._sparse_groups: dict[str, float] = dict(spec.get("sparse_groups", {}))
        self._sparse: list[dict[str, Any]] = []
        for prop in spec.get("sparse_properties", []):
            compiled = dict(prop)
            if prop["kind"] == "choice":
                compiled["cumulative"] = self._cumulative(prop.get("weights") or [1.0] * len(prop["values"]))
            self._sparse.append(compiled)
        #: Every property a user can have: the common ones, then the sparse ones (1-5% of users).
        self.property_names: list[str] = [p["name"] for p in self._properties] + [p["name"] for p in self._sparse]
        self.sparse_property_names: list[str] = [p["name"] for p in self._sparse]
        names = spec["names"]
        self._first_names: list[str] = names["first"]
        self._last_names: list[str] = names["last"]
        self._email_domains: list[str] = names["email_domains"]
        self._phone_prefixes: list[str] = names["phone_prefixes"]

    def _compile_computations(self, spec: Mapping[str, Any]) -> None:
        self._computations: list[dict[str, Any]] = list(spec["computations"])
        # Enabled for only some users; the clash (a computation named like a property) only
        # when asked for. Both drawn from the users' second stream.
        self._partial: list[dict[str, Any]] = list(spec.get("partial_computations", []))
        self._clash: list[dict[str, Any]] = [dict(spec["clash"])] if self.clash and spec.get("clash") else []
        #: Every computation of the org: enabled for every user, then for only some users.
        self.computation_ids: list[str] = [c["id"] for c in (*self._computations, *self._partial, *self._clash)]
        self.partial_computation_ids: list[str] = [c["id"] for c in (*self._partial, *self._clash)]

    def _compile_predictions(self, spec: Mapping[str, Any]) -> None:
        self._predictions: list[dict[str, Any]] = list(spec["predictions"])
        self.prediction_ids: list[str] = [p["id"] for p in self._predictions]
        self.prediction_names: dict[str, str] = {p["id"]: p["name"] for p in self._predictions}

    @staticmethod
    def _cumulative(weights: Sequence[float]) -> list[float]:
        total = float(sum(weights))
        return [w / total for w in accumulate(float(w) for w in weights)]

    # ---------------------------------------------------------------------- ids
    def _user_id(self, index: int) -> str:
        if index == 0:
            return str(self._test["user_id"])
        if self._special_every and self._special_labels and index % self._special_every == 0:
            label = self._special_labels[(index // self._special_every) % len(self._special_labels)]
            return f"{label} #{index}"
        return f"user-{index:06d}"

    def _device_id(self, index: int) -> str:
        if index == 0:
            return str(self._test["device_id"])
        digest = hashlib.blake2b(f"{self.seed}:{index}".encode(), digest_size=10).hexdigest()
        mapped = (index * self._device_multiplier + self._device_offset) % _DEVICE_MODULUS
        tail = f"{mapped:012x}"
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{tail}"

    def _index_of_user_id(self, user_id: str) -> int | None:
        if user_id == self._test["user_id"]:
            return 0
        candidate: int | None = None
        if user_id.startswith("user-") and user_id[5:].isascii() and user_id[5:].isdigit():
            candidate = int(user_id[5:])
        elif " #" in user_id:
            tail = user_id.rsplit(" #", 1)[1]
            if tail.isascii() and tail.isdigit():
                candidate = int(tail)
        if candidate is None or not 0 < candidate < self.n_users:
            return None
        return candidate if self._user_id(candidate) == user_id else None

    def _index_of_device_id(self, device_id: str) -> int | None:
        if device_id == self._test["device_id"]:
            return 0
        tail = device_id.rsplit("-", 1)[-1]
        if len(tail) != 12 or not tail.isascii():
            return None
        try:
            mapped = int(tail, 16)
            candidate = ((mapped - self._device_offset) * self._device_inverse) % _DEVICE_MODULUS
        except ValueError:
            return None
        if not 0 < candidate < self.n_users:
            return None
        return candidate if self._device_id(candidate) == device_id else None

    def find(self, user_id: str | None = None, device_id: str | None = None) -> int | None:
        """Index of the user with these ids.

        Parameters
        ----------
        user_id : str, optional
            A user id; empty strings count as not given.
        device_id : str, optional
            A device id; empty strings count as not given.

        Returns
        -------
        int or None
            The user's index, or None when an id is unknown, when neither is
            given, or when both are given but belong to different users.
        """
        by_user = self._index_of_user_id(user_id) if user_id else None
        by_device = self._index_of_device_id(device_id) if device_id else None
        if user_id and device_id:
            return by_user if by_user is not None and by_user == by_device else None
        return by_user if user_id else by_device

    # -------------------------------------------------------------------- users
    def _build_user(self, index: int) -> _User:
        if not 0 <= index < self.n_users:
            raise IndexError(f"user index {index} out of range 0..{self.n_users - 1}")
        if index == 0:
            return self._build_test_user()
        rng = np.random.default_rng([self.seed, index])
        segment_index = bisect_right(self._segment_cumulative, float(rng.random()))
        segment_index = min(segment_index, len(self.segments) - 1)
        engagement = self._segment_engagement[segment_index] + 0.7 * float(rng.standard_normal())
        taste = rng.dirichlet(self._taste_alpha)
        props = self._make_props(rng, segment_index, engagement, taste)

        logits = (
            self._cohort_logit
            + self._cohort_segment[segment_index]
            + self._cohort_engagement * engagement
        )
        member = rng.random(len(self.cohort_ids)) < 1.0 / (1.0 + np.exp(-logits))
        cohorts = [cid for cid, inside in zip(self.cohort_ids, member.tolist()) if inside]

        computations = self._make_computations(rng, engagement)
        predictions = self._make_predictions(rng, engagement)
        recs = self._make_recs(rng, segment_index, taste)
        # What a real org adds (sparse properties, computations enabled for some users)
        # comes from a stream of its own, so every value above is what it always was.
        extra = np.random.default_rng([self.seed, index, 7])
        props.update(self._make_sparse(extra))
        computations.update(self._make_partial(extra, engagement, self._partial))
        if self._clash:
            clash = np.random.default_rng([self.seed, index, 8])
            computations.update(self._make_partial(clash, engagement, self._clash))
        return _User(
            index=index,
            user_id=self._user_id(index),
            device_id=self._device_id(index),
            segment=self.segments[segment_index],
            props=props,
            cohorts=cohorts,
            computations=computations,
            predictions=predictions,
            recs=recs,
        )

    def _build_test_user(self) -> _User:
        test = self._test
        rng = np.random.default_rng([self.seed, 0])
        recs = {}
        for rec in test["recommendations"]:
            draw = rng.random(len(self.catalog))
            picks = np.argpartition(draw, self.items_per_list)[: self.items_per_list]
            recs[rec["rec_id"]] = _RecSlot(
                child_rec_id=rec["child_rec_id"],
                source=rec["recommendation_source"],
                is_control=bool(rec["is_control"]),
                model_items=list(rec["items"]),
                random_items=[self.catalog[j] for j in picks.tolist()],
                last_updated=int(rec["last_updated"]),
            )
        return _User(
            index=0,
            user_id=test["user_id"],
            device_id=test["device_id"],
            segment="test",
            props=dict(test["amp_props"]),
            cohorts=list(test["cohort_ids"]),
            computations=dict(test["computations"]),
            predictions={
                pid: (float(v["score"]), float(v["pct"])) for pid, v in test["predictions"].items()
            },
            recs=recs,
        )

    def _make_props(
        self, rng: np.random.Generator, segment_index: int, engagement: float, taste: np.ndarray
    ) -> dict[str, Any]:
        count = len(self._properties)
        uniforms = rng.random(2 * count).tolist()
        normals = rng.standard_normal(count).tolist()
        person = rng.random(6).tolist()
        first = self._first_names[int(person[0] * len(self._first_names))]
        last = self._last_names[int(person[1] * len(self._last_names))]
        props: dict[str, Any] = {}
        days_ago: dict[str, int] = {}
        for k, prop in enumerate(self._properties):
            u_missing, u = uniforms[2 * k], uniforms[2 * k + 1]
            kind = prop["kind"]
            value: Any
            if kind == "choice":
                cumulative = prop["segment_cumulative"][segment_index]
                value = prop["values"][min(bisect_right(cumulative, u), len(cumulative) - 1)]
            elif kind == "segment":
                value = self.segments[segment_index]
            elif kind == "date":
                low, high = prop["segment_days"][segment_index]
                ago = int(low + u * (high - low + 1))
                if "not_before" in prop and prop["not_before"] in days_ago:
                    ago = min(ago, days_ago[prop["not_before"]])
                days_ago[prop["name"]] = ago
                value = date.fromordinal(self._as_of_ordinal - ago).isoformat()
            elif kind in ("int", "code"):
                value = self._plain_value(prop, u)
            elif kind == "int_lognormal":
                scale = prop["sigma"] * normals[k] + prop.get("engagement", 0.0) * engagement
                value = int(round(prop["median"] * math.exp(scale)))
            elif kind == "float_lognormal":
                scale = prop["sigma"] * normals[k] + prop.get("engagement", 0.0) * engagement
                value = round(prop["median"] * math.exp(scale), int(prop.get("decimals", 2)))
            elif kind == "bool":
                value = u < prop["segment_p_list"][segment_index]
            elif kind == "first_name":
                value = first
            elif kind == "last_name":
                value = last
            elif kind == "email":
                local = ".".join(part for part in (_ascii_slug(first), _ascii_slug(last)) if part)
                domain = self._email_domains[int(person[2] * len(self._email_domains))]
                value = f"{local or 'user'}{int(person[3] * 1000)}@{domain}"
            elif kind == "phone":
                prefix = self._phone_prefixes[int(person[4] * len(self._phone_prefixes))]
                value = f"{prefix}{int(u * 100):02d}"
            elif kind == "top_category":
                value = self.categories[int(np.argmax(taste))]
            else:
                raise ValueError(f"unknown property kind {kind!r} for {prop['name']!r}")
            if u_missing < prop.get("missing", 0.0):
                continue
            props[prop["name"]] = value
        return props

    def _make_sparse(self, rng: np.random.Generator) -> dict[str, Any]:
        groups = {name: u < share for (name, share), u in
                  zip(self._sparse_groups.items(), rng.random(len(self._sparse_groups)).tolist())}
        draws = rng.random((len(self._sparse), 2)).tolist()
        props: dict[str, Any] = {}
        for prop, (u_present, u) in zip(self._sparse, draws):
            if u_present < prop["share"] and groups.get(prop.get("group", ""), True):
                props[prop["name"]] = self._plain_value(prop, u)
        return props

    def _make_partial(self, rng: np.random.Generator, engagement: float,
                      specs: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
        enabled = rng.random(len(specs)).tolist()
        values = self._make_computations(rng, engagement, specs)
        return {spec["id"]: values[spec["id"]] for spec, u in zip(specs, enabled) if u < spec["enabled"]}

    @staticmethod
    def _plain_value(prop: Mapping[str, Any], u: float) -> Any:
        """A property value drawn from one uniform number (no segment, no engagement)."""
        kind = prop["kind"]
        if kind == "choice":
            cumulative = prop["cumulative"]
            return prop["values"][min(bisect_right(cumulative, u), len(cumulative) - 1)]
        if kind == "int":
            return int(prop["low"] + u * (prop["high"] - prop["low"] + 1))
        if kind == "bool":
            return u < prop["p"]
        if kind == "code":
            number = int(u * len(_CODE_ALPHABET) ** 6)
            chars = []
            for _ in range(6):
                number, digit = divmod(number, len(_CODE_ALPHABET))
                chars.append(_CODE_ALPHABET[digit])
            return prop.get("prefix", "") + "".join(chars)
        raise ValueError(f"unknown sparse property kind {kind!r} for {prop['name']!r}")

    def _make_computations(
        self, rng: np.random.Generator, engagement: float, specs: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, str | None]:
        specs = self._computations if specs is None else specs
        draws = rng.random((len(specs), 3)).tolist()
        normals = rng.standard_normal(len(specs)).tolist()
        values: dict[str, str | None] = {}
        for comp, (u_null, u_invalid, u_pick), z in zip(specs, draws, normals):
            if u_null < comp.get("null_rate", 0.0):
                values[comp["id"]] = None
                continue
            if u_invalid < comp.get("invalid_rate", 0.0):
                invalid = comp["invalid_values"]
                values[comp["id"]] = invalid[int(u_pick * len(invalid))]
                continue
            number = comp["median"] * math.exp(
                comp["sigma"] * z + comp.get("engagement", 0.0) * engagement
            )
            if comp["kind"] == "int":
                values[comp["id"]] = str(int(round(number)))
            else:
                values[comp["id"]] = str(round(float(number), int(comp.get("decimals", 1))))
        return values

    def _make_predictions(
        self, rng: np.random.Generator, engagement: float
    ) -> dict[str, tuple[float, float]]:
        normals = rng.standard_normal(len(self._predictions)).tolist()
        values: dict[str, tuple[float, float]] = {}
        for prediction, z in zip(self._predictions, normals):
            weight = max(-0.95, min(0.95, float(prediction.get("engagement", 0.0))))
            latent = weight * engagement + math.sqrt(1.0 - weight * weight) * z
            quantile = min(max(_normal_cdf(latent), 1e-6), 1.0 - 1e-6)
            # score = quantile ** gamma is monotone, so the percentile is exact.
            score = round(quantile ** float(prediction["gamma"]), 6)
            values[prediction["id"]] = (score, round(100.0 * quantile, 2))
        return values

    def _make_recs(
        self, rng: np.random.Generator, segment_index: int, taste: np.ndarray
    ) -> dict[str, _RecSlot] | None:
        n_items, k = len(self.catalog), self.items_per_list
        n_models, n_recs = len(self.models), len(self.rec_ids)
        # Every draw happens whatever the outcome, so each stream stays aligned.
        little = float(rng.random()) < self._little_history[segment_index]
        model_noise = rng.gumbel(size=(n_models, n_items))
        rec_noise = rng.gumbel(size=(n_recs, n_items))
        random_draw = rng.random((n_recs, n_items))
        slots = rng.random((n_recs, 3)).tolist()
        if little:
            return None
        log_taste = np.log(taste + 1e-6)[self._item_category]
        base = self._model_static + self._model_taste[:, None] * log_taste[None, :]
        base = base + self._model_noise[:, None] * model_noise
        scores = base[self._rec_model] + self._rec_noise[:, None] * rec_noise
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1).tolist()
        randoms = np.argpartition(random_draw, k, axis=1)[:, :k].tolist()
        catalog = self.catalog
        recs: dict[str, _RecSlot] = {}
        for r, rec_id in enumerate(self.rec_ids):
            u_control, u_variant, u_age = slots[r]
            names, cumulative = self._rec_variants[r]
            child = rec_id
            for name, edge in zip(names, cumulative):
                if u_variant < edge:
                    child = name
                    break
            recs[rec_id] = _RecSlot(
                child_rec_id=child,
                source=self.models[self._rec_model[r]],
                is_control=u_control < self._rec_control[r],
                model_items=[catalog[j] for j in ranked[r]],
                random_items=[catalog[j] for j in randoms[r]],
                last_updated=self.as_of - int(u_age * self._max_age),
            )
        return recs

    def segment(self, index: int) -> str:
        """The hidden segment (``new``, ``casual``, ...) of a user; ``test`` for index 0.

        Parameters
        ----------
        index : int
            The user's index.

        Returns
        -------
        str
            The segment name that drives the user's data.
        """
        return self._user(index).segment

    # ------------------------------------------------------------------ payload
    def payload(self, index: int, params: Mapping[str, str]) -> dict[str, Any]:
        """The JSON the User Profile API answers for one user.

        Parameters
        ----------
        index : int
            The user's index (see :meth:`find`).
        params : Mapping[str, str]
            The decoded query parameters as the server received them
            (``get_recs``, ``rec_id``, ``rec_type``, ``get_amp_props``,
            ``get_cohort_ids``, ``get_computations``, ``comp_id``,
            ``get_propensity``, ``prediction_id``, ``propensity_type``).

        Returns
        -------
        dict
            ``{"userData": {...}}`` with keys ``recommendations``, ``user_id``,
            ``device_id``, ``amp_props``, ``cohort_ids`` and, only when
            ``get_propensity=true``, ``propensity`` and ``propensities``. A fresh
            object: the caller may change it.

        Raises
        ------
        SampleRequestError
            When ``get_recs=true`` without ``rec_id``, or ``rec_type`` or
            ``propensity_type`` has an unsupported value.
        """
        user = self._user(index)
        recommendations: list[dict[str, Any]] | None = None
        if _flag(params, "get_recs"):
            rec_ids = _split_ids(params.get("rec_id"))
            if not rec_ids:
                raise SampleRequestError("rec_id is required when get_recs=true")
            rec_type = params.get("rec_type") or ""
            if rec_type not in ("", "model", "random"):
                raise SampleRequestError(f"Invalid rec_type: {rec_type}")
            if user.recs is not None:
                recommendations = [
                    self._rec_json(rec_id, user.recs[rec_id], rec_type)
                    for rec_id in rec_ids
                    if rec_id in user.recs
                ]

        amp_props: dict[str, Any] | None = None
        all_computations = _flag(params, "get_computations")
        comp_ids = _split_ids(params.get("comp_id"))
        if _flag(params, "get_amp_props") or all_computations or comp_ids:
            computations = self.user_computations(index)
            amp_props = self.user_properties(index) if _flag(params, "get_amp_props") else {}
            # One merged object: a computation named like a property shows the computation's value.
            if all_computations:
                amp_props.update(computations)
            for comp_id in comp_ids:
                if comp_id in computations or comp_id not in amp_props:
                    amp_props[comp_id] = computations.get(comp_id)

        cohort_ids = list(user.cohorts) if _flag(params, "get_cohort_ids") else None
        data: dict[str, Any] = {
            "recommendations": recommendations,
            "user_id": user.user_id,
            "device_id": user.device_id,
            "amp_props": amp_props,
            "cohort_ids": cohort_ids,
        }
        if _flag(params, "get_propensity"):
            propensity_type = params.get("propensity_type") or "score"
            if propensity_type not in ("score", "pct"):
                raise SampleRequestError(f"Invalid propensity_type: {propensity_type}")
            position = 0 if propensity_type == "score" else 1
            entries = []
            for prediction_id in _split_ids(params.get("prediction_id")):
                known = user.predictions.get(prediction_id)
                entries.append(
                    {
                        "prop": None if known is None else known[position],
                        "pred_id": prediction_id,
                        "prop_type": propensity_type,
                    }
                )
            data["propensity"] = entries[0]["prop"] if len(entries) == 1 else None
            data["propensities"] = entries
        return {"userData": data}

    # ------------------------------------------------------------------ changes
    def add_computation(self, name: str) -> None:
        """Create computation ``name``, enabled for every user (a name a property also has
        makes a clash: a merged answer shows the computation's value)."""
        self._removed_computations.discard(name)
        self._added_computations[name] = None

    def remove_computation(self, name: str) -> None:
        """Delete computation ``name``: answers no longer hold it."""
        self._added_computations.pop(name, None)
        self._removed_computations.add(name)

    def add_property(self, name: str) -> None:
        """Create user property ``name`` (a text value) on every synthetic user."""
        self._added_properties[name] = None

    def user_properties(self, index: int) -> dict[str, Any]:
        """What the org holds as user ``index``'s properties now (a fresh dict): the truth
        a properties-only answer shows."""
        props = dict(self._user(index).props)
        if index != 0:
            for name in self._added_properties:
                props[name] = f"p-{self._derived_number(index, name) % 1000}"
        return props

    def user_computations(self, index: int) -> dict[str, str | None]:
        """What the org holds as user ``index``'s computations now (a fresh dict): the
        truth a computations-only answer shows."""
        computations = {k: v for k, v in self._user(index).computations.items()
                        if k not in self._removed_computations}
        if index != 0:
            for name in self._added_computations:
                computations[name] = f"{self._derived_number(index, name) % 100_000 / 100:.2f}"
        return computations

    def check_split(self, profiles: Iterable[Any]) -> dict[str, int]:
        """Judge how answers that mixed properties and computations were told apart.

        Every key of every answer (each a cell of ``tables.properties`` or
        ``tables.computations``) is ``right`` (filed as the org holds it now, with its
        value), ``flagged`` (``ambiguous`` or ``unverified`` in ``profile.key_kinds``)
        or ``wrong`` (filed as the other kind, or a clash filed as one kind only).

        Parameters
        ----------
        profiles : iterable of UserProfile
            Profiles of this org's users (asked for properties and computations).

        Returns
        -------
        dict
            ``{"right": n, "flagged": n, "wrong": n}``.
        """
        counts = {"right": 0, "flagged": 0, "wrong": 0}
        for profile in profiles:
            index = self.find(user_id=profile.user_id, device_id=profile.device_id)
            if index is None:
                raise ValueError(f"not a user of this org: {profile.user_id!r}")
            truth = (self.user_properties(index), self.user_computations(index))
            filed = (profile.amp_props or {}, profile.computations or {})
            answered = set(filed[0]) | set(filed[1])
            kinds = profile.key_kinds
            for held, cells in zip(truth, filed):
                for key in answered & (set(held) | set(cells)):
                    if kinds.get(key) in ("ambiguous", "unverified"):
                        counts["flagged"] += 1
                    elif key in held and key in cells and cells[key] == held[key]:
                        counts["right"] += 1
                    elif key in held or key in cells:  # misfiled, or missing from where it belongs
                        counts["wrong"] += 1
        return counts

    def _derived_number(self, index: int, name: str) -> int:
        digest = hashlib.blake2b(f"{self.seed}:{index}:{name}".encode(), digest_size=6).digest()
        return int.from_bytes(digest, "big")

    @staticmethod
    def _rec_json(rec_id: str, slot: _RecSlot, rec_type: str) -> dict[str, Any]:
        if rec_type == "model":
            is_control = False
        elif rec_type == "random":
            is_control = True
        else:
            is_control = slot.is_control
        return {
            "rec_id": rec_id,
            "child_rec_id": slot.child_rec_id,
            "items": list(slot.random_items if is_control else slot.model_items),
            "is_control": is_control,
            "recommendation_source": slot.source,
            "last_updated": slot.last_updated,
        }
