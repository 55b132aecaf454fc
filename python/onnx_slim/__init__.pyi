"""Type stubs of onnx_slim: rewrite ONNX graphs to make models smaller and faster, and prove every
rewrite numerically in tract."""

import os
import pathlib
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy as np
import onnx

__version__: str

Model = Union[onnx.ModelProto, bytes, str, os.PathLike[str]]
"""A model: an ``onnx.ModelProto``, its serialized bytes, or the path of an ``.onnx`` file."""

InputSet = Union[str, os.PathLike[str], Mapping[str, np.ndarray]]
"""Input sets: a ``test_data_set_N`` folder or a folder of them, an ``.npz`` path, or a dict of
input name to array."""

RULE_OPTIONS: Dict[str, str]
"""The command-line options ``optimize`` takes as keywords, each with its kind (``flag``,
``value``, ``list``, ``shape``, ``optional``)."""

class Error(Exception):
    """Bad input or a failed verification, with the command line's one-line message."""

    message: str
    """The command line's one-line message (printed by the binary as ``error: MESSAGE``)."""
    exit_code: int
    """The binary's exit code: 2 bad input or usage, 1 verification or tract failure, 101 bug."""
    def __init__(self, message: str, exit_code: int = 2) -> None:
        """Makes the error with the command line's ``message`` and ``exit_code``."""

# optimize: an onnx.ModelProto by default, bytes with as_bytes=True, the written path with
# output=..., and each paired with the report dict when with_report=True.
@overload
def optimize(
    model: Model,
    output: None = None,
    *,
    rules: Union[str, Sequence[str], None] = None,
    verify: bool = True,
    calibration: Union[InputSet, Sequence[InputSet], None] = None,
    inputs: Optional[InputSet] = None,
    as_bytes: Literal[False] = False,
    with_report: Literal[False] = False,
    external_data: Union[bool, int, None] = None,
    max_patches: Optional[int] = None,
    lowrank_energy: Optional[float] = None,
    lowrank_rank: Optional[int] = None,
    lowrank_ratio: Optional[float] = None,
    lowrank_tolerance: Optional[float] = None,
    lowrank_min_saving: Optional[float] = None,
    prune_zero: bool = False,
    prune_ratio: Optional[float] = None,
    prune_importance: Optional[Literal["l1", "l2", "bn"]] = None,
    prune_exclude: Union[str, Sequence[str], None] = None,
    prune_round: Optional[int] = None,
    quantize_weights: Optional[Literal["int8", "uint8", "int4"]] = None,
    quantize_granularity: Optional[str] = None,
    quantize_mode: Optional[Literal["qdq", "dynamic"]] = None,
    quantize_exclude: Union[str, Sequence[str], None] = None,
    quantize_tolerance: Optional[float] = None,
    quantize_activations: bool = False,
    quantize_calibrate: Optional[str] = None,
    quantize_outputs: bool = False,
    cluster_bits: Optional[Literal[4, 5, 6, 8]] = None,
    cluster_granularity: Optional[Literal["tensor", "channel"]] = None,
    sparsity: Optional[float] = None,
    sparsity_pattern: Optional[Literal["unstructured", "2:4"]] = None,
    sparse_storage: bool = False,
    budget: Optional[float] = None,
    budget_metric: Optional[Literal["cosine", "rel-l2", "argmax", "max-abs"]] = None,
    target_size: Optional[float] = None,
    objective: Optional[Literal["size", "macs", "latency"]] = None,
    dtype: Optional[Literal["fp16", "fp32"]] = None,
    input_shapes: Union[str, Sequence[str], None] = None,
    outputs: Union[str, Sequence[str], None] = None,
    cut_inputs: Union[str, Sequence[str], None] = None,
    skip: Union[str, Sequence[str], None] = None,
    infer_shapes: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    in_place: bool = False,
    input_shape: Union[Mapping[str, Sequence[int]], Sequence[str], None] = None,
    input: Union[Mapping[str, Any], Sequence[str], None] = None,
    tolerance: Optional[float] = None,
    seed: Optional[int] = None,
    memory_limit: Union[str, int, None] = None,
) -> onnx.ModelProto:
    """Rewrites, verifies and returns the model as an ``onnx.ModelProto``."""

