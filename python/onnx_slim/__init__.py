"""onnx-slim from Python: rewrite ONNX graphs to make models smaller and faster, and prove every
rewrite numerically in tract.

Every function here runs the onnx-slim command line itself, in-process (the Rust library, through
``onnx_slim._native``), with the GIL released while it works: ``optimize`` is ``onnx-slim IN OUT
... --report-json R``, ``inspect`` is ``onnx-slim inspect IN --json``, ``verify`` is
``onnx-slim verify A B --report-json R``. Models given as ``onnx.ModelProto`` or ``bytes`` and
input sets given as dicts of numpy arrays are written to a temporary folder first; paths are
passed as they are, so a model with external data, or over 2 GB, is read once, memory-mapped.
Bad input raises :class:`Error` carrying the command line's one-line message and exit code.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Tuple

from . import _native

__all__ = ["Error", "optimize", "inspect", "verify", "pack", "unpack", "RULE_OPTIONS", "__version__"]

__version__: str = _native.__version__

# The options of `onnx-slim IN OUT` that `optimize` takes as keywords besides its own parameters,
# each with how it is spelled on the command line: "flag" (given when true), "value" (one
# `--name VALUE`), "list" (one `--name VALUE` per item) or "shape" (`--input-shape NAME=DIMS`,
# `--input NAME=VALUE`: a dict of name to dims or values, or a list of `NAME=...` strings).
# Keyword `lowrank_rank` is flag `--lowrank-rank`; the command line checks every value.
RULE_OPTIONS: Dict[str, str] = {
    "external_data": "optional",
    "max_patches": "value",
    "lowrank_energy": "value",
    "lowrank_rank": "value",
    "lowrank_ratio": "value",
    "lowrank_tolerance": "value",
    "lowrank_min_saving": "value",
    "prune_zero": "flag",
    "prune_ratio": "value",
    "prune_importance": "value",
    "prune_exclude": "list",
    "prune_round": "value",
    "quantize_weights": "value",
    "quantize_granularity": "value",
    "quantize_mode": "value",
    "quantize_exclude": "list",
    "quantize_tolerance": "value",
    "quantize_activations": "flag",
    "quantize_calibrate": "value",
    "quantize_outputs": "flag",
    "cluster_bits": "value",
    "cluster_granularity": "value",
    "sparsity": "value",
    "sparsity_pattern": "value",
    "sparse_storage": "flag",
    "budget": "value",
    "budget_metric": "value",
    "target_size": "value",
    "objective": "value",
    "dtype": "value",
    "input_shapes": "list",
    "outputs": "list",
    "cut_inputs": "list",
    "skip": "list",
    "infer_shapes": "flag",
    "quiet": "flag",
    "verbose": "flag",
    "in_place": "flag",
    "input_shape": "shape",
    "input": "shape",
    "tolerance": "value",
    "seed": "value",
    "memory_limit": "value",
}

# The options of `onnx-slim verify A B` that `verify` takes as keywords.
_VERIFY_OPTIONS = (
    "input_shape",
    "input",
    "tolerance",
    "seed",
    "memory_limit",
    "budget",
    "budget_metric",
)


class Error(Exception):
    """Bad input, or a failed verification: what the ``onnx-slim`` command would have refused.

    ``str(error)`` is the command line's one-line message (the binary prints it as ``error:
    MESSAGE`` on stderr); ``exit_code`` is the binary's exit code: 2 for bad input or usage, 1
    when verification failed or a model cannot run in tract, 101 for a bug of onnx-slim.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        """Makes the error with the command line's ``message`` and ``exit_code``."""
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __reduce__(self) -> Tuple[Any, Tuple[str, int]]:
        """Pickles the message and the exit code (for errors sent between processes)."""
        return (Error, (self.message, self.exit_code))


def _run(argv: List[str]) -> Tuple[int, str, str]:
    """Runs ``onnx-slim ARGV...`` in-process; raises :class:`Error` when it failed with an
    error line, else returns ``(exit_code, stdout, stderr)``."""
    code, error, out, err = _native.run(["onnx-slim", *argv])
    if error is not None:
        raise Error(error, code)
    return code, out, err


def _is_path(x: Any) -> bool:
    """Whether ``x`` names a file (a ``str`` or an ``os.PathLike``)."""
    return isinstance(x, (str, os.PathLike))


def _model_path(model: Any, folder: str, name: str) -> str:
    """The path of ``model`` as the command line reads it: a path as given, else the bytes of a
    ``ModelProto`` or ``bytes`` written to ``folder/name``."""
    if _is_path(model):
        return os.fspath(model)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif hasattr(model, "SerializeToString"):
        try:
            data = model.SerializeToString()
        except Exception as e:  # protobuf refuses messages over 2 GB
            raise Error(f"cannot serialize the model: {e}; pass a path instead") from None
    else:
        raise Error(
            f"a model is an onnx.ModelProto, bytes or a path, not `{type(model).__name__}`"
        )
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _write_npz(arrays: Any, path: str) -> str:
    """Writes a dict of arrays (input name → array) as the ``.npz`` the command line reads."""
    import numpy as np

    if not isinstance(arrays, dict):
        raise Error(f"an input set is a dict of input name to array, not `{type(arrays).__name__}`")
    # Written as numpy.savez does, without its keyword arguments, so any input name works.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, value in arrays.items():
            if not isinstance(name, str):
                raise Error(f"input names are strings, not `{type(name).__name__}`")
            try:
                a = np.asarray(value)
            except Exception as e:
                raise Error(f"input `{name}` is not an array: {e}") from None
            if a.dtype == object:
                raise Error(f"input `{name}` is not an array of numbers")
            with z.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    return path


