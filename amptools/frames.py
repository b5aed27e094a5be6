"""What the analysis modules share: key columns, frame checks, deprecations, shared docs.

:mod:`amptools.tables`, :mod:`amptools.metrics`, :mod:`amptools.plots` (and
:mod:`amptools.snapshots`) take and give tidy frames that follow the same
conventions; this module is the one home of those conventions, so no analysis module
reaches into another for them:

- :data:`ID_COLUMNS` — the key columns that identify one user in every table, and
  :data:`LIST_COLUMNS`, what a recommendation list needs at least;
- :func:`require_columns` — the one "missing column" error (px's kind of message);
- :func:`deprecated_arguments` — the one deprecation path for argument names;
- :func:`shared_docs` — docstring pieces written once (seaborn's way);
- :func:`moved_names` — a module's old spelling of a name that moved, kept working
  with a DeprecationWarning.

Package-internal: users reach these through the modules above.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import pandas as pd

from .query import ID_TYPES

__all__ = [
    "ID_COLUMNS",
    "LIST_COLUMNS",
    "deprecated_arguments",
    "moved_names",
    "require_columns",
    "shared_docs",
]

#: The columns that identify one user in every table: the ids a user is asked by
#: (a profile fetched by device id has no user id, so both are the key).
ID_COLUMNS: tuple[str, ...] = ID_TYPES
#: The columns a recommendation list needs at least: its user, then each item at its rank.
LIST_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "rank", "item")


def require_columns(frame: pd.DataFrame, required: Iterable[str], function: str) -> None:
    """Raise one clear error naming the missing and the expected columns.

    Parameters
    ----------
    frame : DataFrame
        The table a function was given.
    required : iterable of str
        The columns it needs.
    function : str
        The public function's name, for the message.

    Raises
    ------
    TypeError
        When ``frame`` is not a DataFrame.
    ValueError
        When a column is missing: the message names it, the columns expected and
        the columns the frame has.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{function}() expects a pandas DataFrame first, got {type(frame).__name__}")
    required = list(dict.fromkeys(required))
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{function}(): missing column(s) {', '.join(map(repr, missing))}. "
            f"It expects the columns {', '.join(map(repr, required))}; "
            f"the frame has {', '.join(map(repr, map(str, frame.columns)))}."
        )


_Callable = TypeVar("_Callable", bound=Callable[..., Any])


def deprecated_arguments(*formerly_positional: str, **renamed: str) -> Callable[[_Callable], _Callable]:
    """Keep old spellings of a call working, with a DeprecationWarning naming the new one.

    Parameters
    ----------
    *formerly_positional : str
        Keyword-only parameters that used to be accepted by position right after the
        data argument(s), in their old order.
    **renamed : str
        ``old_name="new_name"`` for each renamed keyword.

    Every message starts with ``amptools.<module>.<function>()`` so a test run can turn
    exactly amptools' own deprecations into errors
    (``-W "error:amptools.:DeprecationWarning"``).  Put it above :func:`shared_docs`:
    it copies the docstring it finds.
    """

    def decorate(function: _Callable) -> _Callable:
        name = f"{function.__module__}.{function.__qualname__}()"
        parameters = inspect.signature(function).parameters.values()
        n_positional = sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            extra = args[n_positional:]
            if extra:
                if len(extra) > len(formerly_positional):
                    raise TypeError(f"{name} takes {n_positional} positional argument(s) but {len(args)} were given")
                names = formerly_positional[: len(extra)]
                given_twice = [n for n in names if n in kwargs]
                if given_twice:
                    raise TypeError(f"{name} got multiple values for {', '.join(given_twice)}")
                warnings.warn(f"{name}: pass {', '.join(f'{n}=' for n in names)} by keyword; "
                              "passing it by position is deprecated", DeprecationWarning, stacklevel=2)
                kwargs.update(zip(names, extra))
                args = args[:n_positional]
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{name} got both {old}= (deprecated) and {new}=; pass only {new}=")
                    warnings.warn(f"{name}: {old}= is deprecated, use {new}= (same meaning)",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return cast(_Callable, wrapper)

    return decorate


_Documented = TypeVar("_Documented", bound=Callable[..., Any])


def shared_docs(**pieces: str) -> Callable[[_Documented], _Documented]:
    """Fill a docstring's ``{name}`` placeholders with pieces written once (seaborn's way).

    Parameters
    ----------
    **pieces : str
        ``name="text"`` for each placeholder; ``{{`` and ``}}`` stand for braces.

    Returns
    -------
    callable
        A decorator that fills the docstring of the function it is given.
    """

    def decorate(function: _Documented) -> _Documented:
        if function.__doc__:
            function.__doc__ = function.__doc__.format(**pieces)
        return function

    return decorate


def moved_names(module: str, moved: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves old names with a DeprecationWarning.

    Parameters
    ----------
    module : str
        The module's dotted name (``"amptools.metrics"``), for the message.
    moved : mapping
        ``old_name -> (where it is now, the value)``.

    Returns
    -------
    callable
        Assign it to the module's ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, value = moved[name]
        warnings.warn(f"{module}.{name} is deprecated, use {where} (same value)", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
