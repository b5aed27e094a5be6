"""One module picks the real API or the sample org, and knows which sample server a client talks to."""

from __future__ import annotations

import ast
import http.server
import threading
from pathlib import Path

import pytest

import amptools as amp
from amptools import connection
from amptools.client import ProfileClient
from amptools.cohorts import CohortClient
from amptools.errors import ConfigurationError
from amptools.sample import SampleServer

PACKAGE = Path(amp.__file__).resolve().parent


# -- the layout: library modules import nothing from amptools.sample ------------------------
def _imported_modules(tree: ast.AST, package: str) -> list[tuple[str, str | None, int]]:
    """(absolute module, enclosing top-level function or None, line) of every import in a module."""
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                found.append((base, inner, child.lineno))
                # `from . import sample` imports the module amptools.sample.
                found.extend((f"{base}.{alias.name}", inner, child.lineno) for alias in child.names)
            visit(child, inner)

    visit(tree, None)
    return found


def _sample_imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, str | None, int]]:
    package = ".".join(("amptools", *path.parent.relative_to(root).parts))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(module, function, line) for module, function, line in _imported_modules(tree, package)
            if module == "amptools.sample" or module.startswith("amptools.sample.")]


def test_library_modules_import_nothing_from_the_sample_package():
    offenders = []
    library = [path for path in sorted(PACKAGE.rglob("*.py")) if "sample" not in path.relative_to(PACKAGE).parts]
    assert PACKAGE / "widgets.py" in library and PACKAGE / "sample" / "server.py" not in library
    for path in library:
        name = path.relative_to(PACKAGE).as_posix()
        for module, function, line in _sample_imports(path):
            if name == "connection.py":  # the one place that starts the sample org
                continue
            if name == "cli.py" and function == "cmd_sample_server":  # `amptools sample-server`
                continue
            offenders.append(f"{name}:{line} imports {module} (in {function or 'the module'})")
    assert not offenders, "library modules must ask amptools.connection instead:\n" + "\n".join(offenders)


def test_the_import_walk_sees_every_form_of_import():
    source = ("from .sample import SampleOrg\nfrom . import sample\nimport amptools.sample.server\n"
              "def f():\n    from .sample.server import running\n"
              "if True:\n    from amptools.query import ProfileQuery\n")
    found = {(module, function) for module, function, _ in
             _imported_modules(ast.parse(source), "amptools")
             if module.startswith("amptools.sample")}
    assert ("amptools.sample", None) in found
    assert ("amptools.sample.server", None) in found
    assert ("amptools.sample.server", "f") in found
    assert not any(module.startswith("amptools.query") for module, _ in found)


# -- which sample server a client talks to ------------------------------------------------
@pytest.fixture(scope="module")
def small_org():
    with SampleServer(n_users=50) as server:
        yield server


def test_the_explorer_offers_ids_its_own_server_knows(small_org):
    from amptools.widgets import ProfileExplorer

    explorer = ProfileExplorer(small_org.client(), sample_size=40)
    assert explorer.users.method == "sample"
    picked = explorer.users.ids
    assert len(picked) == 40 and picked[0] == "testUser"
    unknown = [user_id for user_id in picked if small_org.org.find(user_id=user_id) is None]
    assert not unknown, f"ids the 50-user server does not know: {unknown[:5]}"
    explorer.users.id_type = "device_id"
    assert all(small_org.org.find(device_id=d) is not None for d in explorer.users.ids)
    # Its cohort client is that server's too.
    assert connection.sample_server(explorer.controller.cohort_names) is small_org


def test_the_explorer_fetches_its_pick_without_unknown_users(small_org):
    from amptools.widgets import ProfileExplorer

    explorer = ProfileExplorer(small_org.client(rate_limit=100_000), sample_size=12)
    explorer.options.recs.value = []
    explorer.options.computations.value = "none"
    explorer.options.predictions.value = []
    explorer.options.cohort_ids.value = True
    explorer.fetch_button.click()
    assert explorer.wait(60)
    result = explorer.controller.result
    assert result.counts == {"ok": 12, "not_found": 0, "failed": 0}


def test_is_sample_means_a_registered_sample_server_not_a_loopback_host(small_org):
    assert small_org.client().is_sample and small_org.cohort_client().is_sample
    assert connection.sample_server(small_org.client()) is small_org
    assert connection.sample_server(small_org.url.replace("127.0.0.1", "localhost")) is small_org
    # A local proxy (any other server on 127.0.0.1) is not the embedded sample org.
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        assert not ProfileClient("a-key", base_url=url).is_sample
        assert not CohortClient("api", "secret", base_url=url).is_sample
        assert connection.sample_server(url) is None
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert not ProfileClient("a-key").is_sample


def test_a_stopped_server_is_forgotten():
    server = SampleServer(n_users=5).start()
    client = server.client()
    assert client.is_sample
    server.stop()
    assert not client.is_sample and connection.sample_server(client) is None


# -- choosing the API ---------------------------------------------------------------------
def test_connect_chooses_by_the_environment_or_as_told(monkeypatch, sample_server):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    shared = connection.sample_server(amp.connect())
    assert shared is not None and shared is not sample_server
    assert connection.sample_server(amp.cohorts.connect()) is shared
    with pytest.raises(ConfigurationError, match="AMPLITUDE_SECRET_KEY is not set"):
        amp.connect(sample=False)
    # A key in the environment: the real API, unless the sample org is asked for.
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", sample_server.secret_key)
    monkeypatch.setenv("AMPLITUDE_PROFILE_API_URL", sample_server.url)
    assert connection.sample_server(amp.connect()) is sample_server  # the URL the environment gave
    assert connection.sample_server(amp.connect(sample=True)) is shared
    with pytest.raises(ConfigurationError, match="AMPLITUDE_API_KEY is not set"):
        amp.cohorts.connect()
    assert connection.sample_server(amp.cohorts.connect(sample=True)) is shared


def test_the_cohort_client_goes_with_the_profile_clients_server(small_org, monkeypatch):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    cohorts = amp.cohorts.for_profile_client(small_org.client())
    assert cohorts.base_url == small_org.url and connection.sample_server(cohorts) is small_org
    with pytest.raises(ConfigurationError, match="AMPLITUDE_API_KEY"):
        connection.cohort_client_for(ProfileClient("a-key"))
    assert amp.cohorts.connect is connection.connect_cohorts
    assert amp.connect is connection.connect
