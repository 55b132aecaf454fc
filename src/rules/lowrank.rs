//! `L001 lowrank`: factors MatMul, Gemm and Conv weights into verified low-rank pairs.
//!
//! **What:** a constant 2-D weight `W[K,N]` becomes two thinner ones, `A[K,r]·B[r,N]`, applied one
//! after the other:
//!
//! - `MatMul(X, W)` → `MatMul(MatMul(X, A), B)`; `MatMul(W, X)` (weight on the left) →
//!   `MatMul(Bᵀ, MatMul(Aᵀ, X))` with `Wᵀ ≈ AB`;
//! - `Gemm(X, B, C)` with `W = op(B)` → `MatMul(X, A)` (or `Gemm(X, A, transA=1)`, or
//!   `Transpose` + `MatMul` before opset 11, when `transA` is set) then `Gemm(·, B_r, C)` with
//!   the original `alpha`, `beta` and `transB` (the second factor is stored in `B`'s layout);
//! - `Conv(X, W[M,C,k…], bias)` with `group = 1` → a `k…` Conv with `r` output channels (same
//!   strides, pads, dilations, `auto_pad`) then a `1…1` Conv to `M` channels carrying the bias.
//!   The flattened weight `W[M, C·k…]ᵀ` is what gets factored.
//!
//! The weight may be an initializer or a `Constant` node (the factors keep its kind). A
//! factorisation is made only when it saves parameters and MACs:
//! `r·(K+N) < K·N·(1 − min_saving)`; MACs per output row (per output pixel for Conv) shrink in
//! the same proportion as parameters.
//!
//! **Rank:** one of `--lowrank-energy E` (keep a fraction `E` of `Σσᵢ²`), `--lowrank-rank R`,
//! `--lowrank-ratio P` (`r = ⌊P·K·N/(K+N)⌋`, i.e. `P` of the parameters), optionally with
//! `--lowrank-tolerance T`, a per-layer relative error budget `‖W−AB‖_F/‖W‖_F ≤ T` that raises
//! the rank where needed (alone, it picks the smallest rank meeting it). Without any flag the
//! default is **energy 0.95** — a per-layer relative weight error of at most `√0.05 ≈ 0.22` —
//! or, data-aware, **tolerance 0.02** on each layer's calibration output (output errors add up
//! along the network, so the budget there must be tighter; see [`LowrankConfig::effective`]).
//!
//! **Data-aware** (`--calibration DIR`): the original model runs in tract on the calibration
//! inputs, each candidate's real input activations `X` are captured, and the factors minimise
//! `‖XW − XAB‖_F` instead: with `XᵀX + λI = LLᵀ`, SVD of `LᵀW`, `A = L⁻ᵀU_rΣ_r^½`,
//! `B = Σ_r^½V_rᵀ` (see [`crate::linalg::whiten`]). Energy and tolerance then refer to the
//! layer's output on the calibration data rather than to its weight.
//!
//! **Why:** trained weight matrices often have decaying spectra; the factored pair is smaller
//! and cheaper to run.
//!
//! **Example:** `y = MatMul(x, W[512,512])` at rank 128 → `t = MatMul(x, A[512,128])`,
//! `y = MatMul(t, B[128,512])`: 262,144 → 131,072 parameters and MACs per row.
//!
//! **Exact:** no (lossy). The report lists, per layer, the shape, the chosen rank, parameters
//! and MACs before and after, and the relative weight error (plus the output error on the
//! calibration data when data-aware). At full rank the factors reproduce `W` to float rounding.
//! The factors of a pair are never factored again: a weight whose output feeds straight into
//! another factor of matching inner size (or that reads one), forming a pair of rank below the
//! break-even point, is skipped as "already a low-rank pair".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, ArrayD, IxDyn};

use super::util::{attr_i, attr_ints, is_op, make_attr_i, make_attr_ints};
use crate::calibrate::{self, Sampling};
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::linalg::{self, rank, Factors, Gram, Outcome, Whitener};
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto,
};
use crate::ops::{self, WeightOperand, WeightRole};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

/// The kept-energy fraction used when no rank flag is given (plain SVD, weight space).
pub const DEFAULT_ENERGY: f64 = 0.95;
/// The per-layer output error budget used when no rank flag is given and the factorisation is
/// data-aware (`--calibration`).
pub const DEFAULT_DATA_TOLERANCE: f64 = 0.02;
/// Default `--lowrank-min-saving`.
pub const DEFAULT_MIN_SAVING: f64 = 0.1;
/// Weights with fewer elements are skipped as too small.
pub const DEFAULT_MIN_PARAMS: u64 = 4096;
/// Default ridge of the data-aware whitening, relative to the mean diagonal of `XᵀX`.
pub const DEFAULT_RIDGE: f64 = 1e-2;
/// Widest activation (`K`) for which a Gram matrix is built (`K²` doubles).
pub const MAX_CALIBRATION_K: usize = 4096;
/// Verification tolerance per unit of per-layer error budget (see [`Lowrank::tolerance`]).
pub const VERIFY_SLACK: f64 = 150.0;
/// Verification tolerance when nothing bounds the error (fixed rank or ratio), and the cap.
pub const VERIFY_MAX: f64 = 50.0;