@overload
def optimize(
    model: Model,
    output: None = None,
    *,
    rules: Union[str, Sequence[str], None] = None,
    verify: bool = True,
    calibration: Union[InputSet, Sequence[InputSet], None] = None,
    inputs: Optional[InputSet] = None,
    as_bytes: Literal[True],
    with_report: Literal[False] = False,
    external_data: Union[bool, int, None] = None,
    max_patches: Optional[int] = None,
    lowrank_energy: Optional[float] = None,
    lowrank_rank: Optional[int] = None,
    lowrank_ratio: Optional[float] = None,
    lowrank_tolerance: Optional[float] = None,
    lowrank_min_saving: Optional[float] = None,
    prune_zero: bool = False,
    prune_ratio: Optional[float] = None,
    prune_importance: Optional[Literal["l1", "l2", "bn"]] = None,
    prune_exclude: Union[str, Sequence[str], None] = None,
    prune_round: Optional[int] = None,
    quantize_weights: Optional[Literal["int8", "uint8", "int4"]] = None,
    quantize_granularity: Optional[str] = None,
    quantize_mode: Optional[Literal["qdq", "dynamic"]] = None,
    quantize_exclude: Union[str, Sequence[str], None] = None,
    quantize_tolerance: Optional[float] = None,
    quantize_activations: bool = False,
    quantize_calibrate: Optional[str] = None,
    quantize_outputs: bool = False,
    cluster_bits: Optional[Literal[4, 5, 6, 8]] = None,
    cluster_granularity: Optional[Literal["tensor", "channel"]] = None,
    sparsity: Optional[float] = None,
    sparsity_pattern: Optional[Literal["unstructured", "2:4"]] = None,
    sparse_storage: bool = False,
    budget: Optional[float] = None,
    budget_metric: Optional[Literal["cosine", "rel-l2", "argmax", "max-abs"]] = None,
    target_size: Optional[float] = None,
    objective: Optional[Literal["size", "macs", "latency"]] = None,
    dtype: Optional[Literal["fp16", "fp32"]] = None,
    input_shapes: Union[str, Sequence[str], None] = None,
    outputs: Union[str, Sequence[str], None] = None,
    cut_inputs: Union[str, Sequence[str], None] = None,
    skip: Union[str, Sequence[str], None] = None,
    infer_shapes: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    in_place: bool = False,
    input_shape: Union[Mapping[str, Sequence[int]], Sequence[str], None] = None,
    input: Union[Mapping[str, Any], Sequence[str], None] = None,
    tolerance: Optional[float] = None,
    seed: Optional[int] = None,
    memory_limit: Union[str, int, None] = None,
) -> bytes:
    """Rewrites, verifies and returns the model's serialized bytes, as the CLI writes them."""

@overload
def optimize(
    model: Model,
    output: Union[str, os.PathLike[str]],
    *,
    rules: Union[str, Sequence[str], None] = None,
    verify: bool = True,
    calibration: Union[InputSet, Sequence[InputSet], None] = None,
    inputs: Optional[InputSet] = None,
    as_bytes: bool = False,
    with_report: Literal[False] = False,
    external_data: Union[bool, int, None] = None,
    max_patches: Optional[int] = None,
    lowrank_energy: Optional[float] = None,
    lowrank_rank: Optional[int] = None,
    lowrank_ratio: Optional[float] = None,
    lowrank_tolerance: Optional[float] = None,
    lowrank_min_saving: Optional[float] = None,
    prune_zero: bool = False,
    prune_ratio: Optional[float] = None,
    prune_importance: Optional[Literal["l1", "l2", "bn"]] = None,
    prune_exclude: Union[str, Sequence[str], None] = None,
    prune_round: Optional[int] = None,
    quantize_weights: Optional[Literal["int8", "uint8", "int4"]] = None,
    quantize_granularity: Optional[str] = None,
    quantize_mode: Optional[Literal["qdq", "dynamic"]] = None,
    quantize_exclude: Union[str, Sequence[str], None] = None,
    quantize_tolerance: Optional[float] = None,
    quantize_activations: bool = False,
    quantize_calibrate: Optional[str] = None,
    quantize_outputs: bool = False,
    cluster_bits: Optional[Literal[4, 5, 6, 8]] = None,
    cluster_granularity: Optional[Literal["tensor", "channel"]] = None,
    sparsity: Optional[float] = None,
    sparsity_pattern: Optional[Literal["unstructured", "2:4"]] = None,
    sparse_storage: bool = False,
    budget: Optional[float] = None,
    budget_metric: Optional[Literal["cosine", "rel-l2", "argmax", "max-abs"]] = None,
    target_size: Optional[float] = None,
    objective: Optional[Literal["size", "macs", "latency"]] = None,
    dtype: Optional[Literal["fp16", "fp32"]] = None,
    input_shapes: Union[str, Sequence[str], None] = None,
    outputs: Union[str, Sequence[str], None] = None,
    cut_inputs: Union[str, Sequence[str], None] = None,
    skip: Union[str, Sequence[str], None] = None,
    infer_shapes: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    in_place: bool = False,
    input_shape: Union[Mapping[str, Sequence[int]], Sequence[str], None] = None,
    input: Union[Mapping[str, Any], Sequence[str], None] = None,
    tolerance: Optional[float] = None,
    seed: Optional[int] = None,
    memory_limit: Union[str, int, None] = None,
) -> pathlib.Path:
    """Rewrites and verifies the model, writes it to ``output`` and returns that path."""

