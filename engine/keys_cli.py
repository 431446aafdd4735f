"""`python -m assistantctl.engine.keys_cli ...`: the command the controller's `assistantctl keys`
runs on a host. It stays at this path whatever the engine's layout, because the controller may
call a host that still runs an older runtime; the code is security/keys_cli.py."""

import sys

from .security.keys_cli import main

if __name__ == "__main__":
    sys.exit(main())
