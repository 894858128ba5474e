"""The suite's time limits: a short one for every test, the long one only for Docker tests (whose
session fixtures may build images cold), and a test's own limit kept."""

from __future__ import annotations

import pytest

from conftest import DOCKER_TIMEOUT_S, pytest_collection_modifyitems


class Item:
    """The two calls the hook makes on a collected test."""

    def __init__(self, *marks):
        self.marks = [mark.mark for mark in marks]

    def get_closest_marker(self, name):
        return next((mark for mark in self.marks if mark.name == name), None)

    def add_marker(self, marker):
        self.marks.append(marker.mark)

    def timeout(self):
        mark = self.get_closest_marker("timeout")
        return mark.args[0] if mark else None


def test_only_docker_tests_get_the_long_limit():
    unit, docker, own = Item(), Item(pytest.mark.docker), Item(pytest.mark.docker, pytest.mark.timeout(1800))
    pytest_collection_modifyitems(None, [unit, docker, own])
    assert (unit.timeout(), docker.timeout(), own.timeout()) == (None, DOCKER_TIMEOUT_S, 1800)


def test_every_other_test_has_the_short_limit(request):
    assert float(request.config.getini("timeout")) <= 180 < DOCKER_TIMEOUT_S
    assert "pytest-timeout" in request.config.getini("required_plugins")
    assert request.node.get_closest_marker("timeout") is None, "a unit test runs under pytest.ini's limit"
