//! The op table: what each ONNX op means, stated once, for every rule and report.
//!
//! One [`OpDef`] per op of the default domain, kept with its family (`elementwise`, `conv`,
//! `matmul`, `shape`, `reduce`, `norm`, `rnn`, `quant`, `control`, `image`, `loss`): the inputs, outputs and
//! attributes it accepts (with the opsets where they changed), shape/dtype/small-value inference
//! over [`Fact`]s, its multiply-accumulates, the operands that are weights with their output- and
//! input-channel axes, how channels flow from its inputs to its outputs, whether it is pure (and
//! so foldable), and when it provably returns its input unchanged.
//!
//! [`lookup`] is the only way in. An op it does not know, and every op of another domain, is a
//! **barrier**: nothing is inferred through it (facts fall back to `value_info`), it is never
//! folded, its channels do not flow, it has no weights.

mod control;
mod conv;
mod elementwise;
mod image;
pub mod infer;
mod loss;
mod matmul;
pub mod moves;
mod norm;
mod quant;
mod reduce;
mod rnn;
mod shape;

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::ir::facts::Fact;
use crate::onnx::proto::NodeProto;

pub use infer::{InferCx, MacCount, MacCx, NoopCx};

/// Inference: output facts of a node from its input facts. Returns one fact per output (a
/// shorter vector leaves the rest unknown).
pub type InferFn = fn(&mut InferCx) -> Vec<Fact>;
/// Multiply-accumulates of a node from its input and output facts; `None` when unknown.
pub type MacFn = fn(&MacCx) -> Option<MacCount>;
/// The operands of a node that are weights (see [`WeightOperand`]).
pub type WeightFn = fn(&NodeProto) -> Vec<WeightOperand>;
/// `Ok(())` when the node provably returns its input 0 unchanged, else why not (a reason
/// containing "not known" means it may be a no-op, but the facts cannot tell).
pub type NoopFn = fn(&NoopCx) -> Result<(), String>;
/// The value of output 0 where input 0 is the constant `x` all over a channel (see
/// [`OpDef::point`]): `operands[i]` is input `i`'s value at that channel (a per-channel
/// parameter's entry, or a scalar constant), `None` when absent or not constant.
pub type PointFn = fn(&NodeProto, f32, &[Option<f32>]) -> Option<f32>;

/// How many inputs or outputs a node takes: `min..=max` (`max` = [`usize::MAX`] for variadic).
/// Optional operands in the middle count as present when named, absent when `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arity {
    /// Fewest.
    pub min: usize,
    /// Most.
    pub max: usize,
}

/// `min..=max`.
pub const fn arity(min: usize, max: usize) -> Arity {
    Arity { min, max }
}

/// Variadic: at least `min`.
pub const VARIADIC: usize = usize::MAX;

/// Whether an op is pure, and so may be evaluated ahead of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purity {
    /// Deterministic, without side effects: its outputs depend on its inputs and attributes only.
    Pure,
    /// Draws random numbers: never folded, never deduplicated.
    Random,
    /// Deterministic, but what it holds is the model's own representation (`Constant`,
    /// quantization): never folded into something else.
    Keep,
    /// As pure as its subgraphs (`If`, `Loop`, `Scan`): treated as not foldable.
    Subgraphs,
}

/// The role of a weight operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightRole {
    /// A layer's main weight: Conv/ConvTranspose `W`, Gemm `B`, MatMul's constant `B`, the input
    /// weights `W` of LSTM/GRU/RNN.
    Kernel,
    /// MatMul's `A` when it is the constant one (`Y = W·X`): rows of `A` are the output rows.
    LeftKernel,
    /// The recurrent weights `R` of LSTM/GRU/RNN.
    Recurrent,
    /// A bias added per output channel (Conv/ConvTranspose `B`, Gemm `C`, LSTM/GRU/RNN `B`).
    Bias,
    /// A table read by index (Gather's data with `axis = 0`: embeddings).
    Table,
}

/// An operand of a node that is (or, when constant, acts as) a weight.
///
/// Axes are counted in the weight's own dims; negative axes count from the end (MatMul weights
/// may carry batch dims in front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightOperand {
    /// Input slot.
    pub input: usize,
    /// What it is.
    pub role: WeightRole,
    /// The axis indexed by the op's output channel (per-channel quantization goes along it;
    /// pruning an output channel removes one index of it). For ConvTranspose the output channel
    /// `c` of group `g` is index `c mod (C_out / group)` of this axis.
    pub out_axis: Option<i64>,
    /// The axis indexed by the op's input channel (pruning an input channel removes one index).
    pub in_axis: Option<i64>,
    /// `group` of Conv/ConvTranspose (1 elsewhere): channels are split into this many groups.
    pub groups: i64,
}

