//! What an op's inference, MAC count and no-op test see ([`InferCx`], [`NoopCx`]), and the shape
//! arithmetic shared by the families: broadcasting, reshaping, sliding windows, slices.
//!
//! Dims are [`Dim`]s: known sizes or symbols (see [`crate::ir::facts`]). All arithmetic on known
//! sizes is checked: an absurd dim gives "unknown", never a panic or a wrapped value.

use crate::ir::facts::{Dim, Fact, Symbols, MAX_VALUE_LEN};
use crate::onnx::proto::{tensor_proto::DataType, AttributeProto, NodeProto};

const UNKNOWN: Fact = Fact {
    dtype: None,
    shape: None,
    value: None,
    declared: false,
};

/// A node being inferred: its attributes, the facts of its inputs, the model's opset, and the
/// symbol source for sizes nobody knows.
pub struct InferCx<'a> {
    /// The node.
    pub node: &'a NodeProto,
    /// The default-domain opset, if known. `None` reads version-dependent operands leniently:
    /// an attribute if present, else the input.
    pub opset: Option<i64>,
    /// Input facts by slot; `None` for an absent optional input.
    pub ins: &'a [Option<Fact>],
    /// Symbols for unknown sizes.
    pub syms: &'a mut Symbols,
}

/// Multiply-accumulates of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacCount {
    /// The count, saturating at `u64::MAX`.
    pub macs: u64,
    /// Whether a product overflowed and was clamped.
    pub saturated: bool,
    /// Symbols counted as 1 (each once).
    pub syms: Vec<u32>,
}

/// A node whose multiply-accumulates are counted: its attributes and the facts of its inputs
/// and outputs.
pub struct MacCx<'a> {
    /// The node.
    pub node: &'a NodeProto,
    /// Input facts by slot; `None` for an absent optional input.
    pub ins: &'a [Option<Fact>],
    /// Output facts by slot.
    pub outs: &'a [Fact],
}

impl MacCx<'_> {
    /// Facts of input `i` (empty if absent).
    pub fn x(&self, i: usize) -> &Fact {
        self.ins.get(i).and_then(Option::as_ref).unwrap_or(&UNKNOWN)
    }

    /// Integer attribute `name`.
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        attr_i(self.node, name)
    }
}

/// A node tested for being a no-op: its attributes, opset, and the facts of its inputs and
/// first output.
pub struct NoopCx<'a> {
    /// The node.
    pub node: &'a NodeProto,
    /// The default-domain opset (1 when the model imports none).
    pub opset: i64,
    /// Input facts by slot; `None` for an absent optional input.
    pub ins: &'a [Option<Fact>],
    /// Facts of output 0.
    pub out: &'a Fact,
}

/// The attribute `name` of `node`.
pub fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

/// Integer attribute `name` of `node`.
pub fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

/// Float attribute `name` of `node`.
pub fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).and_then(|a| a.f)
}

/// Integer-list attribute `name` of `node`.
pub fn attr_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

/// String attribute `name` of `node`, lossily decoded.
pub fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_deref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

impl<'a> InferCx<'a> {
    /// Facts of input `i` (empty if absent).
    pub fn x(&self, i: usize) -> &Fact {
        self.ins.get(i).and_then(Option::as_ref).unwrap_or(&UNKNOWN)
    }

    /// Whether input `i` is present.
    pub fn has(&self, i: usize) -> bool {
        self.ins.get(i).is_some_and(Option::is_some)
    }

    /// Number of output slots.
    pub fn n_out(&self) -> usize {
        self.node.output.len()
    }

    /// Integer attribute `name`.
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        attr_i(self.node, name)
    }

    /// Integer-list attribute `name` (`None` when absent or empty).
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        attr_ints(self.node, name)
            .filter(|v| !v.is_empty())
            .map(<[i64]>::to_vec)
    }

    /// Ints attribute `name` with `len` values, or `len` copies of `default` when it is absent;
    /// `None` when it has another length.
    pub fn attr_ints_or(&self, name: &str, len: usize, default: i64) -> Option<Vec<i64>> {
        match self.attr_ints(name) {
            Some(v) => (v.len() == len).then_some(v),
            None => Some(vec![default; len]),
        }
    }

    /// String attribute `name`.
    pub fn attr_s(&self, name: &str) -> Option<String> {
        attr_s(self.node, name)
    }

    /// The known value of input `i`.
    pub fn val(&self, i: usize) -> Option<Vec<i64>> {
        self.x(i).known_value()
    }

    /// A fresh symbol.
    pub fn fresh(&mut self) -> Dim {
        self.syms.fresh()
    }

    /// An operand that moved from an attribute to input `input` at some opset (`axes`, `pads`,
    /// `split`, ...): the attribute if present, else the input's known value. `Ok(None)` when
    /// neither is given, `Err(())` when the input is there but its value unknown.
    pub fn attr_or_input(&self, name: &str, input: usize) -> Result<Option<Vec<i64>>, ()> {
        if let Some(a) = attr(self.node, name) {
            return Ok(Some(a.ints.clone()));
        }
        if self.has(input) {
            return self.val(input).map(Some).ok_or(());
        }
        Ok(None)
    }

    /// Numpy broadcasting of two shapes; `None` if they cannot broadcast.
    pub fn broadcast(&mut self, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
        broadcast(self.syms, a, b)
    }
}

