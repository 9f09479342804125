"""spark-submit entry point of the benchmark worker (started by scripts/bench.sh)."""

import sys

from coldtier.bench.worker import main

if __name__ == "__main__":
    sys.exit(main())
