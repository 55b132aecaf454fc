//! `Q001 quantize`: stores float weights as 8-bit integers read through `DequantizeLinear`.
//!
//! **What:** a constant float32 weight `W` that the op table ([`crate::ops::weights`]) names as a
//! kernel, recurrent weight or table — Conv, ConvTranspose, DeformConv, MatMul, Gemm (`B`),
//! LSTM/GRU/RNN (`W` and `R`), Gather's table — becomes `q = round(W / s) + z` stored as int8
//! (symmetric, `z = 0`, `q ∈ [−127, 127]`) or uint8 (asymmetric, the range widened to include 0
//! so that zero stays exactly zero), and `DequantizeLinear(q, s, z)` feeds every reader of `W`
//! under `W`'s own name. The scale is per output channel (one `s` per slice along the op's
//! output-channel axis, `DequantizeLinear`'s `axis`) or per tensor. Biases stay float.
//!
//! **Why:** a weight's bytes drop to a quarter (plus one scale and zero point per channel), the
//! usual first step before deployment; the file is standard ONNX that onnxruntime, TensorRT and
//! tract load, and runtimes that fuse `DequantizeLinear` into the op run integer kernels.
//!
//! **Example:** `y = MatMul(x, W[512,10])` → `W = DequantizeLinear(W_quantized[512,10]:int8,
//! W_scale[10], W_zero_point[10], axis=1)`, `y = MatMul(x, W)`: 20,480 → 5,120 + 50 bytes.
//!
//! **Exact:** no (lossy): each weight moves by at most `s/2`. A weight already on the grid
//! (`W = s·q` with integer `q` and `max |q| = 127` per channel, `s` a power of two) is
//! reproduced bit for bit. The report gives per weight the scheme, bytes before and after and
//! the relative weight error `‖W − Ŵ‖/‖W‖`.
//!
//! **Left alone, with a reason:** weights that are not float32, that are not constant (already
//! behind a `DequantizeLinear`, or computed), excluded by `--quantize-exclude`, too small to pay
//! for their `DequantizeLinear`, graph outputs or read inside subgraphs; QLinear*, *Integer and
//! custom-domain quantized ops. Models below opset 13 get per-tensor scales (per-channel
//! `DequantizeLinear` needs 13; the opset is not raised, since that would change the meaning of
//! other ops); below opset 10 nothing is quantized. A rewrite that would not make the model
//! smaller is refused by the driver.

use bytes::Bytes;

use super::util::{make_attr_i, make_node};
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};
use crate::ops::{self, WeightOperand, WeightRole};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

/// Weights with fewer elements stay float by default: the `DequantizeLinear` node, its scale and
/// zero point cost more than the bytes saved.
pub const DEFAULT_MIN_ELEMENTS: u64 = 256;
/// Default verification tolerance, a sanity bound (see [`Quantize::tolerance`]).
pub const VERIFY_TOLERANCE: f32 = 2.0;

/// The integer type weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightType {
    /// Symmetric int8, zero point 0, values in `[−127, 127]`.
    #[default]
    Int8,
    /// Asymmetric uint8: `[min, max]` (widened to include 0) maps onto `[0, 255]`.
    Uint8,
}

/// Whether one scale serves the whole tensor or each output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// One scale and zero point per output channel.
    #[default]
    Channel,
    /// One scale and zero point for the tensor.
    Tensor,
}

/// Options of the `quantize` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeConfig {
    /// Storage type.
    pub weights: WeightType,
    /// Per channel or per tensor.
    pub granularity: Granularity,
    /// Node or weight names left in float.
    pub exclude: Vec<String>,
    /// Weights with fewer elements stay float.
    pub min_elements: u64,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            weights: WeightType::default(),
            granularity: Granularity::default(),
            exclude: Vec::new(),
            min_elements: DEFAULT_MIN_ELEMENTS,
        }
    }
}

