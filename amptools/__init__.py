"""amptools — Amplitude User Profile API toolkit for analysts in JupyterLab.

>>> import amptools as amp
>>> client = amp.connect()          # the real API with AMPLITUDE_SECRET_KEY, else the sample org
>>> profile = client.get_profile("testUser", recs=("testRecId",))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The whole exception tree is public: errors.__all__ is its one list. (A star import,
# unlike a computed list, also tells type checkers the names are exported.)
from .connection import connect
from .errors import *  # noqa: F403
from .errors import __all__ as _ERROR_NAMES
from .models import ComputationNames, Propensity, Recommendation, UserProfile
from .query import ProfileQuery
from .ratelimit import Quota

if TYPE_CHECKING:
    from .bulk import ProfileSet
    from .client import DEFAULT_BASE_URL, ExposureWarning, ProfileClient

__version__ = "0.1.0"

__all__ = [
    "ComputationNames",
    "DEFAULT_BASE_URL",
    "ExposureWarning",
    "ProfileClient",
    "ProfileQuery",
    "ProfileSet",
    "Propensity",
    "Quota",
    "Recommendation",
    "UserProfile",
    "__version__",
    "braze",
    "budget",
    "bulk",
    "cache",
    "cohorts",
    "connect",
    "connection",
    "export",
    "metrics",
    "names",
    "notebooks",
    "plots",
    "sample",
    "snapshots",
    "tables",
    "widgets",
]
__all__ += _ERROR_NAMES
__all__.sort()

# Submodules load on first use: `import amptools` stays fast, and ipywidgets or
# plotly are imported only by those who use the explorer or the figures.
_SUBMODULES = frozenset({"braze", "budget", "bulk", "cache", "cohorts", "connection", "export", "metrics",
                         "names", "notebooks", "plots", "sample", "snapshots", "tables", "widgets"})


# Names whose module needs requests (the client) or pandas (bulk) load on first use too,
# so that the SQLite cache, the models and the queries import without them.
_LAZY_NAMES = {"DEFAULT_BASE_URL": "client", "ExposureWarning": "client", "ProfileClient": "client",
               "ProfileSet": "bulk"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'amptools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_LAZY_NAMES))
