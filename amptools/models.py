"""Parsed profiles: :class:`UserProfile`, :class:`Recommendation`, :class:`Propensity`.

``UserProfile.from_json`` turns one response body into a profile. It keeps "not
asked for" (None) apart from "asked, and empty" (an empty tuple or dict), turns
``last_updated`` into a UTC datetime, keeps item order (position is rank), keeps
the raw payload, and normalises the spellings the API has used over time:

- cohorts as ``cohort_ids`` or ``cohort_memberships``;
- propensities as ``propensity`` (one value), ``propensities`` (a list of
  ``{prop, pred_id, prop_type}``) or ``predictions`` (a list of
  ``{name, pred_id, probability, percentile}``).

Computations arrive inside ``amp_props`` keyed by name, as strings. Which keys
are computations is only knowable from the query: when only computations were
asked, all of ``amp_props`` is computations; when a list of computation ids was
asked, those keys are; when properties and *all* computations were asked in one
request, the org's computation names (:class:`ComputationNames`, learned by
:mod:`amptools.names`) tell them apart; a split query (``split_computations=True``)
answers them in two bodies.

A merged answer's every key gets a kind (:data:`KEY_KINDS`), kept in
``UserProfile.key_kinds``: ``property`` and ``computation`` go where they belong;
``ambiguous`` (a name both kinds have) and ``unverified`` (a name never seen apart)
go to both ``amp_props`` and ``computations``, so no value is silently misfiled —
the tables flag them.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from typing import Any, TypeGuard

from .errors import ResponseFormatError
from .query import ProfileQuery

__all__ = ["KEY_KINDS", "ComputationNames", "Propensity", "Recommendation", "UserProfile", "narrowed", "read_error",
           "user_data"]

#: What a key of a merged answer is: known apart as a property or a computation, a name
#: both kinds have (``ambiguous``), or a name never seen apart (``unverified``).
KEY_KINDS = ("property", "computation", "ambiguous", "unverified")

_RECOMMENDATION_FIELDS = frozenset(
    {"rec_id", "child_rec_id", "items", "is_control", "recommendation_source", "last_updated"}
)


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, answering plain dicts without the ABC machinery."""
    return type(value) is dict or isinstance(value, Mapping)


def _all_text(values: list[Any]) -> bool:
    """Every value is a ``str`` (one C-level pass; the common case of item and cohort lists)."""
    return all(map(isinstance, values, repeat(str)))


def _bad(field_path: str, message: str) -> ResponseFormatError:
    error = ResponseFormatError(f"unexpected response shape at {field_path}: {message}")
    error.field = field_path
    return error


def _optional_text(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _bad(path, f"expected text, got {type(value).__name__}")


# last_updated must fit the tables' UTC timestamps (pandas' range ends in 2262); a value
# outside these years is a broken answer, not a date to show.
_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)


def _given(value: Any, path: str, expected: str) -> bool:
    """False for a missing value (None); a boolean is an error, not the int Python takes it for."""
    if isinstance(value, bool):
        raise _bad(path, f"expected {expected}, got a boolean")
    return value is not None


def _timestamp(value: Any, path: str) -> datetime | None:
    if not _given(value, path, "Unix seconds"):
        return None
    if isinstance(value, (int, float)):
        try:
            if not math.isfinite(value):
                raise ValueError
            # Some Amplitude payloads carry milliseconds; no profile predates 2001-09-09.
            seconds = value / 1000 if value > 1e11 else value
            moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            moment = None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise _bad(path, f"expected Unix seconds or an ISO date, got {value[:40]!r}") from None
            return _timestamp(number, path)
        try:
            moment = parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        except (OverflowError, ValueError):
            moment = None
    else:
        raise _bad(path, f"expected Unix seconds, got {type(value).__name__}")
    if moment is None or not _EARLIEST <= moment < _LATEST:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise _bad(path, f"expected a time between 1970 and 2200, got {shown}")
    return moment