impl QuantizeConfig {
    /// Builds the options from the command-line flags, refusing values it does not know.
    pub fn from_flags(
        weights: Option<&str>,
        granularity: Option<&str>,
        exclude: &[String],
    ) -> Result<QuantizeConfig> {
        let mut cfg = QuantizeConfig::default();
        match weights {
            None | Some("int8") => {}
            Some("uint8") => cfg.weights = WeightType::Uint8,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--quantize-weights must be `int8` or `uint8`, got `{other}`"
                )))
            }
        }
        match granularity {
            None | Some("channel") => {}
            Some("tensor") => cfg.granularity = Granularity::Tensor,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--quantize-granularity must be `channel` or `tensor`, got `{other}`"
                )))
            }
        }
        cfg.exclude = exclude
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Ok(cfg)
    }

    /// Whether any flag differs from the defaults.
    pub fn is_default(&self) -> bool {
        *self == QuantizeConfig::default()
    }
}

/// See the module docs.
pub struct Quantize;

/// Where `id` reads weights to quantize: `(input slot, output-channel axis)` per weight operand,
/// from the op table (biases excluded; they stay float). The axis may be negative (counted from
/// the end). MatMul's table entry names both sides: the weight is the constant one, the right
/// one when neither or both are.
fn weight_operands(g: &Graph, id: NodeId) -> Vec<(usize, i64)> {
    let Some(p) = g.node(id).op() else {
        return vec![];
    };
    let is_const = |slot: usize| g.input(id, slot).and_then(|v| g.const_tensor(v)).is_some();
    let ops: Vec<WeightOperand> = ops::weights(p)
        .into_iter()
        .filter(|w| w.role != WeightRole::Bias && w.out_axis.is_some())
        .collect();
    let kernel_const = ops
        .iter()
        .any(|w| w.role == WeightRole::Kernel && is_const(w.input));
    ops.into_iter()
        .filter(|w| w.role != WeightRole::LeftKernel || (is_const(w.input) && !kernel_const))
        .filter_map(|w| Some((w.input, w.out_axis?)))
        .collect()
}

/// Whether `id` reads its weight operand `slot` as an indexed table (Gather's data): a table
/// computed at run time is not a weight, so no skip is reported for it.
fn reads_table(g: &Graph, id: NodeId, slot: usize) -> bool {
    g.node(id).op().is_some_and(|p| {
        ops::weights(p)
            .iter()
            .any(|w| w.input == slot && w.role == WeightRole::Table)
    })
}

fn is_quantized_op(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let op = n.op_type();
    op.starts_with("QLinear")
        || op.ends_with("Integer")
        || op == "DynamicQuantizeLinear"
        || (!n.domain().is_empty()
            && (op.starts_with('Q') || op.contains("Quant") || op.contains("NBits")))
}

/// One weight to quantize: the value and the axis its readers agree on.
#[derive(Debug, Clone)]
struct Candidate {
    weight: ValueRef,
    /// `Some(axis)` for per-channel (normalised to the weight's rank), `None` for per-tensor.
    axis: Option<usize>,
    /// Why per-channel was not used, when it was asked for.
    note: Option<String>,
}

fn weight_name(g: &Graph, v: ValueRef) -> &str {
    g.value_name(v)
}

/// Whether `id` is a default-domain op this rule quantizes weights of, not excluded by name.
fn quantizable_reader(g: &Graph, cfg: &QuantizeConfig, id: NodeId) -> bool {
    g.node(id).domain().is_empty()
        && !weight_operands(g, id).is_empty()
        && !cfg.exclude.iter().any(|e| *e == g.node(id).label())
}