pub use crate::linalg::rank::RankMode;

/// Options of the `lowrank` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct LowrankConfig {
    /// Rank selection; `None` means the default (see [`LowrankConfig::effective`]) unless
    /// `tolerance` is set.
    pub mode: Option<RankMode>,
    /// Per-layer relative error budget; raises the rank where the mode's rank exceeds it.
    pub tolerance: Option<f64>,
    /// A factorisation must save more than this fraction of parameters (and MACs). Negative
    /// values (library only; the CLI refuses them) allow factors larger than the weight.
    pub min_saving: f64,
    /// Weights with fewer elements are left alone.
    pub min_params: u64,
    /// Ridge of the data-aware whitening, relative to the mean diagonal of `XᵀX`.
    pub ridge: f64,
}

impl Default for LowrankConfig {
    fn default() -> Self {
        LowrankConfig {
            mode: None,
            tolerance: None,
            min_saving: DEFAULT_MIN_SAVING,
            min_params: DEFAULT_MIN_PARAMS,
            ridge: DEFAULT_RIDGE,
        }
    }
}

impl LowrankConfig {
    /// Builds the options from the command-line flags, refusing values that make no sense.
    pub fn from_flags(
        energy: Option<f64>,
        rank: Option<usize>,
        ratio: Option<f64>,
        tolerance: Option<f64>,
        min_saving: Option<f64>,
    ) -> Result<LowrankConfig> {
        let usage = |s: String| Err(Error::Usage(s));
        let given = [energy.is_some(), rank.is_some(), ratio.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given > 1 {
            return usage(
                "--lowrank-energy, --lowrank-rank and --lowrank-ratio exclude each other; give one"
                    .into(),
            );
        }
        let in_unit = |v: f64| v > 0.0 && v <= 1.0;
        let mut cfg = LowrankConfig::default();
        if let Some(e) = energy {
            if !in_unit(e) {
                return usage(format!("--lowrank-energy must be in (0, 1], got {e}"));
            }
            cfg.mode = Some(RankMode::Energy(e));
        }
        if let Some(r) = rank {
            if r == 0 {
                return usage("--lowrank-rank must be at least 1, got 0".into());
            }
            cfg.mode = Some(RankMode::Rank(r));
        }
        if let Some(p) = ratio {
            if !in_unit(p) {
                return usage(format!("--lowrank-ratio must be in (0, 1], got {p}"));
            }
            cfg.mode = Some(RankMode::Ratio(p));
        }
        if let Some(t) = tolerance {
            if !(t >= 0.0) || !t.is_finite() {
                return usage(format!(
                    "--lowrank-tolerance must be a non-negative number, got {t}"
                ));
            }
            cfg.tolerance = Some(t);
        }
        if let Some(s) = min_saving {
            if !(0.0..1.0).contains(&s) {
                return usage(format!("--lowrank-min-saving must be in [0, 1), got {s}"));
            }
            cfg.min_saving = s;
        }
        Ok(cfg)
    }

    /// The mode and tolerance in force. Without any rank flag the default is energy
    /// [`DEFAULT_ENERGY`] for plain SVD (a weight error of at most `√0.05 ≈ 0.22` per layer) and
    /// a tolerance of [`DEFAULT_DATA_TOLERANCE`] when data-aware: there the budget is on the
    /// layer's output, whose errors add up along the network, so it must be much tighter (on
    /// captcha_crnn an output energy of 0.95 per layer keeps 77.7 % argmax agreement; 0.02 keeps
    /// 99.5 %).
    pub fn effective(&self, data_aware: bool) -> (Option<RankMode>, Option<f64>) {
        match (self.mode, self.tolerance) {
            (None, None) if data_aware => (None, Some(DEFAULT_DATA_TOLERANCE)),
            (None, None) => (Some(RankMode::Energy(DEFAULT_ENERGY)), None),
            other => other,
        }
    }

    /// The per-layer relative error this configuration allows, when it bounds it (energy `E`
    /// bounds it by `√(1−E)`); `None` for a fixed rank or ratio without a tolerance.
    pub fn error_budget(&self, data_aware: bool) -> Option<f64> {
        let (mode, tolerance) = self.effective(data_aware);
        rank::error_budget(mode, tolerance)
    }

    /// Short text of the rank selection, for the report.
    pub fn describe(&self, data_aware: bool) -> String {
        let (mode, tolerance) = self.effective(data_aware);
        let default = if self.mode.is_none() && self.tolerance.is_none() {
            "default "
        } else {
            ""
        };
        let mode = match mode {
            Some(RankMode::Energy(e)) => format!("{default}energy {e}"),
            Some(RankMode::Rank(r)) => format!("rank {r}"),
            Some(RankMode::Ratio(p)) => format!("ratio {p}"),
            None => String::new(),
        };
        match (mode.is_empty(), tolerance) {
            (true, Some(t)) => format!("{default}tolerance {t}"),
            (false, Some(t)) => format!("{mode}, tolerance {t}"),
            _ => mode,
        }
    }
}

/// See the module docs.
pub struct Lowrank;

impl Rule for Lowrank {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "L001",
            name: "lowrank",
            group: "lowrank",
            summary: "factor MatMul, Gemm and Conv weights into low-rank pairs",
            exactness: Exactness::Lossy {
                tolerance: (VERIFY_SLACK * (1.0 - DEFAULT_ENERGY).sqrt()) as f32,
            },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let cfg = &config.lowrank;
        let mut f = Findings::default();
        let mut layers = Vec::new();
        for id in g.ops() {
            if !(is_op(g, id, "MatMul") || is_op(g, id, "Gemm") || is_op(g, id, "Conv")) {
                continue;
            }
            match candidate(model, id, cfg) {
                Ok(l) => layers.push(l),
                Err(reason) => f.skip(model, id, reason),
            }
        }
        let grams = if config.calibration.is_empty() {
            None
        } else {
            Some(calibration_grams(model, &layers, config))
        };
        for (i, l) in layers.iter().enumerate() {
            let gram = grams.as_ref().map(|gs| gs[i].clone());
            match plan(g, l, gram.as_deref(), cfg) {
                Ok(_) => f.matches.push(Match {
                    anchor: l.node,
                    nodes: vec![l.weight.node],
                    what: format!("{} `{}`", l.op, g.node(l.node).label()),
                }),
                Err(reason) => f.skip(model, l.node, reason),
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let cfg = &config.lowrank;
        let fail = |reason: String| Error::Rule {
            rule: "lowrank".into(),
            reason,
        };
        let layer = candidate(model, m.anchor, cfg).map_err(fail)?;
        let gram = if config.calibration.is_empty() {
            None
        } else {
            Some(calibration_grams(model, std::slice::from_ref(&layer), config).remove(0))
        };
        let planned = plan(g, &layer, gram.as_deref(), cfg).map_err(fail)?;
        let rows = gram
            .as_ref()
            .and_then(|cg| cg.gram.as_ref().ok().map(|g| g.rows));
        build_patch(model, &layer, &planned, cfg, rows)
    }

    /// The verification tolerance: [`VERIFY_SLACK`] times the per-layer error budget (energy `E`
    /// allows `√(1−E)`, a tolerance `T` allows `T`), clamped to `[1e-4, VERIFY_MAX]`;
    /// [`VERIFY_MAX`] for a fixed rank or ratio, whose error nothing bounds.
    ///
    /// Verification compares outputs element-wise, `|a − b| ≤ tol·max(1, |a|)`, and the worst
    /// element of a lossy model sits far above its typical error: on the real models the smallest
    /// passing tolerance is 15–30× the relative L2 output error (captcha_crnn at 100 % argmax
    /// agreement needs 1.3). So this is a sanity bound that catches a broken rewrite (wrong
    /// shapes, NaN, garbage), not an accuracy claim; the report's per-layer errors and a task
    /// metric tell whether the model is still good, and `--tolerance` tightens it.
    fn tolerance(&self, config: &Config) -> f32 {
        match config.lowrank.error_budget(!config.calibration.is_empty()) {
            Some(b) => (VERIFY_SLACK * b).clamp(1e-4, VERIFY_MAX) as f32,
            None => VERIFY_MAX as f32,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Candidates

/// How the weight enters the op.
#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// `MatMul(X, W[K,N])`.
    Right,
    /// `MatMul(W[M,K], X)`; factored as `Wᵀ[K,M]`.
    Left,
    /// `Gemm(X, B, C)`, `W = op(B)`.
    Gemm { trans_a: bool, trans_b: bool },
    /// `Conv(X, W[M,C,k…])`; factored as `W[M, C·k…]ᵀ`.
    Conv { c_in: usize, kernel: Vec<usize> },
}

/// A layer that may be factored: its op, weight and the matrix shape `K × N` being factored.
#[derive(Debug, Clone)]
struct Layer {
    node: NodeId,
    op: &'static str,
    form: Form,
    act: ValueRef,
    weight: ValueRef,
    dims: Vec<i64>,
    /// The weight's output-channel axis (0 or 1): `N` is along it, `K` along the others.
    out_axis: usize,
    k: usize,
    n: usize,
}

impl Layer {
    fn shape_text(&self) -> String {
        let d: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("W[{}]", d.join("×"))
    }

    fn sampling(&self, g: &Graph) -> Sampling {
        match &self.form {
            Form::Right => Sampling::Rows,
            Form::Left => Sampling::BatchColumns,
            Form::Gemm { trans_a: false, .. } => Sampling::Rows,
            Form::Gemm { trans_a: true, .. } => Sampling::Columns,
            Form::Conv { kernel, .. } => {
                let nsp = kernel.len();
                let ints = |name: &str, d: usize, len: usize| -> Vec<usize> {
                    attr_ints(g, self.node, name)
                        .map(|v| v.iter().map(|x| (*x).max(0) as usize).collect())
                        .unwrap_or_else(|| vec![d; len])
                };
                let auto_pad = g
                    .node(self.node)
                    .attr("auto_pad")
                    .and_then(|a| a.s.as_ref())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_else(|| "NOTSET".into());
                Sampling::Conv {
                    kernel: kernel.clone(),
                    strides: ints("strides", 1, nsp),
                    dilations: ints("dilations", 1, nsp),
                    pads: ints("pads", 0, 2 * nsp),
                    auto_pad,
                }
            }
        }
    }
}

/// The constant behind `v` if it is an initializer or a `Constant` node's `value`.
fn constant(g: &Graph, v: ValueRef) -> Option<&TensorProto> {
    g.const_tensor(v)
}

/// The op table's weight operand of `node` with `role`.
fn operand(node: &NodeProto, role: WeightRole) -> Option<WeightOperand> {
    ops::weights(node).into_iter().find(|w| w.role == role)
}

/// Parses `id` as a MatMul, Gemm or Conv with a constant weight: the layer, or why not. Which
/// input is the weight and which of its axes is the output channel is the op table's word
/// ([`crate::ops::OpDef::weights`]); `K` is the weight's other axes, flattened.
fn parse(model: &Model, id: NodeId) -> std::result::Result<Layer, String> {
    let g = &model.graph;
    let node = g.node(id);
    let op = node.op_type();
    let p = node.op().ok_or("not an op")?;
    let ins = g.node_inputs(id);
    let get = |i: usize| ins.get(i).copied().flatten();
    let slot = |w: Option<WeightOperand>| w.map(|w| w.input).ok_or("no weight operand");
    let (op, act, weight, form, w_op) = match op {
        "MatMul" => {
            let right = operand(p, WeightRole::Kernel);
            let left = operand(p, WeightRole::LeftKernel);
            let (Some(x0), Some(x1)) = (get(slot(left)?), get(slot(right)?)) else {
                return Err("MatMul without two inputs".into());
            };
            match (constant(g, x0).is_some(), constant(g, x1).is_some()) {
                (true, true) => return Err("both inputs are constant (fold them instead)".into()),
                (false, false) => return Err("no constant weight: both inputs are computed".into()),
                (false, true) => ("MatMul", x0, x1, Form::Right, right),
                (true, false) => ("MatMul", x1, x0, Form::Left, left),
            }
        }
        "Gemm" => {
            let w = operand(p, WeightRole::Kernel);
            let (Some(a), Some(b)) = (get(0), get(slot(w)?)) else {
                return Err("Gemm without two inputs".into());
            };
            if constant(g, b).is_none() {
                return Err("B is not constant".into());
            }
            if model.opset("").is_some_and(|v| v < 7) {
                return Err("Gemm before opset 7 (broadcast attribute) is not handled".into());
            }
            let form = Form::Gemm {
                trans_a: attr_i(g, id, "transA", 0) != 0,
                trans_b: attr_i(g, id, "transB", 0) != 0,
            };
            ("Gemm", a, b, form, w)
        }
        "Conv" => {
            let w_op = operand(p, WeightRole::Kernel);
            let (Some(x), Some(w)) = (get(0), get(slot(w_op)?)) else {
                return Err("Conv without input and weight".into());
            };
            let t = constant(g, w).ok_or("weight is not constant")?;
            let group = w_op.map_or(1, |w| w.groups);
            if group != 1 {
                return Err(format!("grouped convolution (group = {group})"));
            }
            if t.dims.len() < 3 {
                return Err(format!("weight has rank {}, expected ≥ 3", t.dims.len()));
            }
            let form = Form::Conv {
                c_in: t.dims[1].max(0) as usize,
                kernel: t.dims[2..].iter().map(|d| (*d).max(0) as usize).collect(),
            };
            ("Conv", x, w, form, w_op)
        }
        other => return Err(format!("`{other}` is not factored")),
    };
    let t = constant(g, weight).expect("checked above");
    let dims = t.dims.clone();
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!(
            "weight is {}; only float32 weights are factored",
            crate::onnx::dtype::name(t.data_type.unwrap_or(0))
        ));
    }
    if !matches!(form, Form::Conv { .. }) && dims.len() != 2 {
        return Err(if dims.len() > 2 {
            format!("batched {}-D weight {:?}", dims.len(), dims)
        } else {
            format!("{}-D weight (a vector product)", dims.len())
        });
    }
    let out_axis = w_op
        .and_then(|w| w.out_axis)
        .and_then(|a| ops::infer::norm_axis(a, dims.len()))
        .ok_or("the weight has no output axis")?;
    let u = |d: i64| d.max(0) as usize;
    let n = u(dims[out_axis]);
    let k = dims
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != out_axis)
        .map(|(_, d)| u(*d))
        .product();
    Ok(Layer {
        node: id,
        op,
        form,
        act,
        weight,
        dims,
        out_axis,
        k,
        n,
    })
}

/// Name suffixes of the two nodes of a pair this rule made.
const FIRST_SUFFIX: &str = "/lowrank1";
const SECOND_SUFFIX: &str = "/lowrank2";

/// Whether `a` feeds only `b`, as `b`'s activation, and the two form a low-rank pair.
fn pair_with(model: &Model, a: &Layer, b: &Layer) -> bool {
    let g = &model.graph;
    let out = ValueRef {
        node: a.node,
        slot: 0,
    };
    if g.consumers(out) != vec![(b.node, act_slot(b))]
        || g.is_graph_output(out)
        || g.is_captured(out)
    {
        return false;
    }
    if b.act != out || a.n != b.k {
        return false;
    }
    let compatible = match (&a.form, &b.form) {
        (Form::Left, Form::Left) => true,
        (Form::Right | Form::Gemm { .. }, Form::Right | Form::Gemm { trans_a: false, .. }) => true,
        (Form::Conv { .. }, Form::Conv { kernel, .. }) => {
            let ones =
                |name: &str| attr_ints(g, b.node, name).is_none_or(|v| v.iter().all(|x| *x == 1));
            let zeros = attr_ints(g, b.node, "pads").is_none_or(|v| v.iter().all(|x| *x == 0));
            kernel.iter().all(|k| *k == 1) && ones("strides") && zeros
        }
        _ => false,
    };
    // The pair is low-rank when its inner size is below the break-even rank of the product.
    let r = a.n;
    compatible && r * (a.k + b.n) < a.k * b.n
}

fn act_slot(l: &Layer) -> usize {
    match l.form {
        Form::Left => 1,
        _ => 0,
    }
}

/// Why `layer` is one factor of an existing low-rank pair, if it is.
fn in_pair(model: &Model, layer: &Layer) -> Option<String> {
    let g = &model.graph;
    // Factors this rule made carry these names, whatever their rank (a full-rank pair is no
    // low-rank pair by shape, but must not be factored again either).
    let label = g.node(layer.node).label();
    for (suffix, which) in [(FIRST_SUFFIX, "first"), (SECOND_SUFFIX, "second")] {
        if label.ends_with(suffix) {
            return Some(format!(
                "already a low-rank pair: {which} factor (rank {}) made by lowrank",
                if which == "first" { layer.n } else { layer.k }
            ));
        }
    }
    let out = ValueRef {
        node: layer.node,
        slot: 0,
    };
    if let [(next, _)] = g.consumers(out).as_slice() {
        if let Ok(b) = parse(model, *next) {
            if pair_with(model, layer, &b) {
                return Some(format!(
                    "already a low-rank pair: first factor (rank {}) of `{}`",
                    layer.n,
                    g.node(b.node).label()
                ));
            }
        }
    }
    let prev = layer.act.node;
    if g.node(prev).op().is_some() {
        if let Ok(a) = parse(model, prev) {
            if pair_with(model, &a, layer) {
                return Some(format!(
                    "already a low-rank pair: second factor (rank {}) after `{}`",
                    layer.k,
                    g.node(a.node).label()
                ));
            }
        }
    }
    None
}

/// A layer the rule may factor, or the reason it is left alone (not counting the rank choice).
fn candidate(model: &Model, id: NodeId, cfg: &LowrankConfig) -> std::result::Result<Layer, String> {
    let g = &model.graph;
    let layer = parse(model, id)?;
    let uses = g.consumers(layer.weight).len();
    if uses > 1 {
        return Err(format!(
            "weight `{}` is shared by {uses} nodes",
            g.value_name(layer.weight)
        ));
    }
    if g.is_graph_output(layer.weight) || g.is_captured(layer.weight) {
        return Err(format!(
            "weight `{}` is also a graph output or read by a subgraph",
            g.value_name(layer.weight)
        ));
    }
    if let Some(why) = in_pair(model, &layer) {
        return Err(why);
    }
    let params = (layer.k * layer.n) as u64;
    if params < cfg.min_params {
        return Err(format!(
            "too small: {} has {params} parameters (< {})",
            layer.shape_text(),
            cfg.min_params
        ));
    }
    Ok(layer)
}

// ---------------------------------------------------------------------------------------------
// Planning (cached: `find` runs after every patch)

/// A factorisation ready to apply, or the reason there is none.
type Plan = std::result::Result<Arc<Factors>, String>;

/// A fast 64-bit hash (FxHash-style) of a byte slice.
fn fx(bytes: &[u8], mut h: u64) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for b in chunks.remainder() {
        h = (h.rotate_left(5) ^ *b as u64).wrapping_mul(K);
    }
    h
}