/// One output: `dtype` and `shape`, no value.
pub fn fact(dtype: Option<i32>, shape: Option<Vec<Dim>>) -> Fact {
    Fact {
        dtype,
        shape,
        value: None,
        declared: false,
    }
}

/// The inference of ops whose outputs are not inferred: every output unknown.
pub fn unknown(_cx: &mut InferCx) -> Vec<Fact> {
    vec![]
}

/// `axis` normalised against `rank` (negative counts from the end), or `None` if out of range.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Numpy broadcasting of two shapes; `None` if they cannot broadcast.
pub fn broadcast(syms: &mut Symbols, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.len())
            .checked_sub(r)
            .map(|j| a[j])
            .unwrap_or(Dim::K(1));
        let db = (i + b.len())
            .checked_sub(r)
            .map(|j| b[j])
            .unwrap_or(Dim::K(1));
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (Dim::K(1), y) => y,
            (x, Dim::K(1)) => x,
            (Dim::K(_), Dim::K(_)) => return None,
            (Dim::K(x), Dim::S(_)) | (Dim::S(_), Dim::K(x)) => Dim::K(x),
            _ => syms.fresh(),
        });
    }
    Some(out)
}

/// Product of dims: known if all are known, a lone symbol times 1 stays that symbol, else a
/// fresh symbol.
pub fn product(syms: &mut Symbols, dims: &[Dim]) -> Dim {
    let mut k = 1i64;
    let mut sym = None;
    for d in dims {
        match *d {
            Dim::K(v) => match k.checked_mul(v) {
                Some(p) => k = p,
                None => return syms.fresh(),
            },
            s @ Dim::S(_) if sym.is_none() => sym = Some(s),
            Dim::S(_) => return syms.fresh(),
        }
    }
    match sym {
        None => Dim::K(k),
        Some(s) if k == 1 => s,
        Some(_) => syms.fresh(),
    }
}

/// Output shape of `Reshape(data of shape input, target)`; `None` if the target is invalid.
pub fn reshape(
    syms: &mut Symbols,
    input: Option<&[Dim]>,
    target: &[Dim],
    allowzero: bool,
) -> Option<Vec<Dim>> {
    let mut out: Vec<Dim> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.iter().enumerate() {
        match *t {
            Dim::K(0) if !allowzero => out.push(match input {
                Some(x) => *x.get(i)?,
                None => syms.fresh(),
            }),
            Dim::K(-1) => {
                if infer_at.is_some() {
                    return None;
                }
                infer_at = Some(i);
                out.push(Dim::K(-1));
            }
            Dim::K(v) if v < 0 => return None,
            d => out.push(d),
        }
    }
    let Some(at) = infer_at else {
        return Some(out);
    };
    let Some(input) = input else {
        out[at] = syms.fresh();
        return Some(out);
    };
    // Cancel equal symbols between the input and the other output dims, then divide.
    let mut num: Vec<Dim> = input.to_vec();
    let mut kn: i64 = 1;
    let mut kd: i64 = 1;
    let mut rest_syms: Vec<Dim> = Vec::new();
    for (i, d) in out.iter().enumerate() {
        if i == at {
            continue;
        }
        match d {
            Dim::K(v) => kd = kd.checked_mul(*v)?,
            s => {
                if let Some(p) = num.iter().position(|x| x == s) {
                    num.remove(p);
                } else {
                    rest_syms.push(*s);
                }
            }
        }
    }
    let mut left_syms = Vec::new();
    for d in num {
        match d {
            Dim::K(v) => kn = kn.checked_mul(v)?,
            s => left_syms.push(s),
        }
    }
    out[at] = if rest_syms.is_empty() && left_syms.is_empty() {
        if kd == 0 || kn.checked_rem(kd)? != 0 {
            return None;
        }
        Dim::K(kn.checked_div(kd)?)
    } else if rest_syms.is_empty() && left_syms.len() == 1 && kn == kd {
        left_syms[0]
    } else {
        syms.fresh()
    };
    Some(out)
}