/// Collects every weight read by a quantizable op: the first reader and the weight, with skips
/// for the places that stay float. Linear in the graph.
fn find_weights(model: &Model, cfg: &QuantizeConfig, f: &mut Findings) -> Vec<(NodeId, ValueRef)> {
    let g = &model.graph;
    let opset = model.opset("").unwrap_or(1);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for id in g.ops() {
        if is_quantized_op(g, id) {
            f.skip(model, id, "already a quantized op");
            continue;
        }
        if !g.node(id).domain().is_empty() {
            continue;
        }
        let ops = weight_operands(g, id);
        if ops.is_empty() {
            continue;
        }
        if cfg.exclude.iter().any(|e| *e == g.node(id).label()) {
            f.skip(model, id, "excluded by --quantize-exclude");
            continue;
        }
        if opset < 10 {
            f.skip(
                model,
                id,
                format!("DequantizeLinear needs opset 10, the model has {opset}"),
            );
            continue;
        }
        for (slot, _) in ops {
            let Some(v) = g.input(id, slot) else { continue };
            if g.const_tensor(v).is_none() {
                if g.node(v.node).op_type() == "DequantizeLinear" {
                    f.skip(model, id, format!("input {slot} is already quantized"));
                } else if !reads_table(g, id, slot) {
                    f.skip(model, id, format!("input {slot} is not a constant weight"));
                }
                continue;
            }
            if seen.insert(v) {
                out.push((id, v));
            }
        }
    }
    out
}

/// Decides how `weight` is quantized, from all its readers; or why it stays float.
/// Work is proportional to the weight's readers, not to the graph.
fn plan(
    model: &Model,
    cfg: &QuantizeConfig,
    weight: ValueRef,
) -> std::result::Result<Candidate, String> {
    let g = &model.graph;
    let name = weight_name(g, weight);
    let t = g
        .const_tensor(weight)
        .ok_or_else(|| format!("weight `{name}` is not constant"))?;
    if cfg.exclude.iter().any(|e| e == name) {
        return Err(format!("weight `{name}` excluded by --quantize-exclude"));
    }
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!("weight `{name}` is not float32"));
    }
    let n = tensor::numel(t).unwrap_or(0);
    if n < cfg.min_elements {
        return Err(format!(
            "weight `{name}` has {n} elements, too few to pay for a DequantizeLinear (minimum {})",
            cfg.min_elements
        ));
    }
    if g.is_graph_output(weight) {
        return Err(format!("weight `{name}` is a graph output"));
    }
    if g.is_captured(weight) {
        return Err(format!("weight `{name}` is read inside a subgraph"));
    }
    if !matches!(
        g.node(weight.node).kind,
        NodeKind::Initializer(_) | NodeKind::Op(_)
    ) {
        return Err(format!("weight `{name}` is not an initializer or Constant"));
    }
    let rank = t.dims.len() as i64;
    let mut axes = Vec::new();
    for (reader, slot) in g.consumers(weight) {
        if g.node(reader).domain().is_empty()
            && !weight_operands(g, reader).is_empty()
            && !quantizable_reader(g, cfg, reader)
        {
            return Err(format!(
                "weight `{name}` is also read by `{}`, excluded by --quantize-exclude",
                g.node(reader).label()
            ));
        }
        if let Some((_, axis)) = weight_operands(g, reader)
            .into_iter()
            .find(|(s, _)| *s == slot)
        {
            let axis = (rank > 0)
                .then(|| if axis < 0 { axis + rank } else { axis })
                .filter(|a| (0..rank).contains(a));
            axes.push(axis);
        }
    }
    let opset = model.opset("").unwrap_or(1);
    let (axis, note) = match cfg.granularity {
        Granularity::Tensor => (None, None),
        Granularity::Channel if opset < 13 => (
            None,
            Some(format!(
                "per tensor: per-channel DequantizeLinear needs opset 13, the model has {opset}"
            )),
        ),
        Granularity::Channel => match axes.first() {
            Some(Some(first)) if axes.iter().all(|a| *a == Some(*first)) => {
                (Some(*first as usize), None)
            }
            _ => (
                None,
                Some("per tensor: its readers disagree on the channel axis".into()),
            ),
        },
    };
    Ok(Candidate { weight, axis, note })
}

/// The quantized weight: integer codes, scales and zero points, and the weight they give back.
struct Quantized {
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<u8>,
    rel_error: f64,
}

