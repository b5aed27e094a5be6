"""What the benchmarks share: this checkout's amptools first on the path, and the command line.

A benchmark runs as a script, so this folder is on the path: ``from _common import
parse_options`` comes before any ``amptools`` import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The checkout's amptools, not whichever one is installed: a benchmark measures this code.
sys.path.insert(0, str(ROOT))


def parse_options(doc: str, argv: list[str] | None, **defaults: float | tuple[float, str]) -> argparse.Namespace:
    """A benchmark's options: ``--name`` for each keyword (``max_retries`` is ``--max-retries``).

    Parameters
    ----------
    doc : str
        The benchmark's docstring; its first line describes it in ``--help``.
    argv : list of str or None
        The arguments (None: the command line's).
    **defaults : int, float or (default, help)
        Each option's default, whose type the option takes; with a help text as a pair.

    Returns
    -------
    argparse.Namespace
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, spec in defaults.items():
        default, help_text = spec if isinstance(spec, tuple) else (spec, None)
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=help_text)
    return parser.parse_args(argv)
