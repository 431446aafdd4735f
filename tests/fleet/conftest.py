"""Fixtures for tests that deploy to several SSH hosts on this machine (see hosts.py).

Hosts run the controller's own interpreter through the shared filesystem (the spec's `python:`
field): a real fleet installs a virtualenv on each host instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hosts import Fleet


@pytest.fixture(scope="module")
def make_fleet(tmp_path_factory) -> Iterator:
    """`make_fleet(["a", "b"])` starts hosts a and b; every fleet is removed at the module's end."""
    fleets: list[Fleet] = []

    def make(names: list[str]) -> Fleet:
        fleet = Fleet(tmp_path_factory.mktemp("fleet"), names)
        fleets.append(fleet)
        return fleet.start()

    try:
        yield make
    finally:
        errors = []
        for fleet in fleets:
            try:
                fleet.close()
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("\n".join(errors))