/// How channels flow from a node's inputs to its outputs (the "channel" is axis 1 of NCHW
/// tensors and the last axis of MatMul activations; the flow is the same for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Input 0's channels pass to every output unchanged, each computed from its own channel
    /// only (activations, pooling, batch and instance normalization, `Resize`, `Dropout`, `Cast`,
    /// ...). The listed inputs hold one value per channel along their axis 0
    /// (BatchNormalization's scale, bias, mean and variance; PRelu's slope when 1-D) and shrink
    /// with the channels. `Resize` and `Pad` pass channels only where they leave the channel
    /// axis alone (`Resize` scale 1, no pads on it): a consumer checks that.
    Pass {
        /// Per-channel parameter inputs.
        per_channel: &'static [usize],
    },
    /// The inputs are broadcast together (numpy rules): output channel `c` is channel `c` of
    /// every input whose dim there is not 1, so those inputs are coupled.
    Broadcast,
    /// The inputs are joined along the `axis` attribute: input `k`'s channels sit at the offset
    /// of the sum of the earlier inputs' sizes.
    Concat,
    /// Input 0 is cut along the `axis` attribute: output `k` holds a range of its channels.
    Split,
    /// Input 0 is cut along the sliced axes: the kept channels of a sliced channel axis.
    Slice,
    /// The dims are permuted by `perm`: the channel axis moves.
    Transpose,
    /// The dims are regrouped (Reshape, Flatten, Squeeze, Unsqueeze): a channel maps to a
    /// contiguous block of the flattened output dims (`c → [c·b, (c+1)·b)`).
    Reshape,
    /// A layer: its output channels are the `out_axis` of its kernel weight, its input channels
    /// the kernel's `in_axis` (see [`OpDef::weights`]). Channels end here and start afresh.
    Layer,
    /// Nothing is known about the channels, or the op mixes them (softmax, layer, group or RMS
    /// normalisation, cumulative ops, reductions): a group that reaches it cannot be changed.
    Barrier,
}

