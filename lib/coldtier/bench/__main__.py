import sys

from coldtier.bench.harness import main

sys.exit(main())
