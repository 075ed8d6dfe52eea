"""A mock upstream shared by the provider tests (a real HTTP server in a subprocess)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realserver import MockUpstream, mock_upstream


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    with mock_upstream(tmp_path_factory.mktemp("mock")) as running:
        yield running
