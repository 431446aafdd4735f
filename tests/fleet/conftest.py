"""Fixtures for tests that deploy to several SSH hosts on this machine (see hosts.py).

The hosts of test_fleet_apply.py get the engine's virtualenv that apply installs, as a real fleet
does; the other modules give hosts the controller's own interpreter (the spec's `python:`), which
they reach through the shared filesystem, to save the install.
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