/// Quantizes `w` (row-major, `dims`) along `axis` (or as one tensor).
fn quantize(w: &[f32], dims: &[usize], axis: Option<usize>, ty: WeightType) -> Quantized {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>().max(1)),
        None => (1, w.len().max(1)),
    };
    let channel_of = |i: usize| match axis {
        Some(_) => (i / inner) % channels,
        None => 0,
    };
    let mut lo = vec![0f32; channels];
    let mut hi = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        if v.is_finite() {
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
    }
    let (scales, zero_points): (Vec<f32>, Vec<u8>) = (0..channels)
        .map(|c| match ty {
            WeightType::Int8 => {
                let m = lo[c].abs().max(hi[c].abs());
                (if m > 0.0 { m / 127.0 } else { 1.0 }, 0u8)
            }
            WeightType::Uint8 => {
                let span = hi[c] - lo[c];
                if span > 0.0 {
                    let s = span / 255.0;
                    let z = (-lo[c] / s).round().clamp(0.0, 255.0);
                    (s, z as u8)
                } else {
                    (1.0, 0u8)
                }
            }
        })
        .unzip();
    let mut codes = Vec::with_capacity(w.len());
    let (mut err2, mut norm2) = (0f64, 0f64);
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        let s = scales[c];
        let (q, back) = match ty {
            WeightType::Int8 => {
                let q = (v / s).round().clamp(-127.0, 127.0);
                ((q as i8) as u8, q * s)
            }
            WeightType::Uint8 => {
                let z = zero_points[c] as f32;
                let q = ((v / s).round() + z).clamp(0.0, 255.0);
                (q as u8, (q - z) * s)
            }
        };
        codes.push(q);
        err2 += ((v - back) as f64).powi(2);
        norm2 += (v as f64).powi(2);
    }
    let rel_error = if norm2 > 0.0 {
        (err2 / norm2).sqrt()
    } else {
        err2.sqrt()
    };
    Quantized {
        codes,
        scales,
        zero_points,
        rel_error,
    }
}

fn int_tensor(name: String, dims: Vec<i64>, data: Vec<u8>, ty: WeightType) -> TensorProto {
    TensorProto {
        name: Some(name),
        dims,
        data_type: Some(match ty {
            WeightType::Int8 => DataType::Int8 as i32,
            WeightType::Uint8 => DataType::Uint8 as i32,
        }),
        raw_data: Some(Bytes::from(data)),
        ..Default::default()
    }
}

fn scheme(cfg: &QuantizeConfig, c: &Candidate) -> String {
    let ty = match cfg.weights {
        WeightType::Int8 => "int8",
        WeightType::Uint8 => "uint8",
    };
    match c.axis {
        Some(a) => format!("{ty} per channel (axis {a})"),
        None => format!("{ty} per tensor"),
    }
}

