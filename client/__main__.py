"""``python -m leash.client``: the ``leash`` command line."""

import sys

from leash.client.cli import main

sys.exit(main())