/// How an op takes float16, for the float16 conversion (`--dtype fp16`). Stated per op from
/// what tract 0.23 and onnxruntime's CPU kernels run: an op not known to run in float16 keeps
/// float32, with Casts around it.
#[derive(Debug, Clone, Copy)]
pub enum Half {
    /// Computes in float16: its float inputs and outputs all become float16, except the inputs
    /// listed in `keep`, which the op takes in float32 only (Resize's `scales`).
    Compute {
        /// Input slots that stay float32.
        keep: &'static [usize],
    },
    /// Moves, selects or copies elements without arithmetic (Reshape, Transpose, Concat,
    /// Gather, Slice, ...): exact in any float type. Its float data becomes float16 when a float
    /// input already is (or is a constant), so that it never needs a Cast of its own.
    Move,
    /// Reads its input's shape or converts it (Shape, Size, Cast): reads float16 as it reads
    /// float32, and its output type does not depend on it.
    AnyInput,
    /// Keeps float32, for the reason given (float16 missing in tract 0.23 or onnxruntime, or too
    /// narrow for what the op accumulates). Its large float32 weights are still stored in
    /// float16, with a Cast back to float32.
    Float32(&'static str),
    /// Decided per node (by its attributes and operands): never itself `PerNode`.
    PerNode(fn(&NodeProto) -> Half),
}

/// [`Half::Compute`] with every float input in float16.
pub const HALF: Half = Half::Compute { keep: &[] };

/// Everything the table knows about one op.
#[derive(Debug, Clone, Copy)]
pub struct OpDef {
    /// `op_type`.
    pub op: &'static str,
    /// The first opset that has it.
    pub since: i64,
    /// Inputs accepted (over all opsets).
    pub inputs: Arity,
    /// Outputs accepted (over all opsets).
    pub outputs: Arity,
    /// Attributes accepted, space separated; `name<13` means before opset 13 only, `name>=13`
    /// from opset 13 on (see [`OpDef::check`]); `name<13@1` says that from 13 the attribute is
    /// input 1, an int64 tensor (see [`OpDef::attr_input`]).
    pub attrs: &'static str,
    /// Shape, dtype and small-value inference.
    pub infer: InferFn,
    /// Multiply-accumulates, for the ops whose cost `inspect` counts.
    pub macs: Option<MacFn>,
    /// Weight operands.
    pub weights: Option<WeightFn>,
    /// Channel flow.
    pub flow: Flow,
    /// Purity.
    pub purity: Purity,
    /// Whether fold-constants may evaluate it on constant inputs (in tract): pure, and with
    /// semantics that are plain and identical across runtimes (no rounding modes, resampling,
    /// fmod or string ops).
    pub eval: bool,
    /// When it returns its input 0 unchanged.
    pub noop: Option<NoopFn>,
    /// For `Pass` ops: what a channel that is the constant `x` everywhere becomes (the op acts
    /// on each element of the channel alone, or, for pooling and normalisation, on the channel
    /// as a whole). `None` (the function's, or no function) when the result is not that one
    /// constant everywhere or not known exactly: random ops, bounds that are not constant,
    /// average pooling over padding, functions without an exact f32 evaluation away from 0
    /// (`Erf`, exact `Gelu`). Evaluated in f32 with the formula of the ONNX spec.
    pub point: Option<PointFn>,
    /// How it takes float16 (the float16 conversion).
    pub half: Half,
}

impl OpDef {
    /// An entry with only a name and inference: every other field says "nothing known"
    /// (barrier flow, pure, not evaluated, no weights, no MACs, no no-op case). Entries set what
    /// they know with struct update syntax.
    pub const fn new(op: &'static str, since: i64, inputs: Arity, outputs: Arity) -> OpDef {
        OpDef {
            op,
            since,
            inputs,
            outputs,
            attrs: "",
            infer: infer::unknown,
            macs: None,
            weights: None,
            flow: Flow::Barrier,
            purity: Purity::Pure,
            eval: false,
            noop: None,
            point: None,
            half: Half::Float32("not known to run in float16 in tract and onnxruntime"),
        }
    }

    /// Whether folding may replace it by its outputs (pure and deterministic).
    pub fn foldable(&self) -> bool {
        self.purity == Purity::Pure
    }

    /// Whether `name` is an attribute of this op at `opset`.
    pub fn accepts_attr(&self, name: &str, opset: i64) -> bool {
        self.attrs.split_whitespace().any(|spec| {
            if let Some((n, v)) = spec.split_once(">=") {
                n == name && v.parse::<i64>().is_ok_and(|v| opset >= v)
            } else if let Some((n, v)) = spec.split_once('<') {
                let v = v.split_once('@').map_or(v, |(v, _)| v);
                n == name && v.parse::<i64>().is_ok_and(|v| opset < v)
            } else {
                spec == name
            }
        })
    }

    /// Where attribute `name` went when the op turned it into an input: `(opset, input slot)`,
    /// from a `name<V@I` spec (`Unsqueeze`'s `axes` is input 1 from opset 13).
    pub fn attr_input(&self, name: &str) -> Option<(i64, usize)> {
        self.attrs.split_whitespace().find_map(|spec| {
            let (n, rest) = spec.split_once('<')?;
            let (v, i) = rest.split_once('@')?;
            (n == name).then_some((v.parse().ok()?, i.parse().ok()?))
        })
    }

    /// Whether `node`'s number of inputs and outputs is within the declared arity (any opset).
    pub fn arity_fits(&self, node: &NodeProto) -> bool {
        let fits = |a: Arity, n: usize| a.min <= n && n <= a.max;
        fits(self.inputs, node.input.len()) && fits(self.outputs, node.output.len())
    }

