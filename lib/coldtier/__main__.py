"""``python -m coldtier plan|status|run --config FILE``."""

import sys

from coldtier.cli import main

sys.exit(main())
