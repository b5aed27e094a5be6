"""Braze: write the Connected Content call, preview every user's message, plan the load, write import files.

A Braze campaign calls the Profile API from its message with Liquid's
``{% connected_content %}`` tag. This package answers, before the send:

- :func:`connected_content` writes the exact tag for a :class:`~amptools.query.ProfileQuery`
  (and :func:`guard` the usual abort guard); :func:`parse_tag` reads a tag back
  (:mod:`amptools.braze.tag`).
- :func:`preview` renders a message template for every fetched profile as Braze would,
  with a real Liquid engine speaking Braze's dialect (:mod:`amptools.braze.previews`,
  :mod:`amptools.braze.dialect`: its syntax, which tags and filters Braze supports and
  where it says so, the bounds of every render).
- :func:`call_plan` lays out, minute by minute, the Profile API calls a send makes
  against the org's 600-a-minute limit, and :func:`recommended_rate` the Braze rate
  limit that keeps the send under it (:mod:`amptools.braze.plan`).
- :func:`to_braze_csv` and :func:`to_braze_json` write Braze's user import files
  (:mod:`amptools.braze.files`; also available from :mod:`amptools.export`).

The secret key never appears in a tag: it uses ``:auth_credentials NAME`` (a credential
stored in Braze) or an ``Authorization`` header with a visible placeholder. The user
guide is ``docs/braze.md``.
"""

from __future__ import annotations

from .files import to_braze_csv, to_braze_json
from .plan import CALL_PLAN_COLUMNS, RENDERS_PER_MESSAGE, call_plan, recommended_rate
from ..frames import moved_names
from .previews import PREVIEW_COLUMNS, PREVIEW_STATUSES, RetryAbortWarning, preview, sort_for_review
from .tag import CACHE_MAX_AGE_RANGE as CACHE_MAX_AGE_RANGE  # constants of the former module
from .tag import DEFAULT_SAVE as DEFAULT_SAVE
from .tag import (
    KEY_PLACEHOLDER,
    UNKNOWN_USER_BODY,
    ConnectedContentCall,
    connected_content,
    guard,
    parse_tag,
    starter_template,
)

__all__ = [
    "CALL_PLAN_COLUMNS",
    "KEY_PLACEHOLDER",
    "PREVIEW_COLUMNS",
    "PREVIEW_STATUSES",
    "RENDERS_PER_MESSAGE",
    "UNKNOWN_USER_BODY",
    "ConnectedContentCall",
    "RetryAbortWarning",
    "call_plan",
    "connected_content",
    "guard",
    "parse_tag",
    "preview",
    "recommended_rate",
    "sort_for_review",
    "starter_template",
    "to_braze_csv",
    "to_braze_json",
]

# The old name of PREVIEW_STATUSES, kept working with a DeprecationWarning: it clashed with
# amptools.query.STATUSES, a fetch's outcomes.
__getattr__ = moved_names("amptools.braze", {"STATUSES": ("amptools.braze.PREVIEW_STATUSES", PREVIEW_STATUSES)})
