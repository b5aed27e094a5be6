"""The package type-checks under ``mypy --strict``.

``py.typed`` is shipped, so users' own type checkers read our annotations: they must be
true. The configuration lives in pyproject.toml's ``[tool.mypy]`` (strict, Python 3.11,
``files = amptools``); these tests run it exactly as a developer would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_package_passes_mypy_strict() -> None:
    result = _mypy()
    assert result.returncode == 0, (
        f"mypy --strict failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


def test_configuration_is_strict(tmp_path: Path) -> None:
    # Guards the test above against a configuration that checks nothing: the same
    # config must reject an unannotated function.
    bad = tmp_path / "untyped.py"
    bad.write_text("def double(x):\n    return x * 2\n")
    result = _mypy("--config-file", str(ROOT / "pyproject.toml"), str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "missing a type annotation" in result.stdout, result.stdout
