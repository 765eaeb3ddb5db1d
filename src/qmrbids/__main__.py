import sys

from qmrbids.cli import main

sys.exit(main())
