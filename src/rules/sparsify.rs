//! `P002 sparsify`: zeroes the smallest-magnitude weights of each layer (connection sparsity).
//!
//! **What:** the constant float32 kernel of every Conv, ConvTranspose, Gemm and MatMul (the
//! weight operand the op table names, [`crate::ops::weights`]: `W`, Gemm's `B`, MatMul's constant
//! side) gets its smallest weights set to 0, layer by layer:
//!
//! - `--sparsity S` (unstructured; `S` in (0, 1), 0.5 when not given): the `⌊S·n⌋` weights of
//!   smallest `|w|` among the layer's `n`, ties broken by the lower flat (row-major) index, so
//!   the same weights give the same zeros. Weights that are already 0 count among them.
//! - `--sparsity-pattern 2:4`: in every group of 4 consecutive weights along the layer's input
//!   (reduction) axis from the op table (Conv's input channels, MatMul's `K`, Gemm's `K` whatever
//!   `transB`), the 2 of smallest `|w|` (ties: the earlier one) are zeroed: the pattern the
//!   sparse tensor cores of NVIDIA Ampere and later run at twice the dense rate. `S` is then 0.5.
//!
//! Biases are untouched. The weight keeps its name, shape and storage size: zeroing alone does
//! not make the file smaller; `--sparse-storage` (an option of the writer, `crate::onnx::sparse`)
//! then stores a weight as a `sparse_initializer` where that is smaller.
//!
//! **Why:** magnitude pruning is the usual first step of sparse deployment: runtimes with sparse
//! kernels (2:4 on GPUs, unstructured on CPUs that skip zeros) run the zeroed weights faster,
//! and stored sparse the model gets smaller, without going back to the training framework.
//!
//! **Example:** `y = MatMul(x, W[4,2])` with `W = [[1,−8],[−2,7],[6,3],[0.5,−4]]`, `--sparsity
//! 0.5`: the 4 smallest magnitudes 0.5, 1, 2, 3 go, `W = [[0,−8],[0,7],[6,0],[0,−4]]`;
//! `--sparsity-pattern 2:4` (groups of the 4 rows of each column): column 0 keeps 6 and −2,
//! column 1 keeps −8 and 7.
//!
//! **Lossy**: every output moves; a run is judged by the model-level budget (see README "Lossy
//! runs and the budget"), with [`crate::rules::prune::LOSSY_TOLERANCE`] as the element-wise
//! sanity bound. Exact where nothing moves: a layer that already has at least `⌊S·n⌋` zeros
//! (or every group of 4 at least 2) is left alone with that reason, so a second run finds
//! nothing, and a layer whose smallest weights are 0 comes out bit for bit.
//!
//! **Left alone, with a reason:** kernels that are not constant (computed, behind a
//! `DequantizeLinear`, or stored as a `sparse_initializer`), held by a `Constant` node (`clean`'s
//! `constant-to-initializer` makes it an initializer first), not float32, holding NaN or
//! infinity, read by a node other than these layers' kernel input or by a subgraph, graph
//! outputs; with 2:4, kernels whose input axis is not a multiple of 4 (depthwise Conv) or whose
//! readers disagree on it.

use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::ops::{self, WeightRole};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

/// The sparsity used when `--sparsity` is not given (what `--rules sparsify` does alone).
pub const DEFAULT_SPARSITY: f64 = 0.5;

/// The ops whose kernels are sparsified.
const LAYERS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Which weights of a layer may be zeroed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pattern {
    /// Any `⌊S·n⌋` of the layer's weights (`--sparsity-pattern unstructured`, the default).
    #[default]
    Unstructured,
    /// 2 of every 4 consecutive weights along the input axis (`--sparsity-pattern 2:4`).
    TwoFour,
}

/// Options of the `sparsify` rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparsifyConfig {
    /// `--sparsity S`, in (0, 1); [`DEFAULT_SPARSITY`] when `None`.
    pub sparsity: Option<f64>,
    /// `--sparsity-pattern`.
    pub pattern: Pattern,
}

