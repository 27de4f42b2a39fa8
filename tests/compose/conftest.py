"""The compose run runs only when asked (``pytest --compose tests/compose``, which .ci/compose does once it has a
Docker engine): it builds images and starts the whole stack, minutes of work the suite does not repeat."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--compose"):
        pytest.skip("the compose run needs a Docker engine and minutes: .ci/compose runs it (pytest --compose)")
