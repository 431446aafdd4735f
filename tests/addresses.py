"""An address of this machine that is not loopback, for tests of what clients from elsewhere see."""

from __future__ import annotations

import functools
import subprocess

_DUMMY = "ast-test0"
_DUMMY_ADDRESS = "198.51.100.10"  # TEST-NET-2: never routed


@functools.cache
def machine_address() -> str:
    """The first global IPv4 address of this machine; without one, a dummy interface gets one
    (root, as every test that needs the network runs)."""
    listed = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
    ).stdout
    for line in listed.splitlines():
        words = line.split()
        if "inet" in words:
            return words[words.index("inet") + 1].split("/")[0]
    subprocess.run(["ip", "link", "add", _DUMMY, "type", "dummy"], capture_output=True, check=False)
    subprocess.run(["ip", "addr", "add", f"{_DUMMY_ADDRESS}/32", "dev", _DUMMY], capture_output=True, check=False)
    subprocess.run(["ip", "link", "set", _DUMMY, "up"], check=True)
    return _DUMMY_ADDRESS
