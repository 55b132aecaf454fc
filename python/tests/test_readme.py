"""The README's Python example runs as written, from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_readme_python_example_runs_as_written():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    p = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    # verified, the op histogram of the result, the verify call, then the Error caught.
    assert lines[0].endswith("verified: True"), p.stdout
    assert lines[2] == "True", p.stdout
    assert lines[3].startswith("2 ") and "is not a valid onnx model" in lines[3], p.stdout
    assert os.path.getsize("/tmp/lowrank.int8.onnx") < os.path.getsize(ROOT / "fixtures" / "lowrank.onnx")
