import sys

from qnr.cli import main

sys.exit(main())