def _optional_bool(value: Any, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad(path, f"expected true or false, got {value!r}")


def _number(value: Any, path: str) -> float | None:
    if not _given(value, path, "a number"):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _bad(path, f"expected a number, got {value!r}") from None
    raise _bad(path, f"expected a number, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommendation set for one user.

    ``items`` keeps the service's order: position ``i`` is rank ``i + 1``. For a user
    in the control group (``is_control``) the items are a random selection, not
    the model's choice. ``extra`` keeps fields the documentation does not name.
    """

    rec_id: str
    child_rec_id: str | None
    items: tuple[str, ...]
    is_control: bool | None
    recommendation_source: str | None
    last_updated: datetime | None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: object, path: str = "recommendations[0]") -> Recommendation:
        if not _is_mapping(data):
            raise _bad(path, f"expected an object, got {type(data).__name__}")
        rec_id = data.get("rec_id")
        if not isinstance(rec_id, str):
            raise _bad(f"{path}.rec_id", f"expected text, got {rec_id!r}")
        items = data.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise _bad(f"{path}.items", f"expected a list, got {type(items).__name__}")
        if _all_text(items):
            clean = items  # nothing to convert or reject; tuple() below copies
        else:
            clean = []
            for index, item in enumerate(items):
                if isinstance(item, str):
                    clean.append(item)
                elif isinstance(item, (int, float)) and not isinstance(item, bool):
                    clean.append(str(item))
                else:
                    raise _bad(f"{path}.items[{index}]", f"expected an item id, got {item!r}")
        return cls(
            # Interned: the sets of all users share a few ids, and one object per id
            # keeps pickles small and makes grouping by rec_id hit the same object.
            rec_id=sys.intern(rec_id) if type(rec_id) is str else rec_id,
            child_rec_id=_optional_text(data.get("child_rec_id"), f"{path}.child_rec_id"),
            items=tuple(clean),
            is_control=_optional_bool(data.get("is_control"), f"{path}.is_control"),
            recommendation_source=_optional_text(
                data.get("recommendation_source"), f"{path}.recommendation_source"
            ),
            last_updated=_timestamp(data.get("last_updated"), f"{path}.last_updated"),
            extra=(
                {}
                if _RECOMMENDATION_FIELDS.issuperset(data)
                else {k: v for k, v in data.items() if k not in _RECOMMENDATION_FIELDS}
            ),
        )


@dataclass(frozen=True, slots=True)
class Propensity:
    """A prediction's propensity: ``score`` (probability 0–1) or ``pct`` (percentile 0–100)."""

    prediction_id: str | None
    propensity_type: str | None
    value: float | None


@dataclass(frozen=True)
class ComputationNames:
    """The names an org's answers use for computations, and for properties.

    Learned from answers that keep them apart (a properties-only and a computations-only
    answer for the same user, a computations-only answer beside a merged one, a value
    that is not text — computations are always text); see :mod:`amptools.names`. A
    merged answer's key is a computation when it is in ``computations`` only; a name in
    both sets (``clashes``) cannot be told apart in a merged answer.

    Attributes
    ----------
    computations, properties : frozenset of str
        The names seen as each kind.
    how : Mapping of str to str
        For each name, how (and when) each kind was seen, in words (``tables.keys``
        shows it). Not part of equality.
    """

    computations: frozenset[str] = frozenset()
    properties: frozenset[str] = frozenset()
    how: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def clashes(self) -> frozenset[str]:
        return self.computations & self.properties

    def __bool__(self) -> bool:
        return bool(self.computations or self.properties)

    def kind(self, key: str) -> str:
        """``property``, ``computation``, ``ambiguous`` (seen as both) or ``unverified``."""
        computation, prop = key in self.computations, key in self.properties
        if computation and prop:
            return "ambiguous"
        if computation:
            return "computation"
        return "property" if prop else "unverified"

    def unseen(self, keys: Iterable[str]) -> set[str]:
        """Keys that are neither a known computation nor a known property."""
        return {k for k in keys if k not in self.computations and k not in self.properties}

    def learn(self, *, computations: Iterable[str] = (), properties: Iterable[str] = ()) -> ComputationNames:
        """These names and the new ones together."""
        return ComputationNames(self.computations | frozenset(computations),
                                self.properties | frozenset(properties), self.how)

    @classmethod
    def known(cls, scope: str) -> ComputationNames:
        """What this process has learned for ``scope`` (see :func:`amptools.names.known`)."""
        from .names import known

        return known(scope)

    @classmethod
    def remember(cls, scope: str, names: ComputationNames) -> ComputationNames:
        """Add ``names`` to what this process knows for ``scope``; return the union."""
        from .names import remember

        return remember(scope, names)

    @classmethod
    def from_split(cls, payloads: Sequence[object]) -> ComputationNames:
        """The names two bodies of a split query show: properties, then computations."""
        props, comps = (user_data(p).get("amp_props") for p in payloads)
        return cls(frozenset(comps) if _is_mapping(comps) else frozenset(),
                   frozenset(props) if _is_mapping(props) else frozenset())


def narrowed(payload: object, query: ProfileQuery) -> dict[str, Any]:
    """The answer to ``query`` taken out of a body that answered a wider request (see
    :meth:`ProfileQuery.covers`): what ``query`` did not ask is null or absent, as the
    service answers; every other field, known or not, is kept."""
    data = dict(user_data(payload))
    recommendations = data.get("recommendations")
    if query.recs and isinstance(recommendations, list):
        by_id = {item.get("rec_id"): item for item in recommendations if isinstance(item, Mapping)}
        data["recommendations"] = [by_id[rec_id] for rec_id in query.recs if rec_id in by_id]
    elif not query.recs:
        data["recommendations"] = None
    props = data.get("amp_props")
    if not (query.amp_props or query.asks_computations):
        data["amp_props"] = None
    elif not query.amp_props and query.computation_ids is not None and _is_mapping(props):
        data["amp_props"] = {key: props.get(key) for key in query.computation_ids}
    if not query.cohort_ids:
        data["cohort_ids"] = None
        data.pop("cohort_memberships", None)
    if query.asks_propensities:
        listed = data.get("propensities")
        if isinstance(listed, list):
            entries = [e for e in listed if isinstance(e, Mapping) and e.get("pred_id") in query.predictions]
            entries.sort(key=lambda e: query.predictions.index(e["pred_id"]))
            data["propensities"] = entries
            data["propensity"] = entries[0].get("prop") if len(entries) == 1 else None
        predictions = data.get("predictions")
        if isinstance(predictions, list):
            data["predictions"] = [e for e in predictions if isinstance(e, Mapping)
                                   and e.get("pred_id", e.get("name")) in query.predictions]
    else:
        for name in ("propensity", "propensities", "predictions"):
            data.pop(name, None)
    return {**payload, "userData": data} if _is_mapping(payload) else {"userData": data}


def read_error(payload: object, query: ProfileQuery) -> str | None:
    """Why one body cannot be read as the answer to ``query`` (None when it can)."""
    try:
        UserProfile.from_json(payload, query)
    except ResponseFormatError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - the reason is kept with the body
        return f"unexpected response: {type(error).__name__}: {error}"
    return None


@dataclass(frozen=True, slots=True)
class UserProfile:
    """One user's profile as the Profile API returned it.

    A field is None when it was not asked for (or the service sent nothing), and
    an empty tuple or dict when it was asked for and is empty. ``raw`` is the whole
    response body; ``raw_computations`` the body of the separate computations
    request when the query was split (see ``ProfileQuery.parts``).
    ``key_kinds`` gives the kind (:data:`KEY_KINDS`) of every key of a merged answer
    (properties and computations asked in one request; empty otherwise): ``ambiguous``
    and ``unverified`` keys are in both ``amp_props`` and ``computations``.
    ``ambiguous_computations`` names the computations whose name is also a property's.
    ``names`` are the computation names the answer was read with.
    """

    user_id: str | None
    device_id: str | None
    recommendations: tuple[Recommendation, ...] | None
    amp_props: Mapping[str, Any] | None = field(default=None, hash=False)
    cohort_ids: tuple[str, ...] | None = None
    computations: Mapping[str, str | None] | None = field(default=None, hash=False)
    propensities: tuple[Propensity, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    raw_computations: Mapping[str, Any] | None = field(
        default=None, hash=False, compare=False, repr=False
    )
    ambiguous_computations: frozenset[str] = field(default=frozenset(), hash=False, repr=False)
    key_kinds: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False, repr=False)
    names: ComputationNames | None = field(default=None, hash=False, compare=False, repr=False)

    @property
    def id(self) -> str | None:
        """The user id, or the device id for an anonymous user."""
        return self.user_id if self.user_id is not None else self.device_id

    def recommendation(self, rec_id: str) -> Recommendation | None:
        """The recommendation set ``rec_id``, or None."""
        for rec in self.recommendations or ():
            if rec.rec_id == rec_id:
                return rec
        return None

    # -- parsing -------------------------------------------------------------------
    @classmethod
    def from_json(cls, payload: object, query: ProfileQuery | None = None,
                  names: ComputationNames | None = None) -> UserProfile:
        """Parse one response body.

        Parameters
        ----------
        payload : dict
            The JSON body, ``{"userData": {...}}``.
        query : ProfileQuery, optional
            The query that produced it; tells computations apart from properties.
        names : ComputationNames, optional
            The org's computation names, for a merged answer to properties and all
            computations; without them such an answer keeps everything in
            ``amp_props`` (computations None).

        Raises
        ------
        ResponseFormatError
            When the body is not the documented shape; ``error.field`` names the field.
        """
        return cls(**_profile_fields(payload, query, names))

    @classmethod
    def from_payloads(
        cls, payloads: Sequence[Mapping[str, Any]], query: ProfileQuery | None = None,
        names: ComputationNames | None = None,
    ) -> UserProfile:
        """Parse the one or two bodies that ``query.parts()`` asked for, as one profile."""
        if query is None or len(payloads) == 1:
            return cls.from_json(payloads[0], query, names)
        if query.merges_computations and len(payloads) == 2:
            query = query.split()  # the bodies of the two-request form of the same query
        parts = _parts(query)
        if len(parts) != len(payloads):
            raise ValueError(f"expected {len(parts)} payloads for this query, got {len(payloads)}")
        # Both bodies are parsed (and checked) in full; only one profile is built.
        main = _profile_fields(payloads[0], parts[0])
        computations = _profile_fields(payloads[1], parts[1])["computations"]
        main["computations"] = computations if computations is not None else {}
        main["raw_computations"] = payloads[1]
        return cls(**main)


def _profile_fields(payload: Any, query: ProfileQuery | None,
                    names: ComputationNames | None = None) -> dict[str, Any]:
    """The keyword arguments of :class:`UserProfile` for one response body."""
    kinds: dict[str, str] = {}
    data = user_data(payload)
    amp_props = data.get("amp_props", data.get("user_properties"))
    if amp_props is not None and not _is_mapping(amp_props):
        raise _bad("userData.amp_props", f"expected an object, got {type(amp_props).__name__}")
    computations = data.get("computations")
    if computations is not None:
        # A sibling spelling: computations in their own object.
        if not _is_mapping(computations):
            raise _bad("userData.computations", "expected an object")
        computations = {str(k): _computation_text(v) for k, v in computations.items()}
        amp_props = dict(amp_props) if amp_props is not None else None
    elif query is not None and query.asks_computations and amp_props is not None:
        # Builds new dicts from the payload's (never the payload's own).
        amp_props, computations, kinds = _split_computations(amp_props, query, names)
    elif query is not None and query.asks_computations:
        # Asked, and the merged object is null: no computations (listed ones are null).
        computations = dict.fromkeys(query.computation_ids or ())
    elif amp_props is not None:
        amp_props = dict(amp_props)  # a copy: the profile never shares the payload's dict
    return dict(
        user_id=_optional_text(data.get("user_id"), "userData.user_id"),
        device_id=_optional_text(data.get("device_id"), "userData.device_id"),
        recommendations=_recommendations(data.get("recommendations")),
        amp_props=amp_props,
        cohort_ids=_cohorts(data),
        computations=computations,
        propensities=_propensities(data, query),
        raw=payload,
        ambiguous_computations=frozenset(k for k, kind in kinds.items()
                                         if kind == "ambiguous" and computations and k in computations),
        key_kinds=kinds,
        names=names if kinds else None,
    )


@functools.lru_cache(maxsize=64)
def _cached_parts(query: ProfileQuery) -> tuple[ProfileQuery, ...]:
    return query.parts()


def _parts(query: ProfileQuery) -> tuple[ProfileQuery, ...]:
    """``query.parts()``, built once per query: a bulk parse asks for it per user, and
    building the two sub-queries (with their validation) cost a fifth of the parse."""
    try:
        return _cached_parts(query)
    except TypeError:  # an unhashable query (a subclass with list fields)
        return query.parts()


def user_data(payload: Any) -> Mapping[str, Any]:
    if not _is_mapping(payload):
        raise _bad("(body)", f"expected a JSON object, got {type(payload).__name__}")
    data = payload.get("userData")
    if data is None:
        if "error" in payload:
            raise _bad("userData", f"the service answered an error: {payload['error']!r}")
        raise _bad("userData", "missing")
    if not _is_mapping(data):
        raise _bad("userData", f"expected an object, got {type(data).__name__}")
    return data


def _recommendations(value: Any) -> tuple[Recommendation, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad("userData.recommendations", f"expected a list, got {type(value).__name__}")
    return tuple(
        Recommendation.from_json(item, f"userData.recommendations[{i}]")
        for i, item in enumerate(value)
    )


def _cohorts(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    name = "cohort_ids" if data.get("cohort_ids") is not None else "cohort_memberships"
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad(f"userData.{name}", f"expected a list, got {type(value).__name__}")
    if _all_text(value):
        return tuple(value)
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            item = item.get("cohort_id", item.get("id"))
        text = _optional_text(item, f"userData.{name}[{i}]")
        if text is None:
            raise _bad(f"userData.{name}[{i}]", "expected a cohort id, got null")
        out.append(text)
    return tuple(out)


def _computation_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _split_computations(
    amp_props: Mapping[str, Any], query: ProfileQuery, names: ComputationNames | None
) -> tuple[dict[str, Any] | None, dict[str, str | None], dict[str, str]]:
    """``(properties, computations, kinds)`` of one ``amp_props`` object; ``kinds`` is
    filled for a merged answer (properties and computations asked together)."""
    ids = query.computation_ids
    if not query.amp_props:
        # Only computations were asked: everything in amp_props is one.
        return None, {k: _computation_text(v) for k, v in amp_props.items()}, {}
    names = names if names is not None else ComputationNames()
    props: dict[str, Any] = {}
    computations: dict[str, str | None] = dict.fromkeys(ids) if ids is not None else {}
    kinds: dict[str, str] = {}
    for key, value in amp_props.items():
        # Computations are text (or null): any other value is a property's.
        typed = value is not None and not isinstance(value, str)
        if ids is not None:
            # Listed: the query says which keys are computations, unless a property
            # has the name too.
            kind = "property"
            if key in computations:
                kind = "ambiguous" if typed or key in names.properties else "computation"
        else:
            kind = names.kind(key)
            if typed:
                kind = "ambiguous" if key in names.computations else "property"
        kinds[key] = kind
        if kind != "computation":
            props[key] = value
        if kind == "computation" or (kind in ("ambiguous", "unverified") and not typed):
            computations[key] = _computation_text(value)
    return props, computations, kinds


def _objects_in(value: object, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each object of the list ``userData.<name>`` with its path; anything else is an error."""
    if not isinstance(value, list):
        raise _bad(f"userData.{name}", f"expected a list, got {type(value).__name__}")
    for i, entry in enumerate(value):
        path = f"userData.{name}[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(path, f"expected an object, got {type(entry).__name__}")
        yield path, entry


def _propensities(data: Mapping[str, Any], query: ProfileQuery | None) -> tuple[Propensity, ...] | None:
    listed = data.get("propensities")
    if listed is not None:
        out = []
        for path, entry in _objects_in(listed, "propensities"):
            out.append(
                Propensity(
                    prediction_id=_optional_text(entry.get("pred_id"), f"{path}.pred_id"),
                    propensity_type=_optional_text(entry.get("prop_type"), f"{path}.prop_type"),
                    value=_number(entry.get("prop"), f"{path}.prop"),
                )
            )
        return tuple(out)
    predictions = data.get("predictions")
    if predictions is not None:
        out = []
        for path, entry in _objects_in(predictions, "predictions"):
            pred_id = _optional_text(entry.get("pred_id", entry.get("name")), f"{path}.pred_id")
            for key, kind in (("probability", "score"), ("percentile", "pct")):
                if entry.get(key) is not None:
                    out.append(Propensity(pred_id, kind, _number(entry[key], f"{path}.{key}")))
        return tuple(out)
    if "propensity" in data:
        value = _number(data["propensity"], "userData.propensity")
        if value is None:
            asked = query is not None and query.asks_propensities
            return () if asked else None
        prediction: str | None = None
        propensity_type: str | None = None
        if query is not None and len(query.predictions) == 1:
            prediction, propensity_type = query.predictions[0], query.propensity_type
        return (Propensity(prediction, propensity_type, value),)
    if query is not None and query.asks_propensities:
        return ()
    return None