def _input_paths(value: Any, folder: str, tag: str) -> List[str]:
    """Input sets as the paths the command line reads: a path as given (a ``test_data_set_N``
    folder, a folder of them, ``.npz``, ``.npy``, ``.pb``), a dict of arrays as one ``.npz``, a
    list of these as several."""
    if value is None:
        return []
    if _is_path(value):
        return [os.fspath(value)]
    if isinstance(value, dict):
        return [_write_npz(value, os.path.join(folder, f"{tag}.npz"))]
    if isinstance(value, (list, tuple)):
        paths: List[str] = []
        for i, v in enumerate(value):
            if _is_path(v):
                paths.append(os.fspath(v))
            else:
                paths.append(_write_npz(v, os.path.join(folder, f"{tag}_{i}.npz")))
        return paths
    raise Error(
        f"input sets are a folder, an .npz path or a dict of arrays, not `{type(value).__name__}`"
    )


def _flag(name: str) -> str:
    """``lowrank_rank`` → ``--lowrank-rank``."""
    return "--" + name.replace("_", "-")


def _option_args(name: str, kind: str, value: Any) -> List[str]:
    """The command-line arguments of keyword ``name`` of kind ``kind`` set to ``value``."""
    if value is None or value is False:
        return []
    flag = _flag(name)
    if kind == "flag":
        return [flag]
    if kind == "optional":  # `--external-data` alone, or with a threshold
        return [flag] if value is True else [flag, str(value)]
    if kind == "list":
        items = [value] if isinstance(value, str) else list(value)
        return [a for v in items for a in (flag, str(v))]
    if kind == "shape":  # {"x": (1, 3, 224, 224)} or ["x=1,3,224,224"]
        if isinstance(value, dict):
            items = [
                f"{k}={','.join(str(d) for d in v) if isinstance(v, (list, tuple)) else v}"
                for k, v in value.items()
            ]
        else:
            items = [value] if isinstance(value, str) else list(value)
        return [a for v in items for a in (flag, str(v))]
    return [flag, str(value)]


def _rules_arg(rules: Any) -> List[str]:
    """``--rules`` from a comma-separated string or a list of rule names, codes or groups."""
    if rules is None:
        return []
    if not isinstance(rules, str):
        rules = ",".join(str(r) for r in rules)
    return ["--rules", rules]


def optimize(
    model: Any,
    output: Any = None,
    *,
    rules: Any = None,
    verify: bool = True,
    calibration: Any = None,
    inputs: Any = None,
    as_bytes: bool = False,
    with_report: bool = False,
    **rule_options: Any,
) -> Any:
    """Rewrites ``model`` as ``onnx-slim IN OUT`` does: runs the rules, verifies the result in
    tract against the input (unless ``verify=False``) and returns it.

    ``model`` is an ``onnx.ModelProto``, ``bytes`` or a path; a path is read in place (external
    data beside it, memory-mapped), as the command line reads it. ``output``: write the result
    there (with ``OUT.data`` when it keeps external data) and return its path instead of loading
    it, the way for models over 2 GB. Else the result is an ``onnx.ModelProto``, or its
    serialized bytes with ``as_bytes=True`` (the very bytes the command line writes; a result
    with external data comes back with its tensors inlined). ``with_report=True`` returns
    ``(result, report)``: the ``--report-json`` dict (rule report, verification, search, sizes)
    plus ``text``, what the command prints.

    ``rules``: names, codes or groups, as a list or ``"clean,quantize"``; ``"none"`` re-encodes.
    ``calibration`` and ``inputs`` (verification inputs): a ``test_data_set_N`` folder or a
    folder of them, an ``.npz`` path, a dict of input name to numpy array, or (calibration) a
    list of these. Every other option of the command line is a keyword, ``--lowrank-rank 16``
    being ``lowrank_rank=16`` (see ``RULE_OPTIONS``): flags take ``True``, repeatable lists a
    list, ``input_shape`` a dict of name to dims, ``external_data`` ``True`` or a threshold.
    ``input_shape={"x": [1, 3, 224, 224]}`` only sets the shape verification runs at; the model
    keeps its declared shapes. ``input_shapes="x:1,3,224,224"`` writes the shape into the model
    (and verification runs at it); the two naming one input at different shapes raise.

    Raises :class:`Error` with the command line's one-line message when the input or an option
    is bad, or when the result did not verify (nothing is then written).
    """
    unknown = sorted(set(rule_options) - set(RULE_OPTIONS))
    if unknown:
        raise Error(
            f"unknown option `{unknown[0]}` (the options: {', '.join(sorted(RULE_OPTIONS))})"
        )
    with tempfile.TemporaryDirectory(prefix="onnx-slim-") as tmp:
        src = _model_path(model, tmp, "input.onnx")
        out = os.fspath(output) if output is not None else os.path.join(tmp, "model.onnx")
        report_path = os.path.join(tmp, "report.json")
        argv = [src, out, *_rules_arg(rules), "--report-json", report_path]
        if not verify:
            argv.append("--no-verify")
        for p in _input_paths(calibration, tmp, "calibration"):
            argv += ["--calibration", p]
        given = _input_paths(inputs, tmp, "inputs")
        if len(given) > 1:
            raise Error("verification inputs are one folder, .npz path or dict")
        for p in given:
            argv += ["--inputs", p]
        for name, value in rule_options.items():
            argv += _option_args(name, RULE_OPTIONS[name], value)
        _, stdout, stderr = _run(argv)
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        report["input"] = os.fspath(model) if _is_path(model) else None
        report["output"] = out if output is not None else None
        report["text"] = stdout + stderr
        if output is not None:
            result: Any = pathlib.Path(out)
        else:
            result = _load_result(out, as_bytes)
    return (result, report) if with_report else result


