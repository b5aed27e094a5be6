"""amptools — Amplitude User Profile API toolkit for analysts in JupyterLab.

>>> import amptools as amp
>>> client = amp.connect()          # the real API with AMPLITUDE_SECRET_KEY, else the sample org
>>> profile = client.get_profile("testUser", recs=("testRecId",))
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

# The whole exception tree is public: errors.__all__ is its one list. (A star import,
# unlike a computed list, also tells type checkers the names are exported.)
from .errors import *  # noqa: F403
from .errors import __all__ as _ERROR_NAMES
from .models import ComputationNames, Propensity, Recommendation, UserProfile
from .query import ProfileQuery
from .ratelimit import Quota

if TYPE_CHECKING:
    from .bulk import ProfileSet
    from .client import DEFAULT_BASE_URL, ExposureWarning, ProfileClient
    from .sample import SampleServer

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
    "export",
    "metrics",
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
_SUBMODULES = frozenset({"braze", "budget", "bulk", "cache", "cohorts", "export", "metrics", "notebooks",
                         "plots", "sample", "snapshots", "tables", "widgets"})


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

_sample_server: SampleServer | None = None
_sample_lock = threading.Lock()
_announced: set[str] = set()


def _announce(kind: str, message: str) -> None:
    if kind not in _announced:
        _announced.add(kind)
        print(f"amptools: {message}", file=sys.stdout)


def _shared_sample_server() -> SampleServer:
    """The process's one embedded sample org server, started on first use."""
    global _sample_server
    with _sample_lock:
        if _sample_server is None:
            from .sample import SampleServer

            _sample_server = SampleServer().start()
            atexit.register(_sample_server.stop)
        return _sample_server


def connect(**kwargs: Any) -> ProfileClient:
    """A client for the real Profile API when ``AMPLITUDE_SECRET_KEY`` is set, else the sample org.

    Without a key, the embedded sample org (a real HTTP server on 127.0.0.1 with
    synthetic users and the documented ``testUser``) is started once per process.
    Which of the two is used is said once. Keyword arguments go to
    :class:`ProfileClient`.
    """
    from .client import ProfileClient

    if os.environ.get("AMPLITUDE_SECRET_KEY", "").strip():
        client = ProfileClient.from_env(**kwargs)
        _announce("real", f"using the Amplitude Profile API at {client.base_url} "
                          "(key from AMPLITUDE_SECRET_KEY).")
        return client
    server = _shared_sample_server()
    _announce("sample", f"AMPLITUDE_SECRET_KEY is not set, so this uses the embedded sample org "
                        f"at {server.url} (synthetic data, {len(server.org.user_ids):,} "
                        "users and the documented testUser). Set the key to use your project.")
    return server.client(**kwargs)
