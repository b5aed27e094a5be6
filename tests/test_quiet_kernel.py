"""``execute_report`` starts its kernel without the "TCP without encryption" warning.

The kernel is a child process writing to the same stderr as the caller (``make demo``
shows it), so the check reads the file descriptor, not ``sys.stderr``.
"""

from __future__ import annotations

import nbformat
import pytest

from amptools.notebooks import execute_report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_execute_report_prints_no_kernel_warning(tmp_path, capfd):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)

    execute_report(path)

    captured = capfd.readouterr()
    executed = nbformat.read(path, as_version=4)
    # The kernel did run (its stdout went into the notebook, not to ours).
    assert executed.cells[0].outputs[0]["text"] == "42\n"
    assert "without encryption" not in captured.err
    assert "WARNING" not in captured.err, captured.err
