"""Names for the types that cross amptools' public boundaries.

Kept apart from the modules that use them so any layer can import them without
pulling in another layer (this module imports only :mod:`amptools.models`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from .models import UserProfile

__all__ = ["HasProfiles", "JSONObject", "PathLike", "ProfilesLike"]

#: A file system path as the standard library takes it.
PathLike: TypeAlias = "str | os.PathLike[str]"

#: One decoded JSON object (a Profile API response body). Its values are whatever JSON
#: holds, which the models check field by field.
JSONObject: TypeAlias = Mapping[str, Any]


class HasProfiles(Protocol):
    """Anything with ``.profiles`` (a :class:`~amptools.ProfileSet`)."""

    @property
    def profiles(self) -> Sequence[UserProfile]: ...


#: What the tables and exports accept: a ProfileSet, profiles or raw response bodies,
#: or a single one of these (see :func:`amptools.tables.as_profiles`).
ProfilesLike: TypeAlias = (
    "HasProfiles | UserProfile | JSONObject | Iterable[UserProfile | JSONObject]"
)