@overload
def optimize(
    model: Model,
    output: Union[str, os.PathLike[str], None] = None,
    *,
    rules: Union[str, Sequence[str], None] = None,
    verify: bool = True,
    calibration: Union[InputSet, Sequence[InputSet], None] = None,
    inputs: Optional[InputSet] = None,
    as_bytes: bool = False,
    with_report: Literal[True],
    external_data: Union[bool, int, None] = None,
    max_patches: Optional[int] = None,
    lowrank_energy: Optional[float] = None,
    lowrank_rank: Optional[int] = None,
    lowrank_ratio: Optional[float] = None,
    lowrank_tolerance: Optional[float] = None,
    lowrank_min_saving: Optional[float] = None,
    prune_zero: bool = False,
    prune_ratio: Optional[float] = None,
    prune_importance: Optional[Literal["l1", "l2", "bn"]] = None,
    prune_exclude: Union[str, Sequence[str], None] = None,
    prune_round: Optional[int] = None,
    quantize_weights: Optional[Literal["int8", "uint8", "int4"]] = None,
    quantize_granularity: Optional[str] = None,
    quantize_mode: Optional[Literal["qdq", "dynamic"]] = None,
    quantize_exclude: Union[str, Sequence[str], None] = None,
    quantize_tolerance: Optional[float] = None,
    quantize_activations: bool = False,
    quantize_calibrate: Optional[str] = None,
    quantize_outputs: bool = False,
    cluster_bits: Optional[Literal[4, 5, 6, 8]] = None,
    cluster_granularity: Optional[Literal["tensor", "channel"]] = None,
    sparsity: Optional[float] = None,
    sparsity_pattern: Optional[Literal["unstructured", "2:4"]] = None,
    sparse_storage: bool = False,
    budget: Optional[float] = None,
    budget_metric: Optional[Literal["cosine", "rel-l2", "argmax", "max-abs"]] = None,
    target_size: Optional[float] = None,
    objective: Optional[Literal["size", "macs", "latency"]] = None,
    dtype: Optional[Literal["fp16", "fp32"]] = None,
    input_shapes: Union[str, Sequence[str], None] = None,
    outputs: Union[str, Sequence[str], None] = None,
    cut_inputs: Union[str, Sequence[str], None] = None,
    skip: Union[str, Sequence[str], None] = None,
    infer_shapes: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    in_place: bool = False,
    input_shape: Union[Mapping[str, Sequence[int]], Sequence[str], None] = None,
    input: Union[Mapping[str, Any], Sequence[str], None] = None,
    tolerance: Optional[float] = None,
    seed: Optional[int] = None,
    memory_limit: Union[str, int, None] = None,
) -> Tuple[Union[onnx.ModelProto, bytes, pathlib.Path], Dict[str, Any]]:
    """Rewrites and verifies the model; returns the result and the report dict."""

def inspect(model: Model) -> Dict[str, Any]:
    """What is in the model, as ``onnx-slim inspect --json`` says."""

def pack(src: Union[str, os.PathLike[str]], dst: Union[str, os.PathLike[str]]) -> None:
    """Packs a model file and its external data, losslessly, as ``onnx-slim pack``."""

def unpack(src: Union[str, os.PathLike[str]], dst: Union[str, os.PathLike[str]]) -> None:
    """Restores a packed model byte for byte, as ``onnx-slim unpack``."""

def verify(
    a: Model,
    b: Model,
    inputs: Optional[InputSet] = None,
    *,
    input_shape: Union[Mapping[str, Sequence[int]], Sequence[str], None] = None,
    input: Union[Mapping[str, Any], Sequence[str], None] = None,
    tolerance: Optional[float] = None,
    seed: Optional[int] = None,
    memory_limit: Union[str, int, None] = None,
    budget: Optional[float] = None,
    budget_metric: Optional[Literal["cosine", "rel-l2", "argmax", "max-abs"]] = None,
) -> Dict[str, Any]:
    """Runs both models in tract on the same inputs and compares every output."""
