"""``python -m fedimage``: the same as the ``fedimage`` command."""

import sys

from fedimage.cli import main

sys.exit(main())
