"""Fixtures shared by the curation tests."""

from __future__ import annotations

import pytest

from curate import store


@pytest.fixture
def conn(world):
    """One store connection on the test module's ``world`` (a review store it builds)."""
    with store.connect(world.db) as connection:
        yield connection
