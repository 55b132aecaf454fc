"""`onnx_slim.pack` / `onnx_slim.unpack`: a byte-identical round trip, and a corrupt pack raising
`onnx_slim.Error` (exit code 2) without writing anything."""

from __future__ import annotations

import pytest

import onnx_slim
from conftest import FIXTURES


def test_pack_then_unpack_restores_the_model_byte_for_byte(tmp_path):
    src = FIXTURES / "mlp.onnx"
    packed = tmp_path / "mlp.onnx.slim"
    restored = tmp_path / "restored.onnx"
    assert onnx_slim.pack(src, packed) is None
    assert packed.read_bytes()[:8] == b"ONNXSLIM"
    onnx_slim.unpack(str(packed), str(restored))
    assert restored.read_bytes() == src.read_bytes()


def test_a_corrupt_pack_raises_error_with_exit_code_2_and_writes_nothing(tmp_path):
    packed = tmp_path / "mlp.onnx.slim"
    onnx_slim.pack(FIXTURES / "mlp.onnx", packed)
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0x5A
    packed.write_bytes(bytes(data))
    with pytest.raises(onnx_slim.Error) as e:
        onnx_slim.unpack(packed, tmp_path / "restored.onnx")
    assert e.value.exit_code == 2
    assert "packed model" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx.slim"]
