"""Files on disk, for every writer of the package: whole or not at all, private when they hold personal data.

Package-internal: users reach :func:`write_atomic`, :data:`PRIVATE_MODE` and
:data:`PERSONAL_DATA_ATTR` through :mod:`amptools.export` (see ``docs/export.md``).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from ._types import PathLike

__all__ = [
    "ENCODE_ERRORS",
    "PERSONAL_DATA_ATTR",
    "PRIVATE_MODE",
    "encoded_size",
    "is_private",
    "staged_files",
    "write_atomic",
]

#: ``DataFrame.attrs`` key that marks a table holding personal data (set by
#: :func:`amptools.export.marketing_table` with ``include_pii=True``); its files get
#: :data:`PRIVATE_MODE`.
PERSONAL_DATA_ATTR = "amptools.personal_data"
#: The mode of a new file that holds personal data: readable and writable by its owner only.
PRIVATE_MODE = 0o600


def _replace_unencodable(error: UnicodeError) -> tuple[bytes, int]:
    # One U+FFFD per character that cannot be encoded (lone surrogates). As bytes:
    # CPython's UTF-8 encoder takes only ASCII text, or bytes, from a handler.
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "\ufffd".encode() * (error.end - error.start), error.end


#: The ``errors=`` of every text file the package writes: text that cannot be encoded in
#: UTF-8 (a lone surrogate, valid in JSON) becomes U+FFFD instead of failing.
ENCODE_ERRORS = "amptools.replacement-character"
codecs.register_error(ENCODE_ERRORS, _replace_unencodable)


def encoded_size(text: str) -> int:
    """Bytes ``text`` takes in a file written by this package (UTF-8, U+FFFD for the unencodable)."""
    return len(text.encode("utf-8", ENCODE_ERRORS))


def is_private(df: pd.DataFrame, private: bool | None) -> bool:
    """Whether files written from ``df`` are created :data:`PRIVATE_MODE`: ``private``, or the table's mark."""
    return bool(df.attrs.get(PERSONAL_DATA_ATTR, False)) if private is None else bool(private)


@contextlib.contextmanager
def write_atomic(
    path: PathLike,
    *,
    mode: int | None = None,
    binary: bool = False,
) -> Iterator[IO[Any]]:
    """Write a file whole or not at all.

    The content goes to a temporary file in the same folder, which replaces
    ``path`` (:func:`os.replace`) only when the ``with`` block ends without an
    error; on an error the temporary file is removed and ``path`` is left as it
    was. A symbolic link is followed: the file it points to is replaced.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its folder must exist.
    mode : int, optional
        Permission bits of a **new** file, e.g. :data:`PRIVATE_MODE` (0600) for
        personal data; the process umask still applies. None: the usual
        ``0666`` minus the umask. An existing file keeps its own mode.
    binary : bool, default False
        Yield a binary stream. Otherwise a text stream: UTF-8, no newline
        translation (``newline=""``), and text that cannot be encoded (lone
        surrogates) written as U+FFFD.

    Yields
    ------
    file object
        The stream to write to.

    Examples
    --------
    >>> with write_atomic("out.csv", mode=PRIVATE_MODE) as stream:   # doctest: +SKIP
    ...     stream.write("user_id\\n")
    """
    target = Path(os.path.realpath(path))
    with _staged(target, mode=mode, binary=binary) as (stream, temporary):
        yield stream
    os.replace(temporary, target)


@contextlib.contextmanager
def _staged(target: Path, *, mode: int | None, binary: bool) -> Iterator[tuple[IO[Any], Path]]:
    """A stream to a temporary file beside ``target``, flushed to disk and given the mode
    ``target`` will have; removed again when the block fails (or when the caller's later
    rename does: see :func:`staged_files`)."""
    try:
        kept_mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        kept_mode = None
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # os.open applies the umask to the mode, as open() does for a new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666 if mode is None else mode)
    try:
        if binary:
            stream: IO[Any] = os.fdopen(descriptor, "wb")
        else:
            stream = os.fdopen(descriptor, "w", encoding="utf-8", newline="", errors=ENCODE_ERRORS)
    except BaseException:
        os.close(descriptor)
        temporary.unlink(missing_ok=True)
        raise
    try:
        with stream:
            yield stream, temporary
            stream.flush()
            os.fsync(stream.fileno())
        if kept_mode is not None:
            os.chmod(temporary, kept_mode)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_files(paths: list[Path], *, mode: int | None = None) -> Iterator[list[IO[str]]]:
    """Write several text files as one: all of them replace their targets, or none does.

    Each file is written to a temporary name beside its target; only when the ``with``
    block ends without an error, and every file is on disk, are they renamed into place,
    one after the other. On an error every temporary file is removed and every target is
    left as it was.
    """
    targets = [Path(os.path.realpath(path)) for path in paths]
    temporaries: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            streams: list[IO[str]] = []
            for target in targets:
                stream, temporary = stack.enter_context(_staged(target, mode=mode, binary=False))
                temporaries.append(temporary)
                streams.append(stream)
            yield streams
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
