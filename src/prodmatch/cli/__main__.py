"""``python -m prodmatch.cli``: the same as the ``prodmatch`` command."""

import sys

from prodmatch.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
