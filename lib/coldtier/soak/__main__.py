import sys

from coldtier.soak.harness import main

sys.exit(main())