fn weight_hash(t: &TensorProto) -> u64 {
    let mut h = fx(&t.data_type.unwrap_or(0).to_le_bytes(), 0);
    for d in &t.dims {
        h = fx(&d.to_le_bytes(), h);
    }
    match &t.raw_data {
        Some(r) if !r.is_empty() => fx(r, h),
        _ => {
            let mut raw = Vec::with_capacity(t.float_data.len() * 4);
            for f in &t.float_data {
                raw.extend_from_slice(&f.to_le_bytes());
            }
            fx(&raw, h)
        }
    }
}

static PLANS: Mutex<BTreeMap<u64, Plan>> = Mutex::new(BTreeMap::new());
static PLAN_BYTES: Mutex<usize> = Mutex::new(0);
/// Cached factors beyond this many bytes are dropped (they are recomputed on demand).
const PLAN_CACHE_BYTES: usize = 1 << 30;

/// The weight as the `K × N` matrix being factored (transposed when its output axis comes first).
fn weight_matrix(t: &TensorProto, layer: &Layer) -> Result<Array2<f32>> {
    let w = tensor::to_f32(t)?;
    let rows = layer.dims[0].max(0) as usize;
    let cols = w.len() / rows.max(1);
    let w2 = w
        .into_shape_with_order((rows, cols))
        .map_err(|e| Error::Tensor {
            name: t.name.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?;
    Ok(if layer.out_axis == 0 {
        w2.t().as_standard_layout().to_owned()
    } else {
        w2
    })
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// Plans `layer`: factors (cached by weight content, options and calibration) or why not.
fn plan(g: &Graph, layer: &Layer, gram: Option<&CalibGram>, cfg: &LowrankConfig) -> Plan {
    let t = constant(g, layer.weight).ok_or("weight is not constant")?;
    let mut key = weight_hash(t);
    key = fx(
        format!("{:?}|{:?}|{}", layer.form, cfg, layer.k).as_bytes(),
        key,
    );
    if let Some(cg) = gram {
        key = fx(&cg.key.to_le_bytes(), key);
    }
    if let Some(p) = PLANS.lock().expect("plan cache").get(&key) {
        return p.clone();
    }
    let planned = compute_plan(t, layer, gram, cfg);
    let bytes = planned
        .as_ref()
        .map(|f| 4 * (f.a.len() + f.b.len()))
        .unwrap_or(64);
    let mut total = PLAN_BYTES.lock().expect("plan cache size");
    let mut plans = PLANS.lock().expect("plan cache");
    if *total + bytes > PLAN_CACHE_BYTES {
        plans.clear();
        *total = 0;
    }
    *total += bytes;
    plans.insert(key, planned.clone());
    planned
}

fn compute_plan(
    t: &TensorProto,
    layer: &Layer,
    gram: Option<&CalibGram>,
    cfg: &LowrankConfig,
) -> Plan {
    let w = weight_matrix(t, layer).map_err(|e| e.to_string())?;
    let whitener = match gram {
        Some(cg) => match &cg.gram {
            Ok(gm) => Some(Whitener::new(gm, cfg.ridge).map_err(|e| format!("calibration: {e}"))?),
            Err(e) => return Err(format!("calibration failed: {e}")),
        },
        None => None,
    };
    let (mode, tolerance) = cfg.effective(whitener.is_some());
    let req = rank::request(layer.k, layer.n, mode, tolerance, cfg.min_saving);
    let (k, n) = (layer.k, layer.n);
    let params = k * n;
    let why = cfg.describe(whitener.is_some());
    match linalg::low_rank(w.view(), whitener.as_ref(), &req) {
        Outcome::Factored(f) => Ok(Arc::new(f)),
        Outcome::Zero => Err(format!("{}: the weight is all zeros", layer.shape_text())),
        Outcome::TooHigh {
            needed,
            error_at_max,
        } => {
            let err_kind = if whitener.is_some() {
                "calibration output error"
            } else {
                "weight error"
            };
            let max = req.max_rank;
            let at_max = if max == 0 {
                String::new()
            } else {
                format!("; at rank {max} the {err_kind} would be {error_at_max:.4}")
            };
            let fixed_too_high = req.fixed.is_some_and(|f| f >= k.min(n));
            Err(match needed {
                Some(_) if fixed_too_high => format!(
                    "{} (K={k}, N={n}): {why} is not below min(K, N) = {}",
                    layer.shape_text(),
                    k.min(n)
                ),
                Some(r) if r >= k.min(n) => format!(
                    "{} (K={k}, N={n}): {why} needs full rank {r}{at_max}",
                    layer.shape_text()
                ),
                Some(r) => {
                    let saving = 1.0 - (r * (k + n)) as f64 / params as f64;
                    let effect = if saving >= 0.0 {
                        format!("saves {} of {params} parameters", pct(saving))
                    } else {
                        format!("adds {} to {params} parameters", pct(-saving))
                    };
                    format!(
                        "{} (K={k}, N={n}): rank {r} for {why} {effect}, not more than --lowrank-min-saving {}{at_max}",
                        layer.shape_text(),
                        pct(cfg.min_saving),
                    )
                }
                None => format!(
                    "{} (K={k}, N={n}): {why} needs a rank above {max}, the most that saves {}{at_max}",
                    layer.shape_text(),
                    pct(cfg.min_saving),
                ),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Calibration (cached: activations are captured once per model and layer)

/// A layer's Gram matrix `XᵀX` on the calibration data, or why there is none.
#[derive(Debug)]
struct CalibGram {
    key: u64,
    gram: std::result::Result<Gram, String>,
}

static GRAMS: Mutex<BTreeMap<u64, Arc<CalibGram>>> = Mutex::new(BTreeMap::new());

fn gram_key(g: &Graph, layer: &Layer, config: &Config) -> u64 {
    let t = constant(g, layer.weight).expect("candidate weight");
    let mut h = weight_hash(t);
    let paths: Vec<String> = config
        .calibration
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    h = fx(
        format!(
            "{}|{}|{:?}|{:?}",
            paths.join(";"),
            g.node(layer.node).label(),
            layer.sampling(g),
            layer.form
        )
        .as_bytes(),
        h,
    );
    h
}

/// Gram matrices for `layers` (same order), capturing what is not cached yet in one tract run
/// of the model as it is now (the original, on the first call).
fn calibration_grams(model: &Model, layers: &[Layer], config: &Config) -> Vec<Arc<CalibGram>> {
    let g = &model.graph;
    let keys: Vec<u64> = layers.iter().map(|l| gram_key(g, l, config)).collect();
    let missing: Vec<usize> = {
        let cache = GRAMS.lock().expect("gram cache");
        (0..layers.len())
            .filter(|i| !cache.contains_key(&keys[*i]))
            .collect()
    };
    if !missing.is_empty() {
        let results = capture_grams(model, layers, &missing, config);
        let mut cache = GRAMS.lock().expect("gram cache");
        for (i, r) in missing.iter().zip(results) {
            cache.insert(
                keys[*i],
                Arc::new(CalibGram {
                    key: keys[*i],
                    gram: r,
                }),
            );
        }
    }
    let cache = GRAMS.lock().expect("gram cache");
    keys.iter().map(|k| cache[k].clone()).collect()
}

fn capture_grams(
    model: &Model,
    layers: &[Layer],
    which: &[usize],
    config: &Config,
) -> Vec<std::result::Result<Gram, String>> {
    let g = &model.graph;
    let proto = model.to_proto();
    let mut names: Vec<String> = Vec::new();
    for &i in which {
        let n = g.value_name(layers[i].act).to_string();
        if layers[i].k <= MAX_CALIBRATION_K && !names.contains(&n) {
            names.push(n);
        }
    }
    let captured = calibrate::load_sets(&config.calibration, &proto)
        .and_then(|sets| calibrate::capture(&proto, &names, &sets));
    let captured = match captured {
        Ok(c) => c,
        Err(e) => return which.iter().map(|_| Err(e.to_string())).collect(),
    };
    which
        .iter()
        .map(|&i| {
            let l = &layers[i];
            if l.k > MAX_CALIBRATION_K {
                return Err(format!(
                    "K = {} is wider than {MAX_CALIBRATION_K}, too wide for a Gram matrix",
                    l.k
                ));
            }
            let name = g.value_name(l.act);
            let sampling = l.sampling(g);
            let mut gram = Gram::new(l.k);
            for set in &captured {
                let act = set
                    .get(name)
                    .ok_or_else(|| format!("`{name}` was not captured"))?;
                calibrate::gram(&mut gram, act, &sampling).map_err(|e| e.to_string())?;
            }
            Ok(gram)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Patch

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// Adds a weight like the original: an initializer, or a `Constant` node if it was one.
fn add_weight(p: &mut Patch, as_constant: bool, name: &str, a: ArrayD<f32>) -> Wire {
    let t = tensor::from_f32(name, &a);
    if as_constant {
        let node = NodeProto {
            op_type: Some("Constant".into()),
            name: Some(name.to_string()),
            output: vec![name.to_string()],
            attribute: vec![tensor_attr("value", t)],
            ..Default::default()
        };
        p.add_op(node, &[])[0]
    } else {
        p.add_initializer(t)
    }
}

fn op_node(op: &str, name: &str, out: &str, n_in: usize, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: vec![String::new(); n_in],
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn reshaped(a: Array2<f32>, shape: &[usize]) -> ArrayD<f32> {
    a.as_standard_layout()
        .to_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("same number of elements")
}

fn describe(
    g: &Graph,
    layer: &Layer,
    f: &Factors,
    cfg: &LowrankConfig,
    data_rows: Option<usize>,
) -> String {
    let (k, n, r) = (layer.k, layer.n, f.rank);
    let before = k * n;
    let after = r * (k + n);
    let unit = if matches!(layer.form, Form::Conv { .. }) {
        "MACs/pixel"
    } else {
        "MACs/row"
    };
    let shape = match &layer.form {
        Form::Conv { c_in, kernel } => {
            let ks: Vec<String> = kernel.iter().map(|x| x.to_string()).collect();
            format!(
                "{} → Conv {} {c_in}→{r} + Conv 1×1 {r}→{n}",
                layer.shape_text(),
                ks.join("×")
            )
        }
        _ => format!(
            "{} (K={k}, N={n}) → [{k}×{r}]·[{r}×{n}]",
            layer.shape_text()
        ),
    };
    let mut s = format!(
        "{} `{}` {shape}: rank {r} ({}), params {before} → {after} (−{}), {unit} {before} → {after}, weight error {:.4}",
        layer.op,
        g.node(layer.node).label(),
        match cfg.effective(f.data_error.is_some()) {
            (Some(RankMode::Rank(_)), None) => "fixed".to_string(),
            _ => cfg.describe(f.data_error.is_some()),
        },
        pct(1.0 - after as f64 / before as f64),
        f.weight_error,
    );
    if let Some(e) = f.data_error {
        s += &format!(
            ", calibration output error {e:.4} (data-aware, {} rows)",
            data_rows.unwrap_or(0)
        );
    }
    s += &format!(", {}", f.method);
    s
}

fn build_patch(
    model: &Model,
    layer: &Layer,
    f: &Factors,
    cfg: &LowrankConfig,
    data_rows: Option<usize>,
) -> Result<Patch> {
    let g = &model.graph;
    let label = g.node(layer.node).label();
    let wname = g.value_name(layer.weight).to_string();
    let out_name = g.value_name(ValueRef {
        node: layer.node,
        slot: 0,
    });
    let as_constant = matches!(g.node(layer.weight.node).kind, NodeKind::Op(_));
    let mut p = Patch::new(describe(g, layer, f, cfg, data_rows), Some(layer.node));
    if cfg.min_saving < 0.0 {
        p.allow_growth();
    }
    let r = f.rank;
    let (k, n) = (layer.k, layer.n);
    let act = Wire::Value(layer.act);
    let mid = format!("{label}/lowrank_mid");
    let (n1, n2) = (
        format!("{label}{FIRST_SUFFIX}"),
        format!("{label}{SECOND_SUFFIX}"),
    );
    let (w1n, w2n) = (format!("{wname}.lowrank1"), format!("{wname}.lowrank2"));
    let out2 = format!("{out_name}.lowrank");
    let a = f.a.clone();
    let b = f.b.clone();
    let y = match &layer.form {
        Form::Right => {
            let w1 = add_weight(&mut p, as_constant, &w1n, a.into_dyn());
            let w2 = add_weight(&mut p, as_constant, &w2n, b.into_dyn());
            let t = p.add_op(
                op_node("MatMul", &n1, &mid, 2, vec![]),
                &[Some(act), Some(w1)],
            )[0];
            p.add_op(
                op_node("MatMul", &n2, &out2, 2, vec![]),
                &[Some(t), Some(w2)],
            )[0]
        }
        Form::Left => {
            let w1 = add_weight(
                &mut p,
                as_constant,
                &w1n,
                reshaped(a.t().to_owned(), &[r, k]),
            );
            let w2 = add_weight(
                &mut p,
                as_constant,
                &w2n,
                reshaped(b.t().to_owned(), &[n, r]),
            );
            let t = p.add_op(
                op_node("MatMul", &n1, &mid, 2, vec![]),
                &[Some(w1), Some(act)],
            )[0];
            p.add_op(
                op_node("MatMul", &n2, &out2, 2, vec![]),
                &[Some(w2), Some(t)],
            )[0]
        }
        Form::Gemm { trans_a, trans_b } => {
            let w1 = add_weight(&mut p, as_constant, &w1n, a.into_dyn());
            let w2 = if *trans_b {
                add_weight(
                    &mut p,
                    as_constant,
                    &w2n,
                    reshaped(b.t().to_owned(), &[n, r]),
                )
            } else {
                add_weight(&mut p, as_constant, &w2n, b.into_dyn())
            };
            let t = if !trans_a {
                p.add_op(
                    op_node("MatMul", &n1, &mid, 2, vec![]),
                    &[Some(act), Some(w1)],
                )[0]
            } else if model.opset("").unwrap_or(1) >= 11 {
                p.add_op(
                    op_node("Gemm", &n1, &mid, 2, vec![make_attr_i("transA", 1)]),
                    &[Some(act), Some(w1)],
                )[0]
            } else {
                let tr = p.add_op(
                    op_node(
                        "Transpose",
                        &format!("{label}/lowrank_transpose"),
                        &format!("{label}/lowrank_xt"),
                        1,
                        vec![make_attr_ints("perm", &[1, 0])],
                    ),
                    &[Some(act)],
                )[0];
                p.add_op(
                    op_node("MatMul", &n1, &mid, 2, vec![]),
                    &[Some(tr), Some(w1)],
                )[0]
            };
            let attrs: Vec<AttributeProto> = g
                .node(layer.node)
                .op()
                .map(|o| {
                    o.attribute
                        .iter()
                        .filter(|a| a.name.as_deref() != Some("transA"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let c = g.input(layer.node, 2);
            let mut ins = vec![Some(t), Some(w2)];
            if let Some(c) = c {
                ins.push(Some(Wire::Value(c)));
            }
            let n_in = ins.len();
            p.add_op(op_node("Gemm", &n2, &out2, n_in, attrs), &ins)[0]
        }
        Form::Conv { c_in, kernel } => {
            let mut s1 = vec![r, *c_in];
            s1.extend(kernel.iter().copied());
            let mut s2 = vec![n, r];
            s2.extend(kernel.iter().map(|_| 1));
            let w1 = add_weight(&mut p, as_constant, &w1n, reshaped(a.t().to_owned(), &s1));
            let w2 = add_weight(&mut p, as_constant, &w2n, reshaped(b.t().to_owned(), &s2));
            let attrs1: Vec<AttributeProto> = g
                .node(layer.node)
                .op()
                .map(|o| o.attribute.clone())
                .unwrap_or_default();
            let t = p.add_op(
                op_node("Conv", &n1, &mid, 2, attrs1),
                &[Some(act), Some(w1)],
            )[0];
            let ones: Vec<i64> = kernel.iter().map(|_| 1).collect();
            let mut ins = vec![Some(t), Some(w2)];
            if let Some(bias) = g.input(layer.node, 2) {
                ins.push(Some(Wire::Value(bias)));
            }
            let n_in = ins.len();
            p.add_op(
                op_node(
                    "Conv",
                    &n2,
                    &out2,
                    n_in,
                    vec![make_attr_ints("kernel_shape", &ones)],
                ),
                &ins,
            )[0]
        }
    };
    p.shunt(
        ValueRef {
            node: layer.node,
            slot: 0,
        },
        y,
    );
    p.remove(layer.node);
    // The old weight is dead once its only reader is gone.
    if matches!(
        g.node(layer.weight.node).kind,
        NodeKind::Initializer(_) | NodeKind::Op(_)
    ) && g.consumers(layer.weight).len() == 1
        && g.node(layer.weight.node).num_outputs() == 1
    {
        p.remove(layer.weight.node);
    }
    Ok(p)
}