impl SparsifyConfig {
    /// Builds the options from the command-line flags, refusing values it does not know and an
    /// `S` that contradicts the 2:4 pattern.
    pub fn from_flags(sparsity: Option<f64>, pattern: Option<&str>) -> Result<SparsifyConfig> {
        if let Some(s) = sparsity {
            if !(s.is_finite() && s > 0.0 && s < 1.0) {
                return Err(Error::Usage(format!(
                    "--sparsity must be in (0, 1), got `{s}`"
                )));
            }
        }
        let pattern = match pattern {
            None | Some("unstructured") => Pattern::Unstructured,
            Some("2:4") => Pattern::TwoFour,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--sparsity-pattern must be `unstructured` or `2:4`, got `{other}`"
                )))
            }
        };
        if let (Pattern::TwoFour, Some(s)) = (pattern, sparsity) {
            if s != 0.5 {
                return Err(Error::Usage(format!(
                    "--sparsity-pattern 2:4 zeroes exactly half of the weights; `--sparsity {s}` contradicts it (drop it, or give 0.5)"
                )));
            }
        }
        Ok(SparsifyConfig { sparsity, pattern })
    }

    /// The fraction of each layer's weights that ends up zero.
    pub fn target(&self) -> f64 {
        match self.pattern {
            Pattern::TwoFour => 0.5,
            Pattern::Unstructured => self.sparsity.unwrap_or(DEFAULT_SPARSITY),
        }
    }

    /// `unstructured 50 %` or `2:4`.
    pub fn describe(&self) -> String {
        match self.pattern {
            Pattern::TwoFour => "2:4".into(),
            Pattern::Unstructured => format!("unstructured {}", percent(self.target())),
        }
    }
}

fn percent(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// See the module docs.
pub struct Sparsify;

fn rule_err(reason: impl Into<String>) -> Error {
    Error::Rule {
        rule: "sparsify".into(),
        reason: reason.into(),
    }
}

/// The kernel operand of layer `id`, `(slot, input axis)`: the op table's `Kernel` when it is
/// constant, else MatMul's constant left side; `None` for other ops.
fn kernel_operand(g: &Graph, id: NodeId) -> Option<(usize, Option<i64>)> {
    let n = g.node(id);
    if !n.domain().is_empty() || !LAYERS.contains(&n.op_type()) {
        return None;
    }
    let p = n.op()?;
    let is_const = |slot: usize| g.input(id, slot).and_then(|v| g.const_tensor(v)).is_some();
    let ws = ops::weights(p);
    let kernel = ws.iter().find(|w| w.role == WeightRole::Kernel)?;
    if !is_const(kernel.input) {
        if let Some(left) = ws
            .iter()
            .find(|w| w.role == WeightRole::LeftKernel && is_const(w.input))
        {
            return Some((left.input, left.in_axis));
        }
    }
    Some((kernel.input, kernel.in_axis))
}

/// Positions to zero in `w` (row-major, dims `dims`), ascending, and the number of zeros after;
/// or why nothing is zeroed. `in_axis` is the axis 2:4 groups run along (normalised).
pub fn select(
    w: &[f32],
    dims: &[usize],
    cfg: &SparsifyConfig,
    in_axis: Option<usize>,
) -> std::result::Result<(Vec<usize>, usize), String> {
    let n = w.len();
    let zeros = w.iter().filter(|v| **v == 0.0).count();
    match cfg.pattern {
        Pattern::Unstructured => {
            let s = cfg.target();
            let k = (s * n as f64).floor() as usize;
            if k == 0 {
                return Err(format!("has {n} weights: sparsity {s} zeroes none of them"));
            }
            if zeros >= k {
                return Err(format!(
                    "already {zeros} of {n} weights zero ({}), at least sparsity {s}",
                    percent(zeros as f64 / n as f64)
                ));
            }
            let key = |i: &usize| (w[*i].abs(), *i);
            let mut idx: Vec<usize> = (0..n).collect();
            idx.select_nth_unstable_by(k - 1, |a, b| {
                let (x, i) = key(a);
                let (y, j) = key(b);
                x.total_cmp(&y).then(i.cmp(&j))
            });
            let mut out: Vec<usize> = idx[..k].iter().copied().filter(|&i| w[i] != 0.0).collect();
            out.sort_unstable();
            Ok((out, k))
        }
        Pattern::TwoFour => {
            let Some(axis) = in_axis.filter(|a| *a < dims.len()) else {
                return Err("the op table names no input axis of it to group along".into());
            };
            let len = dims[axis];
            if len % 4 != 0 {
                return Err(format!(
                    "its input axis {axis} has {len} elements, not a multiple of 4"
                ));
            }
            let inner: usize = dims[axis + 1..].iter().product();
            let outer: usize = dims[..axis].iter().product();
            let mut out = Vec::new();
            for o in 0..outer {
                for grp in 0..len / 4 {
                    for i in 0..inner {
                        let pos = |t: usize| (o * len + 4 * grp + t) * inner + i;
                        let mut four = [pos(0), pos(1), pos(2), pos(3)];
                        if four.iter().filter(|p| w[**p] == 0.0).count() >= 2 {
                            continue;
                        }
                        // Stable on equal magnitudes: the earlier weight goes first.
                        four.sort_by(|a, b| w[*a].abs().total_cmp(&w[*b].abs()));
                        out.extend(four[..2].iter().copied().filter(|&p| w[p] != 0.0));
                    }
                }
            }
            if out.is_empty() {
                return Err(format!(
                    "already 2:4 sparse along axis {axis} ({zeros} of {n} weights zero)"
                ));
            }
            out.sort_unstable();
            let after = zeros + out.len();
            Ok((out, after))
        }
    }
}

/// Checks `weight` (read by `reader` at `slot`) and returns its input axis for 2:4 (normalised;
/// `None` when its readers do not agree or name none), or why it stays as it is.
fn plan(g: &Graph, weight: ValueRef) -> std::result::Result<Option<usize>, String> {
    let name = g.value_name(weight);
    match &g.node(weight.node).kind {
        NodeKind::Initializer(_) => {}
        NodeKind::SparseInitializer(_) => {
            return Err(format!("weight `{name}` is stored as a sparse initializer"))
        }
        NodeKind::Op(_) => {
            return Err(format!(
                "weight `{name}` is held by a `Constant` node (`constant-to-initializer` makes it an initializer)"
            ))
        }
        NodeKind::Input { .. } => return Err(format!("weight `{name}` is a graph input")),
    }
    let t = g
        .const_tensor(weight)
        .ok_or_else(|| format!("weight `{name}` is not constant"))?;
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!("weight `{name}` is not float32"));
    }
    if g.is_graph_output(weight) {
        return Err(format!("weight `{name}` is a graph output"));
    }
    if g.is_captured(weight) {
        return Err(format!("weight `{name}` is read inside a subgraph"));
    }
    let rank = t.dims.len() as i64;
    let mut axes = Vec::new();
    for (reader, slot) in g.consumers(weight) {
        match kernel_operand(g, reader) {
            Some((s, in_axis)) if s == slot => axes.push(
                in_axis
                    .map(|a| if a < 0 { a + rank } else { a })
                    .filter(|a| (0..rank).contains(a))
                    .map(|a| a as usize),
            ),
            _ => {
                return Err(format!(
                    "weight `{name}` is also read by `{}` (`{}`), not as a layer's kernel",
                    g.node(reader).label(),
                    g.node(reader).op_type()
                ))
            }
        }
    }
    let first = axes.first().copied().flatten();
    Ok(if axes.iter().all(|a| *a == first) {
        first
    } else {
        None
    })
}

