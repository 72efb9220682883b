"""``python -m runner``: see :mod:`runner.cli`."""

import sys

from runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