/// Normalised (begin, end, step) of one Slice axis of length `n`, as the ONNX spec clamps them.
pub fn slice_bounds(start: i64, end: i64, step: i64, n: i64) -> (i64, i64, i64) {
    let n = n.max(0);
    let adj = |x: i64| if x < 0 { x.saturating_add(n) } else { x };
    let (mut b, mut e) = (adj(start), adj(end));
    if step > 0 {
        b = b.clamp(0, n);
        e = e.clamp(0, n);
    } else {
        b = b.clamp(0, (n - 1).max(0));
        e = e.clamp(-1, n - 1);
    }
    (b, e, step)
}

/// Number of elements a normalised slice takes.
pub fn slice_len(b: i64, e: i64, step: i64) -> i64 {
    let (span, s) = if step > 0 {
        (e.saturating_sub(b), step)
    } else {
        (b.saturating_sub(e), step.saturating_neg())
    };
    if span <= 0 || s <= 0 {
        0
    } else {
        span.saturating_add(s - 1) / s
    }
}

/// Output length of a sliding window (Conv, pooling) over `h` with kernel `k`, stride `s`,
/// dilation `d` and pads `pb`, `pe`; `None` when it does not fit or a value is absurd.
#[allow(clippy::too_many_arguments)]
pub fn window_out(
    h: i64,
    k: i64,
    s: i64,
    d: i64,
    pb: i64,
    pe: i64,
    auto_pad: &str,
    ceil: bool,
) -> Option<i64> {
    if s <= 0 || k <= 0 || d <= 0 || h < 0 || pb < 0 || pe < 0 {
        return None;
    }
    let ek = d.checked_mul(k - 1)?.checked_add(1)?;
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => Some(h.checked_add(s - 1)? / s),
        "VALID" => Some(h.checked_sub(ek).filter(|v| *v >= 0)? / s + 1),
        _ => {
            let total = h.checked_add(pb)?.checked_add(pe)?;
            let num = total.checked_sub(ek).filter(|v| *v >= 0)?;
            let mut out = if ceil {
                num.checked_add(s - 1)? / s
            } else {
                num / s
            } + 1;
            // With ceil_mode, the last window must start inside the input or left padding.
            if ceil && (out - 1).checked_mul(s)? >= h.checked_add(pb)? {
                out -= 1;
            }
            Some(out)
        }
    }
}

/// Spatial output dims of a Conv or pooling over `x` (rank r ≥ 3) with `kernel` (r − 2 values):
/// known sizes through [`window_out`]; a symbol stays when the window keeps the size (1-wide,
/// stride 1, no pads, or `SAME` with stride 1), else a fresh one.
pub fn spatial_out(cx: &mut InferCx, x: &[Dim], kernel: &[i64], ceil: bool) -> Option<Vec<Dim>> {
    let sp = x.len().checked_sub(2)?;
    if kernel.len() != sp {
        return None;
    }
    let strides = cx.attr_ints_or("strides", sp, 1)?;
    let dil = cx.attr_ints_or("dilations", sp, 1)?;
    let pads = cx.attr_ints_or("pads", 2 * sp, 0)?;
    let auto = cx.attr_s("auto_pad").unwrap_or_default();
    let mut out = Vec::with_capacity(sp);
    for i in 0..sp {
        out.push(match x[2 + i] {
            Dim::K(h) => Dim::K(window_out(
                h,
                kernel[i],
                strides[i],
                dil[i],
                pads[i],
                pads[sp + i],
                &auto,
                ceil,
            )?),
            s @ Dim::S(_) => {
                let trivial =
                    kernel[i] == 1 && strides[i] == 1 && pads[i] == 0 && pads[sp + i] == 0;
                if trivial || (auto.starts_with("SAME") && strides[i] == 1) {
                    s
                } else {
                    cx.fresh()
                }
            }
        });
    }
    Some(out)
}

