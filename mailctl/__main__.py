"""``python -m mailctl``: the same as the ``mailctl`` command."""

import sys

from mailctl.cli import main

sys.exit(main())
