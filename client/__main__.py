"""``python -m client``: the ``leash`` command line."""

import sys

from client.cli import main

sys.exit(main())
