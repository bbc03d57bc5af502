"""pytest fixtures for the integration tests (see README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import world as w


@pytest.fixture
def world(request, tmp_path):
    """A fresh World for this test: create hosts with world.host(name).
    At teardown every spawned process is stopped and every host removed."""
    wd = w.World(tmp_path)
    request.node._tunnels_world = wd
    try:
        yield wd
    finally:
        wd.close()


@pytest.fixture
def tunnels_bin() -> Path:
    """Path of the tunnels binary under test (env TUNNELS_BIN, which ctest
    sets); missing -> failure under CI=true, skip otherwise."""
    value = os.environ.get("TUNNELS_BIN")
    if not value:
        w.missing("TUNNELS_BIN is not set (run through ctest, or export it)")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        w.missing(f"TUNNELS_BIN={value} is not an executable file (build it first)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a test (or its setup) fails, add the tail of every process it
    spawned to the report, so the failure can be understood from the log."""
    outcome = yield
    report = outcome.get_result()
    wd = getattr(item, "_tunnels_world", None)
    if report.failed and wd is not None and wd.procs:
        report.sections.append(("spawned processes (last lines)", wd.logs()))
