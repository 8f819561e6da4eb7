"""`python -m capguard`: the same entry point as the console script."""

import sys

from capguard.cli import main

sys.exit(main())
