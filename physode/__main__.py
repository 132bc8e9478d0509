"""``python -m physode``: the same as the ``physode`` command."""

import sys

from physode.cli import main

sys.exit(main())