    /// Checks `node` against the declared arity and attributes at `opset`: `Err` names the
    /// first thing that does not fit.
    pub fn check(&self, node: &NodeProto, opset: i64) -> Result<(), String> {
        if opset < self.since {
            return Err(format!(
                "`{}` exists from opset {}, the model imports {opset}",
                self.op, self.since
            ));
        }
        let n_in = node.input.len();
        let n_out = node.output.len();
        let range = |a: Arity| {
            if a.max == VARIADIC {
                format!("at least {}", a.min)
            } else if a.min == a.max {
                format!("{}", a.min)
            } else {
                format!("{} to {}", a.min, a.max)
            }
        };
        if n_in < self.inputs.min || n_in > self.inputs.max {
            return Err(format!(
                "`{}` takes {} inputs, not {n_in}",
                self.op,
                range(self.inputs)
            ));
        }
        if n_out < self.outputs.min || n_out > self.outputs.max {
            return Err(format!(
                "`{}` gives {} outputs, not {n_out}",
                self.op,
                range(self.outputs)
            ));
        }
        for a in &node.attribute {
            let name = a.name.as_deref().unwrap_or("");
            if !self.accepts_attr(name, opset) {
                return Err(format!(
                    "`{}` has no attribute `{name}` at opset {opset}",
                    self.op
                ));
            }
        }
        Ok(())
    }
}

/// Every family's entries.
const FAMILIES: &[&[OpDef]] = &[
    elementwise::OPS,
    conv::OPS,
    matmul::OPS,
    shape::OPS,
    reduce::OPS,
    norm::OPS,
    rnn::OPS,
    quant::OPS,
    control::OPS,
    image::OPS,
    loss::OPS,
];

fn table() -> &'static HashMap<&'static str, &'static OpDef> {
    static TABLE: OnceLock<HashMap<&'static str, &'static OpDef>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FAMILIES
            .iter()
            .flat_map(|f| f.iter())
            .map(|d| (d.op, d))
            .collect()
    })
}

/// Whether `domain` is the default ONNX domain (`""` or `ai.onnx`).
pub fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The entry for `op_type` of `domain` at `opset` (`None`: any opset), or `None` — a barrier —
/// for ops of other domains, ops the table does not know, and ops newer than `opset`.
pub fn lookup(domain: &str, op_type: &str, opset: Option<i64>) -> Option<&'static OpDef> {
    if !is_default_domain(domain) {
        return None;
    }
    let def = *table().get(op_type)?;
    match opset {
        Some(v) if v < def.since => None,
        _ => Some(def),
    }
}

/// The entry for `node` (its domain and type) at `opset`; see [`lookup`].
pub fn lookup_node(node: &NodeProto, opset: Option<i64>) -> Option<&'static OpDef> {
    lookup(
        node.domain.as_deref().unwrap_or(""),
        node.op_type.as_deref().unwrap_or(""),
        opset,
    )
}

/// Every entry, sorted by op name.
pub fn all() -> Vec<&'static OpDef> {
    let mut v: Vec<&'static OpDef> = table().values().copied().collect();
    v.sort_by_key(|d| d.op);
    v
}

/// The weight operands of `node` (empty for barriers and ops without weights).
pub fn weights(node: &NodeProto) -> Vec<WeightOperand> {
    lookup_node(node, None)
        .and_then(|d| d.weights)
        .map(|f| f(node))
        .unwrap_or_default()
}

/// What `node` makes of a channel that is the constant `x` everywhere, with its other inputs'
/// values at that channel (see [`OpDef::point`]); `None` when not one known constant.
pub fn point(node: &NodeProto, x: f32, operands: &[Option<f32>]) -> Option<f32> {
    lookup_node(node, None)
        .and_then(|d| d.point)
        .and_then(|f| f(node, x, operands))
        .filter(|y| y.is_finite())
}

/// How `node` takes float16 ([`Half::Float32`] for ops the table does not know and ops of
/// other domains).
pub fn half(node: &NodeProto) -> Half {
    lookup_node(node, None).map_or(
        Half::Float32("an op the table does not know: its float16 kernels are not known"),
        |d| match d.half {
            Half::PerNode(f) => f(node),
            h => h,
        },
    )
}

/// The channel flow of `node` ([`Flow::Barrier`] for ops the table does not know).
pub fn flow(node: &NodeProto) -> Flow {
    lookup_node(node, None).map_or(Flow::Barrier, |d| d.flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_op() {
        let n: usize = FAMILIES.iter().map(|f| f.len()).sum();
        assert_eq!(n, table().len(), "an op is listed twice");
    }

    #[test]
    fn attribute_versions() {
        let d = lookup("", "ReduceMean", None).unwrap();
        assert!(d.accepts_attr("axes", 13));
        assert!(!d.accepts_attr("axes", 18));
        assert!(d.accepts_attr("keepdims", 18));
        assert!(lookup("com.microsoft", "ReduceMean", None).is_none());
        assert!(lookup("", "Gelu", Some(17)).is_none());
    }
}
