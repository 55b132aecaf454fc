"""Shared paths and helpers of the Python package's tests: the repository's fixtures, the shared
models (`../shared`, skipped loudly where absent), and the two command lines the package is
compared with: the installed `onnx-slim` console script and the Rust binary `target/release/onnx-slim`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
SHARED = pathlib.Path(os.environ.get("ONNX_SLIM_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
BINARY = ROOT / "target" / "release" / "onnx-slim"
# The console script pip installed beside this interpreter.
INSTALLED = pathlib.Path(sys.executable).parent / "onnx-slim"


def shared_models() -> List[str]:
    """The shared model folders' names; prints a loud SKIPPED line when there are none."""
    if not MODELS.is_dir():
        print(f"SKIPPED: {MODELS} is absent; the tests on the shared models do not run", file=sys.stderr)
        return []
    return sorted(p.name for p in MODELS.iterdir() if (p / "model.onnx").is_file())


def require_shared() -> None:
    """Skips the calling test, saying so loudly, when ../shared is absent."""
    if not MODELS.is_dir():
        print(f"\nSKIPPED: {MODELS} is absent", file=sys.stderr)
        pytest.skip(f"SKIPPED: {MODELS} is absent")


def run_cli(exe: pathlib.Path, args: List[str], cwd: Optional[pathlib.Path] = None) -> Tuple[int, str, str]:
    """Runs a command line `exe ARGS...`; returns (exit code, stdout, stderr)."""
    p = subprocess.run(
        [str(exe), *[str(a) for a in args]],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    return p.returncode, p.stdout, p.stderr


def clis() -> List[pathlib.Path]:
    """The command lines to compare with: the installed console script (required), and the Rust
    binary when it was built (`cargo test --release` builds it)."""
    assert INSTALLED.is_file(), f"the wheel did not install `{INSTALLED}`"
    if BINARY.is_file():
        return [INSTALLED, BINARY]
    print(f"\nSKIPPED: {BINARY} is absent; compared with the installed command only", file=sys.stderr)
    return [INSTALLED]
