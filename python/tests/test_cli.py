"""The installed `onnx-slim` command behaves as the Rust binary: the same stdout, stderr and exit
code on the same command lines, quiet in a closed pipe, and `bench` runs its main job."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import BINARY, FIXTURES, INSTALLED, MODELS, require_shared, run_cli


def command_lines(tmp):
    """Command lines covering every command, success and failure."""
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    return [
        ["--version"],
        ["--help"],
        ["verify", "--help"],
        ["--list-rules"],
        ["inspect", FIXTURES / "conv.onnx"],
        ["inspect", FIXTURES / "conv.onnx", "--json"],
        ["show", FIXTURES / "if_subgraph.onnx"],
        ["diff", FIXTURES / "conv.onnx", FIXTURES / "mlp.onnx"],
        ["verify", FIXTURES / "mlp.onnx", FIXTURES / "mlp.onnx", "--input-shape", "x=2,16"],
        [FIXTURES / "clean_kinds.onnx", tmp / "out.onnx", "--rules", "clean"],
        [FIXTURES / "mlp.onnx", tmp / "out.onnx", "--rules", "none"],
        [garbage, tmp / "out.onnx"],
        [FIXTURES / "mlp.onnx", FIXTURES / "mlp.onnx"],
        [FIXTURES / "mlp.onnx", tmp / "out.onnx", "--bogus-flag"],
        [FIXTURES / "mlp.onnx"],
        [],
    ]


def test_the_installed_command_prints_and_exits_as_the_binary(tmp_path):
    assert INSTALLED.is_file(), f"the wheel did not install `{INSTALLED}`"
    if not BINARY.is_file():
        print(f"\nSKIPPED: {BINARY} is absent; run `cargo test --release` first", file=sys.stderr)
        pytest.skip(f"SKIPPED: {BINARY} is absent")
    codes = set()
    for args in command_lines(tmp_path):
        want = run_cli(BINARY, args)
        got = run_cli(INSTALLED, args)
        assert got == want, f"onnx-slim {' '.join(map(str, args))}"
        codes.add(want[0])
    assert codes == {0, 2}


def test_the_installed_command_works_on_its_own(tmp_path):
    code, out, err = run_cli(INSTALLED, [FIXTURES / "clean_kinds.onnx", tmp_path / "o.onnx"])
    assert code == 0 and "wrote" in out, err
    assert (tmp_path / "o.onnx").stat().st_size < (FIXTURES / "clean_kinds.onnx").stat().st_size
    code, out, err = run_cli(INSTALLED, ["--lowrank-rank", "x", FIXTURES / "mlp.onnx", tmp_path / "p.onnx"])
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.splitlines()) == 1


def test_a_closed_pipe_ends_the_command_quietly():
    p = subprocess.run(
        f"'{INSTALLED}' show '{FIXTURES / 'all_attr_types.onnx'}' | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert len(p.stdout) == 10
    assert p.stderr == ""


def test_bench_runs_the_installed_command_as_its_main_job(tmp_path):
    require_shared()
    code, out, err = run_cli(
        INSTALLED,
        ["bench", MODELS / "digits_mlp", "--preset", "--rules clean", "--runs", "1", "--out", tmp_path / "t.md"],
    )
    assert code == 0, err
    table = (tmp_path / "t.md").read_text()
    row = [l for l in table.splitlines() if l.startswith("| digits_mlp |")]
    # A preset that failed is a row with its error line; this one was measured.
    assert len(row) == 1 and row[0].endswith("patches |") and " → " in row[0], table
