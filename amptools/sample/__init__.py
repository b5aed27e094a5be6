"""The embedded User Profile API: a deterministic sample org and a real HTTP server.

>>> from amptools.sample import SampleServer
>>> with SampleServer() as srv:  # doctest: +SKIP
...     client = srv.client()
"""

from __future__ import annotations

from amptools.sample.cohorts import SampleCohorts, StorageHost
from amptools.sample.dataset import SampleOrg, SampleRequestError, load_definition
from amptools.sample.server import Arrival, Change, Faults, SampleServer, serve

__all__ = [
    "Arrival",
    "Change",
    "Faults",
    "SampleCohorts",
    "SampleOrg",
    "SampleRequestError",
    "SampleServer",
    "StorageHost",
    "load_definition",
    "serve",
]