def _load_result(path: str, as_bytes: bool) -> Any:
    """The model the command line wrote at ``path``: its bytes, or an ``onnx.ModelProto``; with
    its external data (``path.data``) inlined when there is some."""
    import onnx

    has_data = os.path.exists(path + ".data")
    if as_bytes and not has_data:
        with open(path, "rb") as f:
            return f.read()
    m = onnx.load(path, load_external_data=has_data)
    return m.SerializeToString() if as_bytes else m


def inspect(model: Any) -> Dict[str, Any]:
    """What is in ``model`` (an ``onnx.ModelProto``, ``bytes`` or a path), as ``onnx-slim inspect
    --json`` says: opsets, inputs and outputs with shapes, op histogram, parameters and bytes per
    dtype, MACs. Raises :class:`Error` when the model cannot be read."""
    with tempfile.TemporaryDirectory(prefix="onnx-slim-") as tmp:
        src = _model_path(model, tmp, "model.onnx")
        _, stdout, _ = _run(["inspect", src, "--json"])
    return json.loads(stdout)


def pack(src: Any, dst: Any) -> None:
    """Packs the model file ``src`` and its external data into ``dst`` (paths), losslessly and
    entropy-coded, as ``onnx-slim pack SRC DST`` does. Raises :class:`Error` on bad input."""
    _run(["pack", os.fspath(src), os.fspath(dst)])


def unpack(src: Any, dst: Any) -> None:
    """Restores the model packed in ``src`` to ``dst`` byte for byte (external data files beside
    it), as ``onnx-slim unpack SRC DST`` does. A foreign, truncated or corrupt pack raises
    :class:`Error` (exit code 2) and writes nothing."""
    _run(["unpack", os.fspath(src), os.fspath(dst)])


def verify(a: Any, b: Any, inputs: Any = None, **options: Any) -> Dict[str, Any]:
    """Runs models ``a`` and ``b`` in tract on the same inputs and compares every output, as
    ``onnx-slim verify A B`` does; returns its ``--report-json`` dict (``passed``, and per input
    set and output the errors, cosine, argmax agreement) plus ``text``, the printed table.

    ``a`` and ``b``: ``onnx.ModelProto``, ``bytes`` or paths. ``inputs``: a ``test_data_set_N``
    folder or a folder of them, an ``.npz``/``.npy`` path or a dict of input name to numpy array;
    default as the command line: the ``test_data_set_*`` folders beside ``a``, else seeded random
    values. Keywords: ``input_shape`` (dict of name to dims), ``input`` (dict of name to a value or
    values, e.g. ``{"sr": 16000}``), ``tolerance``, ``seed``, ``memory_limit`` (``"8G"`` or
    bytes: above it, verification runs segment by segment), ``budget``,
    ``budget_metric``. Outputs that disagree give ``passed: False``; bad input raises
    :class:`Error`.
    """
    unknown = sorted(set(options) - set(_VERIFY_OPTIONS))
    if unknown:
        raise Error(f"unknown option `{unknown[0]}` (the options: {', '.join(_VERIFY_OPTIONS)})")
    with tempfile.TemporaryDirectory(prefix="onnx-slim-") as tmp:
        pa = _model_path(a, tmp, "a.onnx")
        pb = _model_path(b, tmp, "b.onnx")
        report_path = os.path.join(tmp, "verify.json")
        argv = ["verify", pa, pb, "--report-json", report_path]
        given = _input_paths(inputs, tmp, "inputs")
        if len(given) > 1:
            raise Error("verification inputs are one folder, .npz path or dict")
        for p in given:
            argv += ["--inputs", p]
        for name, value in options.items():
            kind = "shape" if name in ("input_shape", "input") else "value"
            argv += _option_args(name, kind, value)
        _, stdout, _ = _run(argv)
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    report["text"] = stdout
    return report
