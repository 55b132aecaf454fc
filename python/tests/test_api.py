"""`onnx_slim.inspect`, `onnx_slim.verify`, bad input as `onnx_slim.Error` with the command
line's message, and the keyword table against the command line's flags and the type stubs."""

from __future__ import annotations

import ast
import json
import pathlib
import re

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import onnx_slim
from conftest import FIXTURES, MODELS, ROOT, clis, require_shared, run_cli


def cli_error(args: list) -> tuple:
    """The error line and exit code of every command line on `args` (they must agree)."""
    seen = set()
    for exe in clis():
        code, _, stderr = run_cli(exe, args)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        seen.add((lines[0][len("error: "):], code))
    assert len(seen) == 1, seen
    return seen.pop()


def test_a_garbage_file_raises_error_with_the_cli_message(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not onnx\xff\xff")
    message, code = cli_error([bad, tmp_path / "out.onnx"])
    with pytest.raises(onnx_slim.Error) as e:
        onnx_slim.optimize(bad, tmp_path / "out.onnx")
    assert str(e.value) == message and e.value.exit_code == code == 2
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(onnx_slim.Error) as e:
        onnx_slim.inspect(bad)
    assert str(e.value) == cli_error(["inspect", bad])[0]
    # The same bytes in memory: the same message about a temporary file.
    with pytest.raises(onnx_slim.Error, match="is not a valid onnx model"):
        onnx_slim.optimize(bad.read_bytes())


@pytest.mark.parametrize(
    "kwargs, flags",
    [
        (dict(rules="quantize", quantize_weights="int3"), ["--rules", "quantize", "--quantize-weights", "int3"]),
        (dict(rules="lowrank", lowrank_rank="many"), ["--rules", "lowrank", "--lowrank-rank", "many"]),
        (dict(rules="clean", lowrank_rank=4), ["--rules", "clean", "--lowrank-rank", "4"]),
        (dict(rules="no-such-rule"), ["--rules", "no-such-rule"]),
        (dict(budget=-1), ["--budget", "-1"]),
        (dict(tolerance=-1), ["--tolerance", "-1"]),
    ],
)
def test_a_bad_option_raises_error_with_the_cli_message(kwargs, flags, tmp_path):
    model = FIXTURES / "lowrank.onnx"
    message, code = cli_error([model, tmp_path / "out.onnx", *flags])
    with pytest.raises(onnx_slim.Error) as e:
        onnx_slim.optimize(model, tmp_path / "out.onnx", **kwargs)
    assert (str(e.value), e.value.exit_code) == (message, code)


def test_a_failed_verification_raises_error_with_exit_code_1(tmp_path):
    require_shared()
    model = MODELS / "digits_mlp" / "model.onnx"
    flags = ["--rules", "lowrank", "--lowrank-ratio", "0.5"]
    message, code = cli_error([model, tmp_path / "out.onnx", *flags])
    with pytest.raises(onnx_slim.Error) as e:
        onnx_slim.optimize(model, tmp_path / "out.onnx", rules="lowrank", lowrank_ratio=0.5)
    assert (str(e.value), e.value.exit_code) == (message, code) and code == 1
    assert "over the budget" in message
    assert not (tmp_path / "out.onnx").exists()
    # verify=False is --no-verify: written anyway, nothing verified.
    _, report = onnx_slim.optimize(
        model, tmp_path / "out.onnx", rules="lowrank", lowrank_ratio=0.5, verify=False, with_report=True
    )
    assert report["verification"] is None and "verification skipped" in report["text"]
    assert (tmp_path / "out.onnx").stat().st_size < model.stat().st_size


def test_wrong_arguments_raise_error_not_type_errors():
    with pytest.raises(onnx_slim.Error, match="unknown option `lowrank_rnak`"):
        onnx_slim.optimize(FIXTURES / "mlp.onnx", lowrank_rnak=3)
    with pytest.raises(onnx_slim.Error, match="not `int`"):
        onnx_slim.optimize(42)
    with pytest.raises(onnx_slim.Error, match="dict of input name to array"):
        onnx_slim.verify(FIXTURES / "mlp.onnx", FIXTURES / "mlp.onnx", inputs=[[1, 2]])
    with pytest.raises(onnx_slim.Error, match="does not exist|cannot read"):
        onnx_slim.inspect(FIXTURES / "no-such-model.onnx")


def test_inspect_returns_the_cli_json():
    for name in ("conv.onnx", "if_subgraph.onnx", "lowrank.onnx"):
        path = FIXTURES / name
        code, stdout, _ = run_cli(clis()[0], ["inspect", path, "--json"])
        assert code == 0
        expected = json.loads(stdout)
        assert onnx_slim.inspect(path) == expected
        assert onnx_slim.inspect(onnx.load(path)) == expected
        assert onnx_slim.inspect(path.read_bytes()) == expected
    assert onnx_slim.inspect(FIXTURES / "conv.onnx")["ops"]


def test_verify_compares_and_takes_inputs_as_dict_or_npz(tmp_path):
    a = FIXTURES / "conv.onnx"
    b = onnx_slim.optimize(a)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    by_dict = onnx_slim.verify(a, b, inputs=feeds)
    assert by_dict["passed"] is True
    np.savez(tmp_path / "inputs.npz", **feeds)
    by_npz = onnx_slim.verify(a, b, inputs=tmp_path / "inputs.npz")
    assert by_npz["sets"] == by_dict["sets"]
    # The CLI on the same files says the same.
    onnx.save(b, tmp_path / "b.onnx")
    report = tmp_path / "r.json"
    code, stdout, _ = run_cli(clis()[0], ["verify", a, tmp_path / "b.onnx", "--inputs", tmp_path / "inputs.npz", "--report-json", report])
    assert code == 0
    assert json.loads(report.read_text())["sets"] == by_dict["sets"]
    assert by_npz["text"] == stdout


def test_verify_reports_disagreeing_models_without_raising(tmp_path):
    a = onnx.load(FIXTURES / "mlp.onnx")
    b = onnx.load(FIXTURES / "mlp.onnx")
    w = b.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w) * 2
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    r = onnx_slim.verify(a, b, input_shape={"x": [2, 16]})
    assert r["passed"] is False
    assert any(not o["passed"] for s in r["sets"] for o in s["outputs"])
    assert onnx_slim.verify(a, a, input_shape={"x": [2, 16]})["passed"] is True
    # An input set without the model's input is bad input.
    with pytest.raises(onnx_slim.Error, match="holds array `nope` but the model has no input of that name") as e:
        onnx_slim.verify(a, b, inputs={"nope": np.zeros((2, 16), np.float32)})
    assert e.value.exit_code == 2


