"""The user documentation: links resolve, pictures exist, every table and figure is described.

The README and docs/ are what users read, so a link to a file nobody has (the project's
internal ``../shared`` specs), a missing picture or an undocumented public table or
figure is a defect these tests catch.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import struct
from pathlib import Path

import plotly.graph_objects as go
import pytest

from amptools import plots, tables

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _prose(text: str) -> str:
    """The text without fenced code blocks (their brackets are Python, not links)."""
    return _FENCE.sub("", text)


def _links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(h) for h in _HEADING.findall(_prose(page.read_text(encoding="utf-8")))}


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    for name in ("README.md", "profile-api.md", "tables.md", "figures.md", "cli.md",
                 "reliability.md", "export.md", "braze.md", "cohorts.md", "quota.md"):
        assert name in names, f"docs/{name} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(page):
    checked = 0
    for target in _links(page):
        if not _relative(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        assert destination.exists(), f"{page.name}: link {target!r} points at nothing"
        if anchor and destination.suffix == ".md":
            assert anchor in _anchors(destination), (
                f"{page.name}: link {target!r}: {destination.name} has no heading #{anchor}")
        checked += 1
    if page.name != "README.md" or page.parent != ROOT:
        return
    # The README must lead users to the documentation.
    assert "docs/README.md" in _links(page)
    assert checked >= 10


def test_anchor_rule_matches_github():
    assert _anchor("`amptools fetch`") == "amptools-fetch"
    assert _anchor("Computations inside `amp_props`") == "computations-inside-amp_props"
    assert _anchor("`long_tail` — are a few items taking everything?") == \
        "long_tail--are-a-few-items-taking-everything"


def test_no_page_points_at_the_internal_specs():
    files = [ROOT / "README.md", *(p for p in DOCS.rglob("*") if p.is_file() and p.suffix != ".png")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{path.relative_to(ROOT)} mentions ../shared, which users do not have"
        assert "shared/PROFILE_API" not in text and "shared/DESIGN" not in text, path


def _figure_images() -> list[Path]:
    page = DOCS / "figures.md"
    return [(page.parent / t).resolve() for t in _links(page) if t.endswith(".png")]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == _PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "a PNG without its header chunk"
    return struct.unpack(">II", data[16:24])


def test_every_picture_of_figures_md_is_a_real_png():
    images = _figure_images()
    assert images, "docs/figures.md shows no picture"
    for path in images:
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run docs/make_images.py"
        data = path.read_bytes()
        width, height = _png_size(data)
        assert (width, height) == (900, 500), f"{path.name} is {width}x{height}, not 900x500"
        # A blank 900x500 plotly PNG is about 5 KB; a drawn figure is several times that.
        assert 15_000 < len(data) < 100_000, f"{path.name} is {len(data):,} bytes"
    on_disk = set((DOCS / "images").glob("*.png"))
    assert on_disk == set(images), f"pictures nobody shows: {sorted(p.name for p in on_disk - set(images))}"


def _figure_functions() -> list[str]:
    return [name for name in plots.__all__ if inspect.isfunction(getattr(plots, name))]


def _table_functions() -> list[str]:
    return [name for name in tables.__all__ if inspect.isfunction(getattr(tables, name))]


def test_every_table_function_is_documented():
    text = (DOCS / "tables.md").read_text(encoding="utf-8")
    names = _table_functions()
    assert "recommendations" in names and "summary" in names
    for name in names:
        assert f"`{name}`" in text or f"tables.{name}(" in text, f"tables.{name} is not in docs/tables.md"
    # Every column of every table constant is named on the page.
    for constant in ("RECOMMENDATION_COLUMNS", "COHORT_NAMED_COLUMNS", "COMPUTATION_COLUMNS",
                     "PROPENSITY_COLUMNS", "SUMMARY_COLUMNS"):
        for column in getattr(tables, constant):
            assert f"`{column}`" in text, f"column {column} of tables.{constant} is not in docs/tables.md"


def test_every_figure_is_documented_with_its_picture():
    text = (DOCS / "figures.md").read_text(encoding="utf-8")
    shown = {path.stem for path in _figure_images()}
    for name in _figure_functions():
        assert f"`{name}`" in text, f"plots.{name} is not in docs/figures.md"
        assert name in shown, f"docs/figures.md shows no picture of plots.{name}"


def test_make_images_builds_every_figure():
    # Building the figures (without rendering them) keeps the script in step with plots.py.
    spec = importlib.util.spec_from_file_location("make_images", DOCS / "make_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.figures()
    assert sorted(figures) == sorted(_figure_functions())
    for name, figure in figures.items():
        assert isinstance(figure, go.Figure), name
        assert figure.data, f"make_images.py draws an empty {name}"


def test_the_readme_leads_to_every_page():
    """The README's tour is short on purpose: every other page is one link away."""
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in _links(ROOT / "README.md")
              if _relative(target) and target.partition("#")[0]}
    for page in DOCS.glob("*.md"):
        assert page.resolve() in linked, f"README.md does not link to docs/{page.name}"


def _public_functions() -> list[str]:
    """``amptools``' own names, and every function of the modules it exposes (``amp.tables`` ...)."""
    import amptools

    names = [f"amptools.{name}" for name in amptools.__all__ if not name.startswith("_")]
    for module_name in sorted(amptools._SUBMODULES):
        module = importlib.import_module(f"amptools.{module_name}")
        names += [f"amptools.{module_name}.{name}" for name in getattr(module, "__all__", ())
                  if inspect.isfunction(getattr(module, name))]
    return names


def test_every_public_function_is_named_in_the_docs():
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    missing = [name for name in _public_functions()
               if not re.search(rf"\b{re.escape(name.rsplit('.', 1)[1])}\b", text)]
    assert "amptools.notebooks.build_report" in _public_functions()
    assert not missing, f"named on no page of README.md or docs/: {missing}"
