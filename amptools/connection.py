"""Where a client comes from: the real Amplitude APIs, or the embedded sample org.

This is the one module that chooses between them, for both APIs amptools calls:
:func:`connect` gives a :class:`~amptools.client.ProfileClient` (the User Profile API)
and :func:`connect_cohorts` a :class:`~amptools.cohorts.CohortClient` (the Behavioral
Cohorts API), each for the real API when the environment holds the keys, else for the
embedded sample org (started once per process).

It is also the one place that knows which sample server a client talks to: a
:class:`~amptools.sample.SampleServer` registers its URL here while it runs, and
:func:`sample_server` answers for a client or a URL. The library's other modules ask
here (``client.is_sample``, the explorer's pick of sample users, the cohort client that
goes with a profile client) and never import :mod:`amptools.sample`; a server on
127.0.0.1 that did not register (a local proxy, another process) is not the sample org.

>>> import amptools as amp
>>> client = amp.connect()                          # doctest: +SKIP
>>> amp.connection.sample_server(client).org.n_users  # doctest: +SKIP
2000
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .client import ProfileClient
    from .cohorts import CohortClient
    from .sample import SampleServer

__all__ = [
    "cohort_client_for",
    "connect",
    "connect_cohorts",
    "is_sample",
    "new_sample_server",
    "register_sample_server",
    "sample_server",
    "unregister_sample_server",
]

# Read here rather than imported from client.py / cohorts.py, which load requests and
# pandas: `import amptools` must stay light, and it imports this module.
_PROFILE_KEY = "AMPLITUDE_SECRET_KEY"
_COHORTS_KEY = "AMPLITUDE_API_KEY"

_running: weakref.WeakValueDictionary[str, SampleServer] = weakref.WeakValueDictionary()
_shared: SampleServer | None = None
_lock = threading.Lock()
_shared_lock = threading.Lock()
_announced: set[str] = set()


# -- which sample server a client talks to -------------------------------------------------
def _address(url: str) -> str:
    """A URL as the registry keys it: scheme, host (``localhost`` is 127.0.0.1), port, path."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if host == "localhost":  # the sample server binds 127.0.0.1, which localhost reaches
        host = "127.0.0.1"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def register_sample_server(server: SampleServer) -> None:
    """Record that ``server`` answers at ``server.url`` (:meth:`SampleServer.start` calls it)."""
    with _lock:
        _running[_address(server.url)] = server


def unregister_sample_server(url: str) -> None:
    """Forget the sample server at ``url`` (:meth:`SampleServer.stop` calls it)."""
    with _lock:
        _running.pop(_address(url), None)


def sample_server(client_or_url: Any) -> SampleServer | None:
    """The embedded sample server of this process that a client (or a URL) talks to, if any.

    Parameters
    ----------
    client_or_url : ProfileClient, CohortClient or str
        A client (its ``base_url`` is used) or a base URL.

    Returns
    -------
    SampleServer or None
        The running server, whose ``org`` holds the ids it knows; None for any other
        URL (the real API, a local proxy, a sample server of another process).
    """
    url = client_or_url if isinstance(client_or_url, str) else getattr(client_or_url, "base_url", None)
    if not isinstance(url, str):
        return None
    with _lock:
        return _running.get(_address(url))


def is_sample(url: str) -> bool:
    """True when ``url`` is an embedded sample server running in this process."""
    return sample_server(url) is not None


def new_sample_server(**options: Any) -> SampleServer:
    """A new (not started) embedded sample org server; ``options`` go to ``SampleServer``.

    For a run that needs a server of its own (the CLI's demo raises its rate limit);
    :func:`connect` shares one per process.
    """
    from .sample import SampleServer

    return SampleServer(**options)


def _shared_sample_server() -> SampleServer:
    """The process's one embedded sample org server, started on first use."""
    global _shared
    with _shared_lock:  # not _lock: starting registers the server under that one
        if _shared is None:
            _shared = new_sample_server().start()
            atexit.register(_shared.stop)
        return _shared


# -- choosing the API ----------------------------------------------------------------------
def _announce(kind: str, message: str) -> None:
    if kind not in _announced:
        _announced.add(kind)
        print(f"amptools: {message}", file=sys.stdout)


def _chosen(sample: bool | None, *variables: str) -> bool:
    """Whether to use the sample org: as told, else when none of ``variables`` is set."""
    if sample is not None:
        return bool(sample)
    return not any(os.environ.get(name, "").strip() for name in variables)


def connect(*, sample: bool | None = None, **kwargs: Any) -> ProfileClient:
    """A client for the real Profile API when ``AMPLITUDE_SECRET_KEY`` is set, else the sample org.

    Without a key, the embedded sample org (a real HTTP server on 127.0.0.1 with
    synthetic users and the documented ``testUser``) is started once per process.
    Which of the two is used is said once.

    Parameters
    ----------
    sample : bool, optional
        ``True``: the embedded sample org whatever the environment holds; ``False``: the
        real API (a :class:`~amptools.errors.ConfigurationError` without a key). Either
        is used silently; by default the environment decides and it is said once.
    **kwargs
        Passed on to :class:`~amptools.client.ProfileClient` (``rate_limit``, ``timeout``,
        ``budget`` — a team's Redis URL, ...).

    Returns
    -------
    ProfileClient
    """
    from .client import ProfileClient

    if isinstance(kwargs.get("budget"), str):
        from .transport import Secret

        kwargs["budget"] = Secret(kwargs["budget"])  # it may hold a password: never a plain local

    if not _chosen(sample, _PROFILE_KEY):
        client = ProfileClient.from_env(**kwargs)
        if sample is None:
            _announce("real", f"using the Amplitude Profile API at {client.base_url} "
                              f"(key from {_PROFILE_KEY}).")
        return client
    server = _shared_sample_server()
    if sample is None:
        _announce("sample", f"{_PROFILE_KEY} is not set, so this uses the embedded sample org "
                            f"at {server.url} (synthetic data, {len(server.org.user_ids):,} "
                            "users and the documented testUser). Set the key to use your project.")
    return server.client(**kwargs)


def connect_cohorts(*, sample: bool | None = None, **kwargs: Any) -> CohortClient:
    """A CohortClient for the real API when both keys are set, else for the embedded sample org.

    ``AMPLITUDE_API_KEY`` and ``AMPLITUDE_SECRET_KEY`` both set: the real API.
    Neither: the sample org that :func:`connect` also uses. Only one: a
    :class:`~amptools.errors.ConfigurationError` naming the missing one (when the
    secret key is set for the Profile API, the Cohorts API still needs the API key too).

    Parameters
    ----------
    sample : bool, optional
        ``True``: the embedded sample org whatever the environment holds; ``False``: the
        real API. By default the environment decides.
    **kwargs
        Passed on to :class:`~amptools.cohorts.CohortClient` (``cache``, ``timeout``, ...).
    """
    if not _chosen(sample, _COHORTS_KEY, _PROFILE_KEY):
        from .cohorts import CohortClient

        return CohortClient.from_env(**kwargs)
    return _shared_sample_server().cohort_client(**kwargs)


def cohort_client_for(client: ProfileClient, **kwargs: Any) -> CohortClient:
    """The CohortClient that goes with a ProfileClient: its sample server's, or from the environment.

    Raises
    ------
    ConfigurationError
        For a client of the real API when ``AMPLITUDE_API_KEY`` or ``AMPLITUDE_SECRET_KEY``
        is missing.
    """
    server = sample_server(client)
    if server is not None:
        return server.cohort_client(**kwargs)
    from .cohorts import CohortClient

    return CohortClient.from_env(**kwargs)
