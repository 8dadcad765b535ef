"""``python -m sandstone``: the ``sandstone`` command."""

import sys

from sandstone._cli import main

if __name__ == "__main__":
    sys.exit(main())
