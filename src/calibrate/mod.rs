//! Calibration: the inputs a layer really sees, captured by running the original model in tract on
//! representative input sets, and turned into Gram matrices `XᵀX` for data-aware factorisation,
//! or into activation ranges ([`ranges`], see [`range`]) for static quantization.
//!
//! [`capture`] clones the `ModelProto`, adds the wanted values to `graph.output`, drops every
//! declared output shape and `value_info` entry (declared shapes can be wrong or symbolic, and
//! tract infers them anyway), binds the graph inputs to the shapes of each input set, and runs
//! the optimized plan, after preparing the model for each input set as the verifier does
//! ([`crate::verify::prepare`]: symbolic dims bound, decidable `If`s inlined, so silero_vad runs):
//! calibration and verification run one model the same way. [`capture_each`] hands over one
//! set's values at a time. A rule that cannot use the calibration for a layer says so in a skip
//! reason that holds [`FAILED`] (counted by the report, see
//! [`crate::rewrite::RunReport::calibration_failures`]). [`gram`] turns one captured activation into the rows a layer multiplies
//! by its weight: rows of a MatMul's input, columns of a left-hand MatMul's input, `im2col`
//! patches of a Conv's input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2};
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::Gram;
use crate::onnx::proto::{ModelProto, ValueInfoProto};
use crate::verify::InputSet;

pub mod range;

/// Loads every input set under `paths`: `test_data_set_N` folders, folders of them, `.npz` or
/// `.npy` files (the loader of [`crate::verify::load_inputs`]).
pub fn load_sets(paths: &[PathBuf], model: &ModelProto) -> Result<Vec<InputSet>> {
    let mut sets = Vec::new();
    for p in paths {
        sets.extend(crate::verify::load_inputs(p, model)?);
    }
    if sets.is_empty() {
        return Err(Error::Usage("--calibration gave no input set".into()));
    }
    Ok(sets)
}

/// The words every skip reason of a layer whose calibration failed holds, followed by `: ` and
/// why: the report counts these skips and warns about them.
pub const FAILED: &str = "calibration failed";

/// `calibration failed: {why}`: the skip reason of a layer whose calibration failed.
pub fn failed(why: impl std::fmt::Display) -> String {
    format!("{FAILED}: {why}")
}

/// One input set's captured values, by name, as `f32`.
pub type Captured = BTreeMap<String, ArrayD<f32>>;

fn tract_err(reason: impl std::fmt::Display) -> Error {
    Error::Tract {
        model: "calibration model".into(),
        reason: reason.to_string(),
    }
}

/// Runs `model` on every set of `sets` with `values` added as graph outputs; returns, per set,
/// each wanted value converted to `f32`. Values that are graph inputs are taken from the set.
/// Within `memory_limit` as [`capture_each`] runs it.
pub fn capture(
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    memory_limit: u64,
) -> Result<Vec<Captured>> {
    let mut out = vec![Captured::new(); sets.len()];
    capture_each(model, values, sets, memory_limit, |i, c| {
        out[i].extend(c);
        Ok(())
    })?;
    Ok(out)
}

/// [`capture`], handing each set's values to `f` (with the set's index) as soon as they are
/// computed, so that only one set's activations are held at a time.
///
/// When tract can hold the model whole within `memory_limit` bytes
/// ([`crate::verify::segment::model_need`]), one run per set captures everything: each distinct
/// input signature (shapes, types, and the values of small inputs, which may decide `If` nodes)
/// is prepared for tract as the verifier prepares it ([`crate::verify::prepare`]: symbolic dims
/// bound, decidable `If`s inlined) and compiled once, and `f` is called once per set. Otherwise
/// the model runs segment by segment with the cuts verification uses
/// ([`crate::verify::segment::run_segments`]), holding only the cut values and the wanted values
/// of one segment and set: `f` is then called once per segment and set with the values that
/// segment made (graph inputs with the set's first call). Either way each value reaches `f` once
/// per set, its sets in order.
pub fn capture_each(
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    memory_limit: u64,
    f: impl FnMut(usize, Captured) -> Result<()>,
) -> Result<()> {
    if crate::verify::segment::model_need(model) > memory_limit {
        return capture_segmented(model, values, sets, memory_limit, f).map(|_| ());
    }
    capture_whole(model, values, sets, f)
}

