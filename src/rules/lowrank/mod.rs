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
use crate::rewrite::{
    Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, SearchVariant, Stage, Wire,
};

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

mod layer;
mod patch;
mod plan;

use layer::*;
use patch::*;
use plan::*;

/// What `cluster`'s calibration weighting shares with `lowrank`: which activation a weight
/// multiplies and how ([`Layer::sampling`]), and the weight content hash of the caches.
pub(crate) use layer::{parse as parse_layer, Layer};
pub(crate) use plan::{fx, weight_hash};

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

/// The fractions of each weight's parameters a `--budget` search offers to keep, when no
/// `--lowrank-*` flag pins one configuration.
pub const SEARCH_LADDER: [f64; 4] = [0.5, 0.3, 0.2, 0.1];

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

    /// [`SEARCH_LADDER`] when no flag pins the configuration, else the user's.
    fn search_variants(&self, config: &Config) -> Vec<SearchVariant> {
        if config.lowrank != LowrankConfig::default() {
            return vec![SearchVariant {
                name: format!(
                    "lowrank {}",
                    config.lowrank.describe(!config.calibration.is_empty())
                ),
                config: config.clone(),
                stage: Stage::Factor,
            }];
        }
        SEARCH_LADDER
            .iter()
            .map(|&p| {
                let mut c = config.clone();
                c.lowrank.mode = Some(RankMode::Ratio(p));
                SearchVariant {
                    name: format!("lowrank ratio {p}"),
                    config: c,
                    stage: Stage::Factor,
                }
            })
            .collect()
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
    /// A factored layer `label` becomes `label` + the first and second factors' suffixes.
    fn rewritten_labels(&self, label: &str) -> Vec<String> {
        let (first, second) = layer::factor_labels(label);
        vec![first, second]
    }
}