impl Rule for Sparsify {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "P002",
            name: "sparsify",
            group: "sparsify",
            summary: "zero the smallest-magnitude weights of each layer (unstructured or 2:4)",
            exactness: Exactness::Lossy {
                tolerance: crate::rules::prune::LOSSY_TOLERANCE,
            },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let cfg = &config.sparsify;
        let mut f = Findings::default();
        let mut seen = std::collections::HashSet::new();
        for id in g.ops() {
            let Some((slot, _)) = kernel_operand(g, id) else {
                continue;
            };
            let Some(weight) = g.input(id, slot) else {
                continue;
            };
            if !seen.insert(weight) {
                continue;
            }
            if g.const_tensor(weight).is_none()
                && !matches!(g.node(weight.node).kind, NodeKind::SparseInitializer(_))
            {
                f.skip(model, id, format!("input {slot} is not a constant weight"));
                continue;
            }
            let checked = plan(g, weight).and_then(|axis| {
                let t = g
                    .const_tensor(weight)
                    .ok_or_else(|| "not constant".to_string())?;
                let w = tensor::to_f32(t).map_err(|e| e.to_string())?;
                if w.iter().any(|v| !v.is_finite()) {
                    return Err(format!(
                        "weight `{}` holds NaN or infinity",
                        g.value_name(weight)
                    ));
                }
                let values: Vec<f32> = w.iter().copied().collect();
                select(&values, w.shape(), cfg, axis)
                    .map(|_| ())
                    .map_err(|why| format!("weight `{}`: {why}", g.value_name(weight)))
            });
            match checked {
                Ok(()) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![weight.node],
                    what: format!("weight `{}`", g.value_name(weight)),
                }),
                Err(reason) => f.skip(model, id, reason),
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let cfg = &config.sparsify;
        let node = *m
            .nodes
            .first()
            .ok_or_else(|| rule_err(format!("{}: no weight in the match", m.what)))?;
        let weight = ValueRef { node, slot: 0 };
        let axis = plan(g, weight).map_err(rule_err)?;
        let t = g
            .const_tensor(weight)
            .ok_or_else(|| rule_err(format!("{}: not constant", m.what)))?;
        let mut w = tensor::to_f32(t)?;
        let dims = w.shape().to_vec();
        let values: Vec<f32> = w.iter().copied().collect();
        let (zeroed, after) = select(&values, &dims, cfg, axis)
            .map_err(|why| rule_err(format!("{} {why}", m.what)))?;
        let flat = w
            .as_slice_mut()
            .ok_or_else(|| rule_err("a weight not in standard layout"))?;
        for &i in &zeroed {
            flat[i] = 0.0;
        }
        let name = g.value_name(weight).to_string();
        let mut nt = tensor::from_f32(&name, &w);
        nt.doc_string = t.doc_string.clone();
        let n = values.len();
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let along = match (cfg.pattern, axis) {
            (Pattern::TwoFour, Some(a)) => format!(" along axis {a}"),
            _ => String::new(),
        };
        let mut p = Patch::new(
            format!(
                "{}: float32[{}] {}{along}, {after} of {n} weights zero ({}; {} newly)",
                m.what,
                shape.join(","),
                cfg.describe(),
                percent(after as f64 / n as f64),
                zeroed.len()
            ),
            Some(node),
        );
        let new: Wire = p.add_initializer(nt);
        p.shunt(weight, new);
        p.keep_name(weight, new);
        p.remove(node);
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each match rewrites one weight initializer that no other match reads.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: f64, pattern: Pattern) -> SparsifyConfig {
        SparsifyConfig {
            sparsity: Some(s),
            pattern,
        }
    }

    #[test]
    fn unstructured_zeroes_the_smallest_magnitudes_ties_by_index() {
        // The module doc's example.
        let w = [1.0, -8.0, -2.0, 7.0, 6.0, 3.0, 0.5, -4.0];
        let (z, after) = select(&w, &[4, 2], &cfg(0.5, Pattern::Unstructured), Some(0)).unwrap();
        assert_eq!(z, vec![0, 2, 5, 6]);
        assert_eq!(after, 4);
        // Equal magnitudes: the lower index goes first.
        let w = [2.0, -1.0, 1.0, 1.0, 3.0];
        let (z, _) = select(&w, &[5], &cfg(0.4, Pattern::Unstructured), None).unwrap();
        assert_eq!(z, vec![1, 2]);
    }

    #[test]
    fn existing_zeros_count_and_a_sparse_enough_layer_is_left_alone() {
        let w = [0.0, 5.0, -0.0, 4.0, 3.0, 0.0];
        let why = select(&w, &[6], &cfg(0.5, Pattern::Unstructured), None).unwrap_err();
        assert!(why.contains("already 3 of 6"), "{why}");
        let (z, after) = select(&w, &[6], &cfg(0.7, Pattern::Unstructured), None).unwrap();
        assert_eq!((z, after), (vec![4], 4));
    }

    #[test]
    fn two_four_keeps_the_two_largest_of_each_group_along_the_input_axis() {
        // [4, 2], axis 0: column 0 = [1, -2, 6, 0.5], column 1 = [-8, 7, 3, -4].
        let w = [1.0, -8.0, -2.0, 7.0, 6.0, 3.0, 0.5, -4.0];
        let (z, after) = select(&w, &[4, 2], &cfg(0.5, Pattern::TwoFour), Some(0)).unwrap();
        assert_eq!(z, vec![0, 5, 6, 7]);
        assert_eq!(after, 4);
        // Ties: the earlier ones go.
        let (z, _) = select(&[1.0; 4], &[1, 4], &cfg(0.5, Pattern::TwoFour), Some(1)).unwrap();
        assert_eq!(z, vec![0, 1]);
        let why = select(&[1.0; 6], &[1, 6], &cfg(0.5, Pattern::TwoFour), Some(1)).unwrap_err();
        assert!(why.contains("not a multiple of 4"), "{why}");
        let w = [0.0, 1.0, 0.0, 2.0];
        let why = select(&w, &[4], &cfg(0.5, Pattern::TwoFour), Some(0)).unwrap_err();
        assert!(why.contains("already 2:4"), "{why}");
    }

    #[test]
    fn flags_refuse_out_of_range_unknown_patterns_and_a_conflicting_sparsity() {
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(SparsifyConfig::from_flags(Some(bad), None).is_err());
        }
        assert!(SparsifyConfig::from_flags(None, Some("4:8")).is_err());
        assert!(SparsifyConfig::from_flags(Some(0.7), Some("2:4")).is_err());
        let c = SparsifyConfig::from_flags(Some(0.5), Some("2:4")).unwrap();
        assert_eq!((c.pattern, c.target()), (Pattern::TwoFour, 0.5));
        assert_eq!(SparsifyConfig::default().target(), DEFAULT_SPARSITY);
    }
}
