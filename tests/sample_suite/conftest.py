"""Fixtures shared by the sample suite: a session resource and one that fails."""

import pytest


@pytest.fixture(scope="session")
def session_resource():
    resource = {"opened": True}
    yield resource
    resource["opened"] = False


@pytest.fixture
def broken():
    raise RuntimeError("the broken fixture cannot be set up")
