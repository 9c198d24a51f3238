import sys

from occ.cli import main

sys.exit(main())
