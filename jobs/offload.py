"""spark-submit entry point: ``scripts/spark-submit.sh jobs/offload.py run --config FILE``.

Thin on purpose: everything lives in the coldtier package (shipped with --py-files).
"""

import sys

from coldtier.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