/// The facts of a constant tensor: dtype, dims, and the value of a small integer one.
pub fn const_fact(t: &crate::onnx::proto::TensorProto) -> Fact {
    let dtype = t.data_type.filter(|d| *d != 0);
    let value = if dtype.is_some_and(is_int) && t.dims.len() <= 1 {
        crate::ir::tensor::numel(t)
            .filter(|n| *n as usize <= MAX_VALUE_LEN)
            .and_then(|_| crate::ir::tensor::to_i64(t).ok())
            .map(|a| a.iter().map(|v| Dim::K(*v)).collect())
    } else {
        None
    };
    Fact {
        dtype,
        shape: Some(t.dims.iter().map(|d| Dim::K(*d)).collect()),
        value,
        declared: false,
    }
}

/// Whether `dt` is an integer (or bool) element type.
pub fn is_int(dt: i32) -> bool {
    use DataType::*;
    [
        Int64, Int32, Int16, Int8, Uint64, Uint32, Uint16, Uint8, Bool,
    ]
    .iter()
    .any(|d| *d as i32 == dt)
}

/// Elements of `s` with symbols counted as 1 (recorded in `syms`), saturating.
pub fn numel_as_one(s: &[Dim], syms: &mut Vec<u32>, saturated: &mut bool) -> Option<u64> {
    let mut p = 1u64;
    for d in s {
        match *d {
            Dim::K(v) => {
                let v = u64::try_from(v).ok()?;
                p = p.checked_mul(v).unwrap_or_else(|| {
                    *saturated = true;
                    u64::MAX
                });
            }
            Dim::S(id) => {
                if !syms.contains(&id) {
                    syms.push(id);
                }
            }
        }
    }
    Some(p)
}

/// MACs of a layer: elements of output 0 (symbols as 1) times the reduction length.
pub fn output_times(outs: &[Fact], reduce: u64) -> Option<MacCount> {
    let out = outs.first()?.shape.as_ref()?;
    let mut c = MacCount::default();
    let e = numel_as_one(out, &mut c.syms, &mut c.saturated)?;
    c.macs = e.checked_mul(reduce).unwrap_or_else(|| {
        c.saturated = true;
        u64::MAX
    });
    Some(c)
}

/// A known non-negative dim as `u64`.
pub fn known_u64(d: &Dim) -> Option<u64> {
    d.known().and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &[i64]) -> Vec<Dim> {
        v.iter().map(|x| Dim::K(*x)).collect()
    }

    #[test]
    fn broadcasting() {
        let mut s = Symbols::default();
        assert_eq!(
            broadcast(&mut s, &k(&[2, 1, 4]), &k(&[3, 1])),
            Some(k(&[2, 3, 4]))
        );
        assert_eq!(broadcast(&mut s, &k(&[2]), &k(&[3])), None);
        let n = s.named("N");
        assert_eq!(
            broadcast(&mut s, &[n, Dim::K(4)], &k(&[4])),
            Some(vec![n, Dim::K(4)])
        );
    }

    #[test]
    fn reshape_cancels_symbols() {
        let mut s = Symbols::default();
        let n = s.named("N");
        let x = vec![n, Dim::K(4), Dim::K(2)];
        assert_eq!(
            reshape(&mut s, Some(&x), &k(&[0, -1]), false),
            Some(vec![n, Dim::K(8)])
        );
        assert_eq!(
            reshape(&mut s, Some(&x), &k(&[-1, 8]), false),
            Some(vec![n, Dim::K(8)])
        );
        assert_eq!(
            reshape(&mut s, Some(&k(&[6, 4])), &k(&[-1, 3]), false),
            Some(k(&[8, 3]))
        );
    }

    #[test]
    fn windows_never_panic_on_absurd_values() {
        let m = i64::MAX;
        assert_eq!(window_out(m, m, 1, m, 0, 0, "", false), None);
        assert_eq!(window_out(m, 1, 1, 1, m, 0, "", false), None);
        assert_eq!(window_out(5, 3, 0, 1, 0, 0, "", false), None);
        assert_eq!(window_out(8, 3, 1, 1, 1, 1, "", false), Some(8));
        assert_eq!(window_out(7, 2, 2, 1, 0, 0, "", true), Some(4));
        assert_eq!(window_out(1, 3, 1, 1, 0, 0, "", false), None);
    }

    #[test]
    fn malformed_dims_never_panic() {
        assert_eq!(slice_bounds(0, 5, 1, -3), (0, 0, 1));
        assert_eq!(slice_len(i64::MIN, i64::MAX, i64::MIN), 0);
        let mut s = Symbols::default();
        let x = vec![Dim::K(i64::MIN), Dim::K(-1)];
        assert_eq!(reshape(&mut s, Some(&x), &k(&[-1, 0]), false), None);
        let _ = reshape(&mut s, Some(&x[..1]), &k(&[0, -1]), false);
    }
}
