"""Type stubs of onnx_slim._native: the onnx-slim command line, run in-process (Rust)."""

import os
from typing import Optional, Sequence, Tuple, Union

__version__: str

def run(argv: Sequence[Union[str, os.PathLike[str]]]) -> Tuple[int, Optional[str], str, str]:
    """Runs the command line ``argv`` (program name first), collecting what it prints; returns
    ``(exit_code, error_message_or_None, stdout, stderr)``. Releases the GIL meanwhile."""

def main(argv: Sequence[Union[str, os.PathLike[str]]], exe: Optional[Union[str, os.PathLike[str]]] = None) -> int:
    """Runs the command line ``argv`` as the binary does, printing on the process's stdout and
    stderr; ``exe`` is what ``bench`` starts as its main job. Returns the exit code."""
