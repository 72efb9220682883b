"""``python -m runner``: see :mod:`runner.cli.main`."""

import sys

import runner

if getattr(runner, "__file__", None) is None:
    # `runner` came out as a namespace package: a folder called runner (a clone of this project,
    # usually) in the current folder shadows the installed package, since Python puts the
    # current folder first on the import path.
    shadow = next(iter(getattr(runner, "__path__", [])), "runner")
    print(
        f"error: the folder {shadow} shadows the installed runner package (Python imports from the current "
        "folder first); run from inside it (cd runner) or from any other folder",
        file=sys.stderr,
    )
    sys.exit(2)

from runner.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