def cli_long_flags() -> set:
    """The long flags of the main job in `onnx-slim --help`."""
    _, stdout, _ = run_cli(clis()[0], ["--help"])
    return set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9-]+)", stdout, re.M))


def test_every_cli_option_is_a_keyword_of_optimize():
    own = {"rules": "rules", "no-verify": "verify", "calibration": "calibration", "inputs": "inputs"}
    not_options = {"report-json", "list-rules", "help", "version"}
    flags = cli_long_flags()
    assert "lowrank-rank" in flags and "quantize-weights" in flags
    expected = {f.replace("-", "_") for f in flags - set(own) - not_options}
    assert set(onnx_slim.RULE_OPTIONS) == expected


def test_the_type_stubs_name_every_keyword():
    stub = pathlib.Path(onnx_slim.__file__).with_suffix(".pyi")
    assert stub.is_file(), "the wheel ships __init__.pyi"
    tree = ast.parse(stub.read_text())
    overloads = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "optimize"]
    assert len(overloads) == 4
    own = {"rules", "verify", "calibration", "inputs", "as_bytes", "with_report"}
    for f in overloads:
        keywords = {a.arg for a in f.args.kwonlyargs}
        assert keywords == own | set(onnx_slim.RULE_OPTIONS)
    assert (pathlib.Path(onnx_slim.__file__).parent / "py.typed").is_file()
    for name in ("optimize", "inspect", "verify"):
        assert getattr(onnx_slim, name).__doc__
