"""The amptools exception tree.

Every error amptools raises on purpose is an :class:`AmptoolsError`::

    AmptoolsError
    ├── InvalidQueryError (ValueError)   bad input, refused before any request
    ├── ConfigurationError (ValueError)  no key, unsafe base URL, bad settings
    ├── FetchCancelled                   the caller cancelled; partial results kept
    ├── PersonalDataError (ValueError)   personal data asked for without include_pii=True
    ├── CacheError                       the cache file cannot be opened, read or written
    ├── BrazeImportError (ValueError)    a table Braze's import would refuse or misread
    └── AmplitudeAPIError                an Amplitude API (or the way to it) failed
        ├── ProfileAPIError              the Profile API failed
        │   ├── AuthenticationError      401: missing or wrong key(s)
        │   ├── UnknownUserError         "User id and device id not seen before"
        │   ├── ThrottledError           429 or the throttle body, whatever the status
        │   ├── ServerError              5xx
        │   ├── NotFoundError            404: wrong base URL or path
        │   ├── RedirectError            3xx: the key is never followed elsewhere
        │   ├── ResponseFormatError      not JSON, or not the documented shape
        │   └── TransportError           connection resets, timeouts, cut bodies, too late
        └── CohortsAPIError              the Behavioral Cohorts API (or its storage host) failed

The leaves under :class:`ProfileAPIError` are the *kinds* of failure, and the
Cohorts API's errors have them too: a cohort download answered 401 is an
:class:`AuthenticationError` and a :class:`CohortsAPIError` (see
:meth:`CohortsAPIError.adopt`). For now every error the Cohorts API raises is also a
:class:`ProfileAPIError`, so ``except ProfileAPIError`` keeps catching what it caught
before; that is deprecated and ends in a later release: catch ``CohortsAPIError`` (or
``AmplitudeAPIError``, for both APIs).

Only ``transport.py`` knows the HTTP library; it maps every transport failure to a
leaf (``transport.map_transport_error``), and each API maps its statuses in one
place (``client.map_response``, ``cohorts.map_cohort_response``).  No message,
``repr`` or attribute of these errors ever holds a key: request URLs carry only the
query string.
"""

from __future__ import annotations

import numbers

import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bulk import ProfileSet  # for annotations only: errors.py imports nothing of ours

__all__ = [
    "AmplitudeAPIError",
    "AmptoolsError",
    "AmptoolsWarning",
    "AuthenticationError",
    "BrazeImportError",
    "CacheError",
    "CohortsAPIError",
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


def whole_number(name: str, value: object, *, minimum: int, maximum: int | None = None,
                 error: type[ValueError] | None = None) -> int:
    """``value`` as an ``int`` when it is a whole number (numpy's too; a bool is not) between
    ``minimum`` and ``maximum``, else ``error`` (a :class:`ConfigurationError` by default:
    the caller says which kind of mistake it is) naming ``name``. The one check of "a whole
    number ≥ N" everywhere."""
    number = int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        upper = f" and ≤ {maximum}" if maximum is not None else ""
        raise (error or ConfigurationError)(f"{name} must be a whole number ≥ {minimum}{upper}, got {value!r}.")
    return number


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


class AmplitudeAPIError(AmptoolsError):
    """An Amplitude API (the Profile API, the Behavioral Cohorts API), or the way to it, failed.

    Attributes
    ----------
    status : int or None
        The HTTP status, or None when no response arrived.
    body : str
        The start of the response body (at most 500 characters).
    url : str or None
        The request URL: endpoint and query string, never a key.
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


def _rebuild(cls: type[AmplitudeAPIError], message: str, state: dict[str, Any]) -> AmplitudeAPIError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ProfileAPIError(AmplitudeAPIError):
    """The Profile API, or the way to it, failed (its leaves are the kinds of failure).

    The attributes are :class:`AmplitudeAPIError`'s: ``status``, ``body``, ``url``,
    ``retry_after``, ``attempts``.
    """


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


class CohortsAPIError(AmplitudeAPIError):
    """The Behavioral Cohorts API, or its storage host, failed.

    A failure of a kind (401, 429, 5xx, 404, a redirect, an unreadable answer, the
    transport) is also that kind's class, e.g. :class:`AuthenticationError`; the
    attributes are :class:`AmplitudeAPIError`'s.

    Deprecated: for now every error the Cohorts API raises is also a
    :class:`ProfileAPIError`, as it was before this class existed; a later release
    ends that. Catch ``CohortsAPIError`` (or ``AmplitudeAPIError``) instead.
    """

    @classmethod
    def adopt(cls, error: AmplitudeAPIError) -> CohortsAPIError:
        """``error`` as a Cohorts API error of the same kind (message and attributes kept)."""
        if isinstance(error, cls):
            return error
        kind = type(error) if isinstance(error, ProfileAPIError) else ProfileAPIError
        adopted = _cohort_class(kind).__new__(_cohort_class(kind))
        Exception.__init__(adopted, *error.args)
        adopted.__dict__.update(error.__dict__)
        return adopted

    @classmethod
    def of(cls, kind: type[ProfileAPIError], message: str, **context: Any) -> CohortsAPIError:
        """A new Cohorts API error of ``kind`` (``ProfileAPIError`` for none in particular)."""
        return cls.adopt(kind(message, **context))

    def __reduce__(self) -> tuple[Any, ...]:
        for kind, made in _COHORT_KINDS.items():
            if type(self) is made:
                return (_rebuild_cohort, (kind, str(self), self.__dict__))
        return super().__reduce__()


_COHORT_KINDS: dict[type[ProfileAPIError], type[CohortsAPIError]] = {}


def _cohort_class(kind: type[ProfileAPIError]) -> type[CohortsAPIError]:
    """The class of Cohorts API errors of ``kind``: both a CohortsAPIError and ``kind``
    (its name is the kind's, as a message or a traceback shows it)."""
    made = _COHORT_KINDS.get(kind)
    if made is None:
        name = "CohortsAPIError" if kind is ProfileAPIError else kind.__name__
        made = type(name, (CohortsAPIError, kind), {"__module__": __name__,
                                                    "__qualname__": f"CohortsAPIError.{name}",
                                                    "__doc__": kind.__doc__})
        _COHORT_KINDS[kind] = made
        setattr(CohortsAPIError, name, made)  # where its qualified name says it is
    return made


def _rebuild_cohort(kind: type[ProfileAPIError], message: str, state: dict[str, Any]) -> CohortsAPIError:
    return CohortsAPIError.adopt(_rebuild(kind, message, state))


for _kind in (ProfileAPIError, AuthenticationError, UnknownUserError, ThrottledError, ServerError,
              NotFoundError, RedirectError, ResponseFormatError, TransportError):
    _cohort_class(_kind)  # made at import, so a pickled class is found in any process
del _kind
