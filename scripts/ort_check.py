"""Interop check: a model written by onnx-slim passes onnx.checker and runs in onnxruntime with
the same outputs as the original.

usage: ort_check.py ORIGINAL REWRITTEN TOLERANCE [--expected DEFAULT_TOL [--as-close M]]
                    [--optimized FILE] [TEST_DATA_DIR ...]

Inputs come from the given test_data_set folders (input_K.pb), else seeded random values that
respect dtypes (symbolic dims bound to 1). The reference is ORIGINAL run in onnxruntime; with
--expected it is each folder's output_K.pb instead (for a lossy rewrite: the outputs tract
computed for REWRITTEN), which REWRITTEN in onnxruntime with basic graph optimizations must
reproduce at TOLERANCE, and with its default optimizations at DEFAULT_TOL: those fuse
DequantizeLinear + MatMul into MatMulNBits, which computes differently. With --as-close M (a model-level check for
rewrites where each runtime rounds activations itself, so element-wise agreement is loose), each
float output of REWRITTEN in onnxruntime (both optimization levels) must be as close to
ORIGINAL's output in onnxruntime as tract's output of REWRITTEN is, in cosine, within M. --optimized FILE
writes onnxruntime's default-optimized graph of REWRITTEN to FILE (to see what it fused). Prints
one line per output and exits 1 on any failure.
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


def cosine(x, y):
    """Cosine of two flattened arrays in float64; NaN when either holds NaN, 1 for two zero
    vectors, 0 for one."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 and ny == 0:
        return 1.0
    if nx == 0 or ny == 0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def as_close(n, names, ro, ra, rb, margin, tag=""):
    """Whether each float output of rb is as close to ro (the original) as ra is, in cosine,
    within margin (NaN fails). Prints one line per output."""
    ok = True
    for name, o, x, y in zip(names, ro, ra, rb):
        if np.asarray(o).dtype.kind != "f" or np.shape(o) != np.shape(y):
            continue
        want, got = cosine(o, x), cosine(o, y)
        good = bool(np.isfinite(got) and got >= want - margin)
        print(f"set {n} `{name}`{tag}: cosine to the original {got:.6f} "
              f"(tract {want:.6f}) {'ok' if good else 'FAIL'}")
        ok &= good
    return ok


def compare(n, names, ra, rb, tol, tag=""):
    """The criterion of onnx-slim's verify (src/verify/compare.rs): |a-b| <= tol*max(1,|a|),
    NaN equal only to NaN at the same place, an infinity only to the same infinity, equal dtypes
    and shapes; everything else exactly equal. Prints one line per output; returns whether all
    passed."""
    ok = True
    for name, x, y in zip(names, ra, rb):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            print(f"set {n} `{name}`{tag}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
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
            print(f"set {n} `{name}`{tag}: max abs {m:.3g} {'FAIL' if bad.any() else 'ok'}")
            ok &= not bad.any()
        else:
            same = np.array_equal(x, y)
            print(f"set {n} `{name}`{tag}: {'equal' if same else 'DIFFERENT'}")
            ok &= same
    return ok


def main():
    args = sys.argv[1:]
    expected = None
    if "--expected" in args:
        # --expected DEFAULT_TOL: the reference is each folder's output_K.pb (tract's outputs of
        # REWRITTEN). onnxruntime's basic optimizations must reproduce it at TOLERANCE; with its
        # default optimizations (which may fuse DequantizeLinear → MatMul into kernels that also
        # quantize activations) it must load, run and stay within DEFAULT_TOL.
        i = args.index("--expected")
        expected = float(args[i + 1])
        del args[i : i + 2]
    margin = None
    if "--as-close" in args:
        i = args.index("--as-close")
        margin = float(args[i + 1])
        del args[i : i + 2]
    optimized = None
    if "--optimized" in args:
        i = args.index("--optimized")
        optimized = args[i + 1]
        del args[i : i + 2]
    original, rewritten, tol = args[0], args[1], float(args[2])
    dirs = args[3:]
    if margin is not None and expected is None:
        raise SystemExit("--as-close compares with tract's outputs: give --expected too")
    if expected is not None and not dirs:
        raise SystemExit("--expected needs test data folders with output_K.pb")
    onnx.checker.check_model(onnx.load(rewritten))

    def session(path, level=None, save=None):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if level is not None:
            opts.graph_optimization_level = level
        if save is not None:
            opts.optimized_model_filepath = save
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    a = session(original)
    if expected is None:
        b = session(rewritten)
    else:
        b = session(rewritten, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        c = session(rewritten, save=optimized)
    ok = True
    for n, feeds in enumerate(load_inputs(a, dirs)):
        names = [o.name for o in a.get_outputs()]
        if names != [o.name for o in b.get_outputs()]:
            print(f"output names differ: {names} vs {[o.name for o in b.get_outputs()]}")
            sys.exit(1)
        if expected is not None:
            ra = [numpy_helper.to_array(onnx.load_tensor(f"{dirs[n]}/output_{k}.pb"))
                  for k in range(len(names))]
        else:
            ra = a.run(None, feeds)
        rb = b.run(None, feeds)
        if len(ra) != len(names) or len(rb) != len(names):
            print(f"set {n}: {len(ra)} and {len(rb)} outputs for {len(names)} names")
            sys.exit(1)
        ok &= compare(n, names, ra, rb, tol)
        if expected is not None:
            rc = c.run(None, feeds)
            ok &= compare(n, names, ra, rc, expected, " (default optimizations)")
            if margin is not None:
                ro = a.run(None, feeds)
                ok &= as_close(n, names, ro, ra, rb, margin)
                ok &= as_close(n, names, ro, ra, rc, margin, " (default optimizations)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
