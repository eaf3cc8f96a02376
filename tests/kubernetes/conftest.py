"""Fixtures for the Kubernetes source tests: fixtures from real captures and a stand-in API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.demo.standins.kubernetes import StandinApiServer, User

TESTDATA = Path(__file__).resolve().parents[2] / "collector" / "sources" / "kubernetes" / "testdata"


def load(name: str) -> Any:
    return json.loads((TESTDATA / name).read_text())


@pytest.fixture
def testdata() -> Path:
    return TESTDATA


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinApiServer]:
    """A stand-in API server with three users: admin, one without nodes/proxy, one that may list nothing."""
    server = StandinApiServer(
        tmp_path / "apiserver",
        users={
            "admin-token": User("admin"),
            "no-proxy-token": User("viewer", frozenset({"list nodes", "list pods"})),
            "nothing-token": User("nobody", frozenset()),
        },
    )
    try:
        yield server
    finally:
        server.stop()
