"""The ``onnx-slim`` console script: the command line of the binary, run in this process."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import List, Optional

from . import _native


def _own_path(argv0: str) -> Optional[str]:
    """The program that runs this command line, for ``bench`` to start as its main job: this
    script (``argv[0]``) when it is an executable file, else the ``onnx-slim`` on PATH."""
    if os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    return shutil.which("onnx-slim")


def main(argv: Optional[List[str]] = None) -> None:
    """Runs ``onnx-slim`` on ``argv`` (default ``sys.argv``) as the binary does: its stdout,
    stderr and exit code (0, 1 or 2). Ctrl-C ends it at once, as it ends the binary."""
    args = list(sys.argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.main(args, _own_path(args[0]) if args else None))


if __name__ == "__main__":
    main()
