"""``python tests/held_writes.py GLOB ARGS...``: skinfeat's CLI with every atomic write
whose output name matches GLOB held for ten minutes before its rename, so that a
kill test's SIGKILL lands mid-write for certain. Test tooling: the package's
write path has no such pause."""

import fnmatch
import sys
import time

from skinfeat.cli import main
from skinfeat.core import atomic

HOLD = sys.argv.pop(1)
_finish = atomic._finish


def _held(tmp, path):
    if fnmatch.fnmatchcase(path.name, HOLD):
        time.sleep(600)
    _finish(tmp, path)


atomic._finish = _held

if __name__ == "__main__":
    main()
