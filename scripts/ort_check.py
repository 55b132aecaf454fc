"""Interop check: a model written by onnx-slim passes onnx.checker and runs in onnxruntime with
the same outputs as the original.

usage: ort_check.py ORIGINAL REWRITTEN TOLERANCE [TEST_DATA_DIR ...]

Inputs come from the given test_data_set folders (input_K.pb), else seeded random values that
respect dtypes (symbolic dims bound to 1). Prints one line per output and exits 1 on any failure.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load_inputs(sess, dirs):
    sets = []
    names = [i.name for i in sess.get_inputs()]
    for d in dirs:
        feeds = {}
        k = 0
        while True:
            try:
                t = onnx.load_tensor(f"{d}/input_{k}.pb")
            except FileNotFoundError:
                break
            feeds[t.name or names[k]] = numpy_helper.to_array(t)
            k += 1
        sets.append(feeds)
    if sets:
        return sets
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        t = i.type
        if "float16" in t:
            feeds[i.name] = rng.random(shape).astype(np.float16)
        elif "double" in t:
            feeds[i.name] = rng.random(shape)
        elif "float" in t:
            feeds[i.name] = rng.random(shape).astype(np.float32)
        elif "bool" in t:
            feeds[i.name] = rng.integers(0, 2, shape).astype(bool)
        elif "int64" in t:
            feeds[i.name] = rng.integers(0, 10, shape).astype(np.int64)
        elif "int32" in t:
            feeds[i.name] = rng.integers(0, 10, shape).astype(np.int32)
        else:
            raise SystemExit(f"cannot make a random input of type {t} for `{i.name}`")
    return [feeds]


def main():
    original, rewritten, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    dirs = sys.argv[4:]
    onnx.checker.check_model(onnx.load(rewritten))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a = ort.InferenceSession(original, opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(rewritten, opts, providers=["CPUExecutionProvider"])
    ok = True
    for n, feeds in enumerate(load_inputs(a, dirs)):
        names = [o.name for o in a.get_outputs()]
        if names != [o.name for o in b.get_outputs()]:
            print(f"output names differ: {names} vs {[o.name for o in b.get_outputs()]}")
            sys.exit(1)
        ra = a.run(None, feeds)
        rb = b.run(None, feeds)
        if len(ra) != len(names) or len(rb) != len(names):
            print(f"set {n}: {len(ra)} and {len(rb)} outputs for {len(names)} names")
            sys.exit(1)
        # The criterion of onnx-slim's verify (src/verify/compare.rs): |a-b| <= tol*max(1,|a|),
        # NaN equal only to NaN at the same place, an infinity only to the same infinity, equal
        # dtypes and shapes; everything else exactly equal.
        for name, x, y in zip(names, ra, rb):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                print(f"set {n} `{name}`: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                ok = False
                continue
            if x.dtype.kind in "fc":
                xf, yf = x.astype(np.float64), y.astype(np.float64)
                with np.errstate(invalid="ignore"):
                    err = np.abs(xf - yf)
                bound = tol * np.maximum(1.0, np.abs(xf))
                same = (xf == yf) | (np.isnan(xf) & np.isnan(yf))
                bad = ~(same | (np.isfinite(err) & (err <= bound)))
                m = float(np.nanmax(err)) if err.size else 0.0
                print(f"set {n} `{name}`: max abs {m:.3g} {'FAIL' if bad.any() else 'ok'}")
                ok &= not bad.any()
            else:
                same = np.array_equal(x, y)
                print(f"set {n} `{name}`: {'equal' if same else 'DIFFERENT'}")
                ok &= same
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
