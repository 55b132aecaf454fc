"""``input_shape`` (the shape verification runs at) against ``input_shapes`` (written into the
model), through ``optimize`` as through the command line."""

from __future__ import annotations

import onnx
import pytest

import onnx_slim
from conftest import FIXTURES


def _dims(model: onnx.ModelProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]


def test_input_shape_verifies_at_a_shape_and_input_shapes_writes_it():
    mlp = str(FIXTURES / "mlp.onnx")
    bound, report = onnx_slim.optimize(mlp, input_shape={"x": [3, 16]}, with_report=True)
    assert _dims(bound) == ["N", 16]
    assert "x [3, 16]" in report["text"]
    fixed, report = onnx_slim.optimize(mlp, input_shapes="x:4,16", with_report=True)
    assert _dims(fixed) == [4, 16]
    assert "x [4, 16]" in report["text"]


def test_the_two_naming_one_input_at_different_shapes_raise():
    with pytest.raises(onnx_slim.Error, match=r"`--input-shape x=2,16` .* contradicts `--input-shapes x:4,16`") as e:
        onnx_slim.optimize(str(FIXTURES / "mlp.onnx"), input_shapes="x:4,16", input_shape={"x": [2, 16]})
    assert e.value.exit_code == 2
