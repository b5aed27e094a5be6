"""Opening amptools' SQLite files one way: private to their owner, ``~`` expanded, errors clear.

The profile cache, the cohort download cache and the shared budget each keep a
SQLite file that can hold personal data (answers, user ids). :func:`connect` opens
one the same way for all of them:

- ``~`` is expanded and missing folders are made;
- a new file is created readable and writable by its owner only (``0600``), and
  SQLite gives its ``-wal`` and ``-shm`` companions the same mode; an existing file
  keeps its mode (its owner chose it);
- WAL journaling (readers never wait for the writer) unless asked otherwise;
- anything that goes wrong while opening is one :class:`~amptools.errors.CacheError`
  naming the file and what to do (a folder, not a database, read-only, ...).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CacheError

__all__ = ["PRIVATE_MODE", "connect", "create_private", "expand", "journal_wal", "open_problem"]

#: The mode of every SQLite file amptools creates: its owner reads and writes it, nobody else.
PRIVATE_MODE = 0o600


def expand(path: str | os.PathLike[str]) -> str:
    """``path`` as a string with ``~`` expanded (``":memory:"`` as it is)."""
    text = os.fspath(path)
    return text if text == ":memory:" else str(Path(text).expanduser())


def create_private(path: Path) -> None:
    """Create ``path`` (and its folders) readable by its owner only, unless it exists.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode. A file that
    exists keeps its mode (its owner chose it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass  # another process created it meanwhile


def _writable(path: Path) -> bool:
    # The effective user's rights: the ones the failed open had.
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def open_problem(path: str, error: BaseException, *, what: str = "the cache") -> str:
    """Why the SQLite file ``path`` could not be opened, and what to do, in one sentence."""
    where = Path(path)
    if where.is_dir():
        why = "is a folder, not a file: give a file path such as profiles.sqlite"
    elif isinstance(error, sqlite3.DatabaseError) and "not a database" in str(error):
        why = ("is not an amptools cache (damaged, truncated or another kind of file): "
               "move it away or give another path")
    elif isinstance(error, (PermissionError, sqlite3.OperationalError)) and (
            not _writable(where.parent if where.parent.exists() else where)
            or (where.exists() and not _writable(where))):
        why = ("cannot be written (the file or its folder is read-only): give a path in a "
               "folder you can write to")
    elif isinstance(error, (FileExistsError, NotADirectoryError)):
        why = "lies under a file, not a folder: give a path in a folder"
    else:
        why = f"could not be opened ({type(error).__name__}: {error}): give another path"
    return f"{what} {path!r} {why}."


def journal_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL`` on ``connection``, waiting up to ``timeout`` seconds for
    another connection's write lock.

    SQLite answers this pragma "database is locked" at once, without waiting its busy
    timeout, while another connection holds the file's write lock (as one does while it
    sets a new file up: two processes opening one new cache together met it, and one went
    on without the cache). So this asks again, with pauses of 5 ms doubling up to 0.1 s.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def connect(
    path: str | os.PathLike[str],
    *,
    what: str = "the cache",
    timeout: float = 30.0,
    wal: bool = True,
    prepare: Callable[[sqlite3.Connection], Any] | None = None,
    **options: Any,
) -> sqlite3.Connection:
    """Open (creating it private to its owner) the SQLite file ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file; ``~`` is expanded, folders are made. ``":memory:"`` is a private
        in-memory database.
    what : str
        How messages name the file (``"the cache"``, ``"the cohort cache"``).
    timeout : float
        Seconds to wait for another connection's write lock.
    wal : bool
        Use WAL journaling (and ``synchronous=NORMAL``).
    prepare : callable(connection), optional
        Run on the new connection (creating tables, say); its errors are mapped too.
    **options
        Passed to :func:`sqlite3.connect` (``isolation_level``, ``check_same_thread``).

    Raises
    ------
    CacheError
        The file cannot be used; the message names it and says what to do. A failed
        connection is closed first.
    """
    target = expand(path)
    connection: sqlite3.Connection | None = None
    try:
        if target != ":memory:":
            create_private(Path(target))
        connection = sqlite3.connect(target, timeout=timeout, **options)
        if wal and target != ":memory:":
            journal_wal(connection, timeout)
            connection.execute("PRAGMA synchronous=NORMAL")
        if prepare is not None:
            prepare(connection)
    except BaseException as error:
        if connection is not None:
            connection.close()
        if isinstance(error, (sqlite3.Error, OSError, ValueError)):
            raise CacheError(open_problem(target, error, what=what)) from None
        raise
    return connection