thread_local! {
    static SEGMENT_WISE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many captures this thread has run segment by segment ([`capture_segmented`]): what shows
/// that a run kept calibration within `--memory-limit` (the command runs on the calling thread,
/// see [`crate::cli::embed::run`]).
pub fn segment_wise_captures() -> usize {
    SEGMENT_WISE.with(|c| c.get())
}

/// [`capture_each`] segment by segment, whatever the size of the model; returns the number of
/// segments.
pub fn capture_segmented(
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    memory_limit: u64,
    mut f: impl FnMut(usize, Captured) -> Result<()>,
) -> Result<usize> {
    let graph = model.graph.as_ref().ok_or_else(|| Error::Graph {
        reason: "the model has no graph".into(),
    })?;
    let inputs: HashSet<&str> = graph
        .input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .collect();
    let mut keep: Vec<String> = Vec::new();
    let mut wanted_inputs: Vec<&String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
    for v in values.iter().filter(|v| seen.insert(v.as_str())) {
        if inputs.contains(v.as_str()) {
            wanted_inputs.push(v);
        } else {
            keep.push(v.clone());
        }
    }
    let set_inputs = |i: usize| -> Result<Captured> {
        let mut c = Captured::new();
        for v in &wanted_inputs {
            if let Some(t) = sets[i].get(v) {
                c.insert((*v).clone(), to_f32(t, v)?);
            }
        }
        Ok(c)
    };
    SEGMENT_WISE.with(|c| c.set(c.get() + 1));
    let mut given = vec![false; sets.len()];
    let segments = crate::verify::segment::run_segments(
        model,
        sets,
        memory_limit,
        &keep,
        "calibration model",
        |i, outs| {
            let mut captured = if given[i] {
                Captured::new()
            } else {
                given[i] = true;
                set_inputs(i)?
            };
            for (name, t) in outs {
                let a = to_f32(&t, &name)?;
                captured.insert(name, a);
            }
            f(i, captured)
        },
    )?;
    for i in 0..sets.len() {
        if !given[i] && !wanted_inputs.is_empty() {
            f(i, set_inputs(i)?)?;
        }
    }
    Ok(segments)
}

/// [`capture_each`] with the whole model in tract.
fn capture_whole(
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    mut f: impl FnMut(usize, Captured) -> Result<()>,
) -> Result<()> {
    let mut proto = model.clone();
    let graph = proto.graph.as_mut().ok_or_else(|| Error::Graph {
        reason: "the model has no graph".into(),
    })?;
    let inputs: HashSet<String> = graph.input.iter().filter_map(|i| i.name.clone()).collect();
    // Each captured value's position among the outputs: its own when it is a graph output
    // already, else one added for it.
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, o) in graph.output.iter_mut().enumerate() {
        o.r#type = None;
        if let Some(n) = &o.name {
            position.entry(n.clone()).or_insert(i);
        }
    }
    graph.value_info.clear();
    let mut extra: Vec<(String, usize)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for v in values {
        if inputs.contains(v) || !seen.insert(v.as_str()) {
            continue;
        }
        let at = *position.entry(v.clone()).or_insert_with(|| {
            graph.output.push(ValueInfoProto {
                name: Some(v.clone()),
                ..Default::default()
            });
            graph.output.len() - 1
        });
        extra.push((v.clone(), at));
    }
    let mut plans: BTreeMap<String, Arc<TypedRunnableModel>> = BTreeMap::new();
    for (index, set) in sets.iter().enumerate() {
        let key: String = set
            .tensors
            .iter()
            .map(|(n, t)| {
                let small = if t.len() <= crate::verify::prepare::SMALL_INPUT {
                    t.dump(true).unwrap_or_default()
                } else {
                    String::new()
                };
                format!("{n}:{:?}{:?}={small};", t.datum_type(), t.shape())
            })
            .collect();
        if !plans.contains_key(&key) {
            let bytes = crate::onnx::encode_model(&crate::verify::prepare(&proto, set)?.model);
            plans.insert(key.clone(), compile(&bytes, set)?);
        }
        let res = run_plan(&plans[&key], set)?;
        let mut captured = Captured::new();
        for (name, at) in &extra {
            let t = res
                .get(*at)
                .ok_or_else(|| tract_err(format!("no output for `{name}`")))?;
            captured.insert(name.clone(), to_f32(t, name)?);
        }
        for v in values.iter().filter(|v| inputs.contains(*v)) {
            if let Some(t) = set.get(v) {
                captured.insert(v.clone(), to_f32(t, v)?);
            }
        }
        f(index, captured)?;
    }
    Ok(())
}