impl Rule for Quantize {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "Q001",
            name: "quantize",
            group: "quantize",
            summary: "store float weights as int8/uint8 read through DequantizeLinear",
            exactness: Exactness::Lossy {
                tolerance: VERIFY_TOLERANCE,
            },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for (reader, weight) in find_weights(model, &config.quantize, &mut f) {
            match plan(model, &config.quantize, weight) {
                Ok(_) => f.matches.push(Match {
                    anchor: reader,
                    nodes: vec![weight.node],
                    what: format!("weight `{}`", weight_name(g, weight)),
                }),
                Err(reason) => f.skip(model, reader, reason),
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let cfg = &config.quantize;
        let fail = |reason: String| Error::Rule {
            rule: "quantize".into(),
            reason,
        };
        let node = *m
            .nodes
            .first()
            .ok_or_else(|| fail(format!("{}: no weight in the match", m.what)))?;
        let c = plan(model, cfg, ValueRef { node, slot: 0 }).map_err(fail)?;
        let t = g
            .const_tensor(c.weight)
            .ok_or_else(|| fail("the weight is not constant".into()))?;
        let w = tensor::to_f32(t)?;
        let dims: Vec<usize> = w.shape().to_vec();
        let values: Vec<f32> = w.iter().copied().collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("{} holds NaN or infinity", m.what)));
        }
        let q = quantize(&values, &dims, c.axis, cfg.weights);
        let name = weight_name(g, c.weight).to_string();
        let before = tensor::payload_bytes(t);
        let channels = q.scales.len();
        let param_dims = if c.axis.is_some() {
            vec![channels as i64]
        } else {
            vec![]
        };
        let mut p = Patch::new(String::new(), Some(m.anchor));
        let codes = p.add_initializer(int_tensor(
            format!("{name}_quantized"),
            t.dims.clone(),
            q.codes,
            cfg.weights,
        ));
        let mut scale = tensor::from_f32(
            &format!("{name}_scale"),
            &ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[channels]), q.scales)
                .map_err(|e| fail(e.to_string()))?,
        );
        scale.dims = param_dims.clone();
        let scale = p.add_initializer(scale);
        let zp = p.add_initializer(int_tensor(
            format!("{name}_zero_point"),
            param_dims,
            q.zero_points,
            cfg.weights,
        ));
        let mut node = make_node(
            "DequantizeLinear",
            &format!("{name}_dequantize"),
            3,
            &[&format!("{name}_dequantized")],
        );
        if let Some(a) = c.axis {
            node.attribute.push(make_attr_i("axis", a as i64));
        }
        let out = p.add_op(node, &[Some(codes), Some(scale), Some(zp)])[0];
        p.shunt(c.weight, out);
        p.keep_name(c.weight, out);
        p.remove(c.weight.node);
        let after = tensor::numel(t).unwrap_or(0) + channels as u64 * 5;
        p.description = format!(
            "{}: {} {}, {before} → {after} bytes, weight error {:.3} %{}",
            m.what,
            shape_text(&t.dims),
            scheme(cfg, &c),
            q.rel_error * 100.0,
            c.note.map(|n| format!(" ({n})")).unwrap_or_default()
        );
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each match rewrites one weight and the nodes that hold it; no other match reads them.
        true
    }

    /// A sanity bound, as for lowrank: verification compares element-wise,
    /// `|a − b| ≤ tol·max(1, |a|)`, and the worst element of a quantized model sits far above
    /// its typical error (captcha_crnn at 100 % argmax agreement and cosine 0.992 needs 2; at 1
    /// it fails). So this catches a broken rewrite (NaN, infinities, wrong shapes, garbage), not
    /// accuracy loss: the verification table's cosine and argmax agreement, and `--tolerance`,
    /// are what tell and bound the loss.
    fn tolerance(&self, _config: &Config) -> f32 {
        VERIFY_TOLERANCE
    }
}

fn shape_text(dims: &[i64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join("×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_on_the_int8_grid_come_back_exactly() {
        // Two channels along axis 1 of a [3, 2] weight, scales 2^-3 and 2^-7.
        let s = [0.125f32, 0.0078125];
        let q = [[127i32, -5], [-64, 127], [0, -127]];
        let w: Vec<f32> = q
            .iter()
            .flat_map(|row| row.iter().enumerate().map(|(c, v)| *v as f32 * s[c]))
            .collect();
        let r = quantize(&w, &[3, 2], Some(1), WeightType::Int8);
        assert_eq!(r.scales, s.to_vec());
        assert_eq!(r.rel_error, 0.0);
        let codes: Vec<i8> = r.codes.iter().map(|c| *c as i8).collect();
        assert_eq!(codes, vec![127, -5, -64, 127, 0, -127]);
    }

    #[test]
    fn uint8_keeps_zero_exact_and_error_within_half_a_step() {
        let w = [-1.0f32, 0.0, 0.3, 2.0, 0.0, -0.7];
        let r = quantize(&w, &[6], None, WeightType::Uint8);
        let (s, z) = (r.scales[0], r.zero_points[0] as f32);
        for (i, v) in w.iter().enumerate() {
            let back = (r.codes[i] as f32 - z) * s;
            if *v == 0.0 {
                assert_eq!(back, 0.0);
            }
            assert!((back - v).abs() <= s / 2.0 + 1e-6, "{v} → {back}");
        }
    }

    #[test]
    fn an_all_zero_channel_gets_scale_one_and_zero_codes() {
        let w = [0.0f32, 0.0, 1.0, -2.0];
        let r = quantize(&w, &[2, 2], Some(0), WeightType::Int8);
        assert_eq!(r.scales[0], 1.0);
        assert_eq!(&r.codes[..2], &[0, 0]);
    }
}
