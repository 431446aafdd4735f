"""How the suite runs in parallel (`pytest -n N`, pytest-xdist; the Makefile's `test` target).

Tests that bring up SSH test hosts (network namespaces, bridges, keepalived's virtual IPs: the
fleet, and the CI pipelines that deploy to one) run in one worker, one module after another: their
timings (a virtual IP moving within seconds, rolling applies) are what they test, and two fleets at
once would double the machine's heaviest load. Every other module goes whole to one worker, so its
module-scoped fixtures (a deployment applied once for all its tests) are set up once; each of those
tests starts its own servers on free loopback ports in its own temporary folders. The fleet is
collected first, then the modules that apply deployments (tests/test_*.py, the slowest), then the
rest, so the long queues start at once and the short modules fill in around them.

The grouping is a scheduler of our own rather than xdist's `xdist_group` mark: that mark renames
the test's node id, which pytest 9 no longer reads.
"""

from __future__ import annotations

import pytest

# Node ids (relative to the repository) of the tests that need the machine's network namespaces.
FLEET = ("tests/fleet/", "tests/test_pipelines.py")


def in_fleet(nodeid: str) -> bool:
    return nodeid.startswith(FLEET)


def _queue(nodeid: str) -> int:
    if in_fleet(nodeid):
        return 0
    return 1 if nodeid.count("/") == 1 else 2  # tests/test_x.py: deployments applied for real


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _queue(item.nodeid))  # stable: the order within each part stays


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FleetInOneWorker(LoadScopeScheduling):
        """Every fleet test in one scope (one worker, in order); every other module a scope of its own."""

        def _split_scope(self, nodeid: str) -> str:
            return "fleet" if in_fleet(nodeid) else nodeid.split("::", 1)[0]

    return FleetInOneWorker(config, log)
