"""The seams of the package (issue 23): no module reaches into another's private names."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "amptools"
MODULES = sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py"))


def private_uses(source: str, module: str) -> list[tuple[str, str]]:
    """``(other module, name)`` for each private name ``module`` takes from another module of
    the package: ``from .x import _y``, or ``x._y`` where ``x`` is an imported module of ours."""
    tree = ast.parse(source)
    found: list[tuple[str, str]] = []
    ours: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and not (node.module or "").startswith("amptools"):
            continue
        source_module = (node.module or "").removeprefix("amptools.").lstrip(".")
        for alias in node.names:
            if not source_module:  # from . import tables
                ours.add(alias.asname or alias.name)
            elif alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append((source_module, alias.name))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((node.value.id, node.attr))
    return [(other, name) for other, name in found if other.rsplit(".", 1)[-1] != module]


def test_the_walk_sees_a_private_import_and_a_private_attribute():
    source = "from .tables import _frame, ID_COLUMNS\nfrom . import metrics\nmetrics._kernel(1)\n"
    assert private_uses(source, "plots") == [("tables", "_frame"), ("metrics", "_kernel")]
    assert private_uses("from .tables import _frame\n", "tables") == []  # its own, re-imported


@pytest.mark.parametrize("path", MODULES, ids=str)
def test_no_module_takes_another_modules_private_names(path: Path) -> None:
    used = private_uses((PACKAGE / path).read_text(encoding="utf-8"), path.stem)
    assert not used, f"amptools/{path} uses private names of other modules: {used}"


def test_the_id_helpers_have_one_home() -> None:
    from amptools import bulk, controller, ids, query

    assert query.validate_id is ids.validate_id and query.ID_TYPES is ids.ID_TYPES
    assert bulk.unique_ids is ids.unique_ids and controller.sample_ids is ids.sample_ids


def test_a_whole_number_is_checked_one_way() -> None:
    import numpy as np

    from amptools.errors import ConfigurationError, InvalidQueryError, whole_number

    assert whole_number("n", np.int64(3), minimum=1) == 3
    for bad in (0, True, 1.5, "2", None):
        with pytest.raises(ConfigurationError, match=r"^n must be a whole number ≥ 1, got "):
            whole_number("n", bad, minimum=1)
    with pytest.raises(InvalidQueryError, match="≥ 1 and ≤ 75"):
        whole_number("batch", 76, minimum=1, maximum=75, error=InvalidQueryError)


def test_the_profiles_argument_has_one_name() -> None:
    from amptools import export, tables

    for name in ("as_profiles", "recommendations", "properties", "cohorts", "cohort_matrix", "computations",
                 "keys", "propensities", "summary"):
        function = getattr(tables, name)
        assert next(iter(inspect.signature(function).parameters)) == "profiles", name
        with pytest.warns(DeprecationWarning, match=rf"tables\.{name}\(\).*profiles"):
            function(data=[])
    assert next(iter(inspect.signature(export.marketing_table).parameters)) == "profiles"


def test_the_explorers_controller_is_named_for_what_it_is() -> None:
    import importlib
    import sys

    from amptools import controller

    sys.modules.pop("amptools.explorer", None)
    with pytest.warns(DeprecationWarning, match="amptools.controller"):
        old = importlib.import_module("amptools.explorer")
    assert old.ExplorerController is controller.ExplorerController


def test_a_previews_outcomes_are_not_a_fetchs() -> None:
    from amptools import braze, query

    assert braze.PREVIEW_STATUSES == ("rendered", "aborted", "error") != query.STATUSES
    with pytest.warns(DeprecationWarning, match="amptools.braze.STATUSES is deprecated, use amptools.braze.PREVIEW_STATUSES"):
        assert braze.STATUSES == braze.PREVIEW_STATUSES
