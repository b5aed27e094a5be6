"""The amptools exception tree.

Every error amptools raises on purpose is an :class:`AmptoolsError`::

    AmptoolsError
    ├── InvalidQueryError (ValueError)   bad input, refused before any request
    ├── ConfigurationError (ValueError)  no key, unsafe base URL, bad settings
    ├── FetchCancelled                   the caller cancelled; partial results kept
    ├── PersonalDataError (ValueError)   personal data asked for without include_pii=True
    ├── CacheError                       the cache file cannot be opened, read or written
    ├── BrazeImportError (ValueError)    a table Braze's import would refuse or misread
    └── ProfileAPIError                  the service (or the way to it) failed
        ├── AuthenticationError          401: missing or wrong secret key
        ├── UnknownUserError             "User id and device id not seen before"
        ├── ThrottledError               429 or the throttle body, whatever the status
        ├── ServerError                  5xx
        ├── NotFoundError                404: wrong base URL or path
        ├── RedirectError                3xx: the key is never followed elsewhere
        ├── ResponseFormatError          not JSON, or not the documented shape
        └── TransportError               connection resets, timeouts, cut bodies

Only ``client.py`` knows the HTTP library; it maps every status and transport
failure to one of these leaves in one place (``client.map_response`` and
``client.map_transport_error``).  No message, ``repr`` or attribute of these
errors ever holds the secret key: request URLs carry only the query string.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bulk import ProfileSet  # for annotations only: errors.py imports nothing of ours

__all__ = [
    "AmptoolsError",
    "AmptoolsWarning",
    "AuthenticationError",
    "BrazeImportError",
    "CacheError",
    "ConfigurationError",
    "FetchCancelled",
    "InvalidQueryError",
    "NotFoundError",
    "PersonalDataError",
    "ProfileAPIError",
    "RedirectError",
    "ResponseFormatError",
    "ServerError",
    "ThrottledError",
    "TransportError",
    "UnknownUserError",
]


class AmptoolsError(Exception):
    """Base of every error amptools raises on purpose."""


class AmptoolsWarning(UserWarning):
    """Base of every warning amptools issues: something to know; nothing was lost.

    ``warnings.simplefilter("ignore", amptools.AmptoolsWarning)`` silences them all.
    """


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[AmptoolsWarning]) -> None:
    """Issue a warning that points at the user's line: the first frame outside amptools
    (however deep amptools called this), so the note shows where the user can act."""
    frame = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


class InvalidQueryError(AmptoolsError, ValueError):
    """The query or ids are malformed; refused before the network. Retrying cannot help."""


class ConfigurationError(AmptoolsError, ValueError):
    """The client is set up wrongly (no key, unsafe URL, bad limit). Retrying cannot help."""


def whole_number(name: str, value: object, *, minimum: int) -> int:
    """``value`` when it is a whole number ≥ ``minimum`` (a bool is not), else a
    :class:`ConfigurationError` that names the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number ≥ {minimum}, got {value!r}.")
    return value


class PersonalDataError(AmptoolsError, ValueError):
    """A property that looks like personal data was asked for without ``include_pii=True``."""


class CacheError(AmptoolsError):
    """The cache file cannot be used (damaged, a folder, read-only, from a newer amptools).

    The message names the path and what to do. A bulk fetch does not raise it: it warns
    (``CacheWarning``) and keeps its results in memory. Retrying cannot help.
    """


class BrazeImportError(AmptoolsError, ValueError):
    """A table Braze's user import would refuse or misread; ``problems`` lists every reason at once."""

    problems: tuple[str, ...] = ()


class ProfileAPIError(AmptoolsError):
    """The Profile API, or the way to it, failed.

    Attributes
    ----------
    status : int or None
        The HTTP status, or None when no response arrived.
    body : str
        The start of the response body (at most 500 characters).
    url : str or None
        The request URL: endpoint and query string, never the key.
    retry_after : float or None
        Seconds the service asked us to wait, when it said so.
    attempts : int
        How many requests were made for this call before giving up.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = (body or "")[:500]
        self.url = url
        self.retry_after = retry_after
        self.attempts = 1

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the HTTP context when an error crosses a process boundary.
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[ProfileAPIError], message: str, state: dict[str, Any]) -> ProfileAPIError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class AuthenticationError(ProfileAPIError):
    """401: the secret key is missing or wrong. Retrying cannot help; fix the key.

    ``partial`` holds what a bulk run had fetched before the failure (or None).
    """

    partial: ProfileSet | None = None


class UnknownUserError(ProfileAPIError):
    """The ids were never seen in this project (or belong to another). Not retried."""


class ThrottledError(ProfileAPIError):
    """The org is over its requests-per-minute limit. Retried after a pause."""

    retryable = True


class ServerError(ProfileAPIError):
    """5xx from the service. Retried with backoff."""

    retryable = True


class NotFoundError(ProfileAPIError):
    """404: the base URL or path is wrong. Retrying cannot help."""


class RedirectError(ProfileAPIError):
    """3xx: amptools never follows a redirect, so the key never reaches another host."""


class ResponseFormatError(ProfileAPIError):
    """The body is not JSON or not the documented shape; names the field. Not retried.

    Attributes
    ----------
    field : str or None
        The path of the offending field, e.g. ``userData.recommendations[0].items``.
    """

    field: str | None = None


class TransportError(ProfileAPIError):
    """No usable response: connection refused or reset, timeout, cut body. Retried."""

    retryable = True


class FetchCancelled(AmptoolsError):
    """The caller cancelled the fetch (a cancel event, or Ctrl-C). Nothing was lost.

    ``partial`` holds what a bulk run had fetched before it stopped (or None).
    """

    partial: ProfileSet | None = None
