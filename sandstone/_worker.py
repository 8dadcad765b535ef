"""Entry point of a ``twistd sandstone --workers N`` worker process: ``python -m sandstone._worker``.

A separate module, so that ``-m`` does not run ``sandstone._workers`` a second time as ``__main__``.
"""

import sys

from sandstone._workers import run_worker

if __name__ == "__main__":
    run_worker(sys.argv[1:])