/// The range of each of `values` over `sets` by `method`, captured within `memory_limit` by
/// [`capture_each`] and reduced set by set (see [`range`]).
pub fn ranges(
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    method: range::RangeMethod,
    memory_limit: u64,
) -> Result<BTreeMap<String, range::RangeCollector>> {
    let mut out: BTreeMap<String, range::RangeCollector> = values
        .iter()
        .map(|v| (v.clone(), range::RangeCollector::new(method)))
        .collect();
    capture_each(model, values, sets, memory_limit, |_, captured| {
        for (name, act) in captured {
            if let Some(c) = out.get_mut(&name) {
                c.add(act.iter());
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Runs `f`, turning a tract error or a panic inside tract into an error.
fn guard<T>(f: impl FnOnce() -> TractResult<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(tract_err),
        Err(_) => Err(tract_err("tract panicked")),
    }
}

/// Compiles the encoded model `bytes` for the input shapes of `set` (optimized tract plan).
pub fn compile(bytes: &[u8], set: &InputSet) -> Result<Arc<TypedRunnableModel>> {
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(tract_err)?;
    let outlets = model.input_outlets().map_err(tract_err)?.to_vec();
    for (i, o) in outlets.iter().enumerate() {
        let name = model.node(o.node).name.clone();
        let t = set.get(&name).ok_or_else(|| {
            Error::Usage(format!(
                "calibration set `{}` has no input `{name}`",
                set.label
            ))
        })?;
        model
            .set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
            .map_err(tract_err)?;
    }
    guard(move || model.into_optimized()?.into_runnable())
}

/// Runs a plan from [`compile`] on `set`; returns the outputs in graph order.
pub fn run_plan(plan: &Arc<TypedRunnableModel>, set: &InputSet) -> Result<Vec<Tensor>> {
    let feed = feed_for(plan, set)?;
    let plan = plan.clone();
    let out = guard(move || plan.run(feed))?;
    Ok(out.into_iter().map(|v| v.into_tensor()).collect())
}

fn feed_for(plan: &Arc<TypedRunnableModel>, set: &InputSet) -> Result<TVec<TValue>> {
    let order: Vec<String> = plan
        .model()
        .input_outlets()
        .map_err(tract_err)?
        .iter()
        .map(|o| plan.model().node(o.node).name.clone())
        .collect();
    let mut feed: TVec<TValue> = tvec![];
    for name in &order {
        let t = set.get(name).ok_or_else(|| {
            Error::Usage(format!("input set `{}` has no input `{name}`", set.label))
        })?;
        feed.push(t.clone().into_tvalue());
    }
    Ok(feed)
}

fn to_f32(t: &Tensor, name: &str) -> Result<ArrayD<f32>> {
    let c = t.cast_to::<f32>().map_err(|e| Error::Tensor {
        name: name.to_string(),
        reason: format!("captured value is not numeric: {e}"),
    })?;
    Ok(c.to_plain_array_view::<f32>()
        .map_err(|e| Error::Tensor {
            name: name.to_string(),
            reason: e.to_string(),
        })?
        .to_owned())
}

/// How a layer reads its activation: which vectors get multiplied by the weight.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// `X[..., K]`: every vector along the last axis (MatMul with the weight on the right, Gemm).
    Rows,
    /// `X[K, M]` of a Gemm with `transA`: every column.
    Columns,
    /// `X[..., K, N]` of a MatMul with the weight on the left: every column of every matrix.
    BatchColumns,
    /// `X[N, C, spatial...]` of a Conv: every `im2col` patch, ordered `(c, kernel...)` like the
    /// flattened weight `[M, C·k...]`.
    Conv {
        /// Kernel size per spatial axis.
        kernel: Vec<usize>,
        /// Strides per spatial axis.
        strides: Vec<usize>,
        /// Dilations per spatial axis.
        dilations: Vec<usize>,
        /// Explicit pads `[begin..., end...]` (used when `auto_pad` is `NOTSET`).
        pads: Vec<usize>,
        /// `NOTSET`, `VALID`, `SAME_UPPER` or `SAME_LOWER`.
        auto_pad: String,
    },
}

/// Adds the rows `act` contributes under `sampling` to `gram` (width `K`).
pub fn gram(gram: &mut Gram, act: &ArrayD<f32>, sampling: &Sampling) -> Result<()> {
    let k = gram.dim();
    let bad = |why: String| Error::Tensor {
        name: "calibration activation".into(),
        reason: why,
    };
    match sampling {
        Sampling::Rows => {
            let last = *act.shape().last().unwrap_or(&1);
            if last != k {
                return Err(bad(format!("last axis is {last}, the weight expects {k}")));
            }
            let rows = act.len() / k.max(1);
            let view = act
                .view()
                .into_shape_with_order((rows, k))
                .map_err(|e| bad(e.to_string()))?;
            gram.add_rows(view);
        }
        Sampling::Columns => {
            let m = act
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|e| bad(e.to_string()))?;
            if m.nrows() != k {
                return Err(bad(format!(
                    "has {} rows, the weight expects {k}",
                    m.nrows()
                )));
            }
            gram.add_rows(m.t().as_standard_layout().view());
        }
        Sampling::BatchColumns => {
            let nd = act.ndim();
            if nd == 1 {
                return gram_rows(gram, act);
            }
            let (kk, n) = (act.shape()[nd - 2], act.shape()[nd - 1]);
            if kk != k {
                return Err(bad(format!("has {kk} rows, the weight expects {k}")));
            }
            let batch = act.len() / (kk * n).max(1);
            let v = act
                .view()
                .into_shape_with_order((batch, kk, n))
                .map_err(|e| bad(e.to_string()))?;
            for b in v.axis_iter(Axis(0)) {
                gram.add_rows(b.t().as_standard_layout().view());
            }
        }
        Sampling::Conv {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
        } => conv_gram(gram, act, kernel, strides, dilations, pads, auto_pad).map_err(bad)?,
    }
    Ok(())
}

fn gram_rows(gram: &mut Gram, act: &ArrayD<f32>) -> Result<()> {
    let k = gram.dim();
    let view = act
        .view()
        .into_shape_with_order((act.len() / k.max(1), k))
        .map_err(|e| Error::Tensor {
            name: "calibration activation".into(),
            reason: e.to_string(),
        })?;
    gram.add_rows(view);
    Ok(())
}

/// Begin pad and output length of one spatial axis.
fn axis_geometry(
    len: usize,
    k: usize,
    s: usize,
    d: usize,
    pad_begin: usize,
    pad_end: usize,
    auto_pad: &str,
) -> std::result::Result<(usize, usize), String> {
    let ext = (k - 1) * d + 1;
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => {
            let out = len.div_ceil(s);
            let total = ((out - 1) * s + ext).saturating_sub(len);
            let begin = if auto_pad == "SAME_UPPER" {
                total / 2
            } else {
                total - total / 2
            };
            Ok((begin, out))
        }
        "VALID" => {
            if len < ext {
                return Err(format!(
                    "input length {len} is shorter than the kernel {ext}"
                ));
            }
            Ok((0, (len - ext) / s + 1))
        }
        _ => {
            let padded = len + pad_begin + pad_end;
            if padded < ext {
                return Err(format!(
                    "padded length {padded} is shorter than the kernel {ext}"
                ));
            }
            Ok((pad_begin, (padded - ext) / s + 1))
        }
    }
}

/// `im2col` Gram of a 1-D or 2-D convolution input `[N, C, (H,) W]`.
fn conv_gram(
    gram: &mut Gram,
    act: &ArrayD<f32>,
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    auto_pad: &str,
) -> std::result::Result<(), String> {
    let nsp = kernel.len();
    if act.ndim() != nsp + 2 {
        return Err(format!(
            "has rank {}, a {nsp}-D convolution expects {}",
            act.ndim(),
            nsp + 2
        ));
    }
    if nsp == 0 || nsp > 2 {
        return Err(format!(
            "data-aware factoring of {nsp}-D convolutions is not supported"
        ));
    }
    // Treat 1-D as 2-D with a height of 1.
    let sh = act.shape();
    let (n, c) = (sh[0], sh[1]);
    let (h, w) = if nsp == 2 { (sh[2], sh[3]) } else { (1, sh[2]) };
    let get = |v: &[usize], i: usize, d: usize| v.get(i).copied().unwrap_or(d);
    let (kh, kw, s_h, s_w, d_h, d_w, pb_h, pb_w, pe_h, pe_w) = if nsp == 2 {
        (
            kernel[0],
            kernel[1],
            get(strides, 0, 1),
            get(strides, 1, 1),
            get(dilations, 0, 1),
            get(dilations, 1, 1),
            get(pads, 0, 0),
            get(pads, 1, 0),
            get(pads, 2, 0),
            get(pads, 3, 0),
        )
    } else {
        (
            1,
            kernel[0],
            1,
            get(strides, 0, 1),
            1,
            get(dilations, 0, 1),
            0,
            get(pads, 0, 0),
            0,
            get(pads, 1, 0),
        )
    };
    let k = c * kh * kw;
    if k != gram.dim() {
        return Err(format!(
            "gives {k}-wide patches, the weight expects {}",
            gram.dim()
        ));
    }
    let (ph, oh) = axis_geometry(h, kh, s_h, d_h, pb_h, pe_h, auto_pad)?;
    let (pw, ow) = axis_geometry(w, kw, s_w, d_w, pb_w, pe_w, auto_pad)?;
    let x = act
        .view()
        .into_shape_with_order((n, c, h, w))
        .map_err(|e| e.to_string())?;
    let positions = n * oh * ow;
    let chunk = (2_000_000 / k.max(1)).clamp(1, positions.max(1));
    let mut buf = Array2::<f32>::zeros((chunk, k));
    let mut filled = 0;
    let flush = |buf: &Array2<f32>, filled: usize, gram: &mut Gram| {
        let v: ArrayView2<f32> = buf.slice(ndarray::s![..filled, ..]);
        gram.add_rows(v);
    };
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut row = buf.row_mut(filled);
                for ci in 0..c {
                    for i in 0..kh {
                        let y = (oy * s_h + i * d_h) as isize - ph as isize;
                        for j in 0..kw {
                            let xx = (ox * s_w + j * d_w) as isize - pw as isize;
                            let v = if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                                x[[b, ci, y as usize, xx as usize]]
                            } else {
                                0.0
                            };
                            row[(ci * kh + i) * kw + j] = v;
                        }
                    }
                }
                filled += 1;
                if filled == chunk {
                    flush(&buf, filled, gram);
                    filled = 0;
                }
            }
        }
    }
    if filled > 0 {
        flush(&buf, filled, gram);
    }
    Ok(())
}
