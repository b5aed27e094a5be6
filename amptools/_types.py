"""Names for the types that cross amptools' public boundaries.

Kept apart from the modules that use them so any layer can import them without
pulling in another layer (this module imports only :mod:`amptools.models`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .models import UserProfile

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CohortNamesLike", "HasCohortNames", "HasProfiles", "JSONObject", "PathLike",
           "ProfilesLike"]

#: A file system path as the standard library takes it.
PathLike: TypeAlias = str | os.PathLike[str]

#: One decoded JSON object (a Profile API response body). Its values are whatever JSON
#: holds, which the models check field by field.
JSONObject: TypeAlias = Mapping[str, Any]


class HasProfiles(Protocol):
    """Anything with ``.profiles`` (a :class:`~amptools.ProfileSet`)."""

    @property
    def profiles(self) -> Sequence[UserProfile]: ...


class HasCohortNames(Protocol):
    """Anything that lists cohorts by id (a :class:`~amptools.cohorts.CohortClient`)."""

    def cohort_names(self) -> Mapping[str, str]: ...


#: Where cohort names come from (see :func:`amptools.tables.cohort_names`): the frame of
#: ``CohortClient.list_cohorts()``, ``{cohort_id: name}``, a CohortClient, or None.
CohortNamesLike: TypeAlias = "pd.DataFrame | Mapping[str, str] | HasCohortNames | None"


#: What the tables and exports accept: a ProfileSet, profiles or raw response bodies,
#: or a single one of these (see :func:`amptools.tables.as_profiles`).
ProfilesLike: TypeAlias = (
    "HasProfiles | UserProfile | JSONObject | Iterable[UserProfile | JSONObject]"
)
