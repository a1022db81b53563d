"""``python -m leash``: the ``leash`` command line."""

import sys

from leash.client.cli import main

sys.exit(main())
