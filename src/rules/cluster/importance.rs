//! Calibration importance for `cluster`'s k-means (`--calibration DIR`): how much each weight
//! element matters to its layer's output, from the inputs the layer really sees.
//!
//! For `y = x·W` the output error of a clustered weight is `eᵀ(XᵀX)e` per output channel (`e`
//! the channel's weight errors over the input features). k-means can weigh each value but not
//! the cross terms, so each element of `W` weighs the diagonal: the mean of `x_j²` of the input
//! feature `j` it multiplies (a MatMul's or Gemm's input feature, a Conv's `im2col` patch
//! element: input channel and kernel offset, the flattened weight's own order), as AWQ/GPTQ-style
//! methods weigh, plus a damping of 1 % of the mean over features, so that features the
//! calibration never excites still count a little. Since the diagonal ignores the correlations
//! (large on post-activation features), the rule clusters both ways and keeps the weighted
//! codebook only where it gives the smaller layer output error `Σ eᵀ(XᵀX)e` on the calibration
//! data (the full Gram, [`Weighted::output_error`]); else the plain one, saying so.
//!
//! The activations are captured by the one calibration capture
//! ([`crate::calibrate::capture_each`], one input set at a time) and reduced with
//! [`crate::calibrate::gram`] into a [`Gram`]; which activation a weight multiplies, and how, is
//! `lowrank`'s reading of the layer ([`crate::rules::lowrank::parse_layer`]). Grams are cached per
//! weight content, layer and calibration inputs, captured for all weights at once on the model
//! the first `find` sees (the original).
//!
//! Weights this cannot weigh are clustered unweighted, the report line saying why: LSTM/GRU/RNN
//! weights, `Gather` tables, grouped convolutions, weights read by more than one node, `K` above
//! [`MAX_CALIBRATION_K`]. A capture that fails skips the weight with
//! [`crate::calibrate::FAILED`] (counted by the report), rather than clustering it unweighted in
//! silence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::calibrate;
use crate::ir::{Graph, Model, NodeId, ValueRef};
use crate::linalg::Gram;
use crate::rewrite::Config;
use crate::rules::lowrank::{parse_layer, weight_hash, Layer, MAX_CALIBRATION_K};
use faer::Mat;

/// The damping added to every feature's mean square, as a fraction of their mean.
pub const DAMPING: f64 = 0.01;

/// How one weight's k-means is weighted.
#[derive(Debug, Clone)]
pub(super) enum Weighting {
    /// No `--calibration`: every value alike.
    Plain,
    /// Per element of the weight, its importance, and what measures the layer's output error.
    Weighted(Weighted),
    /// Calibration was given but this weight cannot be weighted: why (clustered unweighted).
    Unweighted(String),
    /// The capture failed: why (the weight is skipped).
    Failed(String),
}

type Sums = std::result::Result<Gram, String>;

static GRAMS: Mutex<BTreeMap<u64, Arc<Sums>>> = Mutex::new(BTreeMap::new());

/// The layer `weight` feeds, for weighting, or why it cannot be weighted.
fn layer_of(model: &Model, reader: NodeId, weight: ValueRef) -> std::result::Result<Layer, String> {
    let g = &model.graph;
    let readers = g.consumers(weight).len();
    if readers > 1 {
        return Err(format!("read by {readers} nodes"));
    }
    let op = g.node(reader).op_type();
    if !matches!(op, "MatMul" | "Gemm" | "Conv") {
        return Err(format!("a `{op}` weight has no input features to weigh by"));
    }
    let layer = parse_layer(model, reader).map_err(|why| format!("`{op}`: {why}"))?;
    if layer.weight != weight {
        return Err("not the layer's weight operand".into());
    }
    if layer.k > MAX_CALIBRATION_K {
        return Err(format!(
            "K = {} is wider than {MAX_CALIBRATION_K}, too wide for a Gram matrix",
            layer.k
        ));
    }
    Ok(layer)
}

fn key(g: &Graph, layer: &Layer, config: &Config) -> u64 {
    let t = g.const_tensor(layer.weight).expect("a constant weight");
    let paths: Vec<String> = config
        .calibration
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let text = format!(
        "cluster|{}|{}|{}|{:?}|{}",
        paths.join(";"),
        g.node(layer.node).label(),
        g.value_name(layer.act),
        layer.sampling(g),
        layer.k
    );
    crate::rules::lowrank::fx(text.as_bytes(), weight_hash(t))
}

/// The weighting of each `(reader, weight)` pair (same order), capturing in one tract run of
/// `model` what is not cached yet.
pub(super) fn weightings(
    model: &Model,
    pairs: &[(NodeId, ValueRef)],
    config: &Config,
) -> Vec<Weighting> {
    if config.calibration.is_empty() {
        return pairs.iter().map(|_| Weighting::Plain).collect();
    }
    let g = &model.graph;
    let layers: Vec<std::result::Result<(Layer, u64), String>> = pairs
        .iter()
        .map(|&(r, w)| {
            layer_of(model, r, w).map(|l| {
                let k = key(g, &l, config);
                (l, k)
            })
        })
        .collect();
    let missing: Vec<&(Layer, u64)> = {
        let cache = GRAMS.lock().expect("cluster importance cache");
        let mut seen = std::collections::BTreeSet::new();
        layers
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .filter(|(_, k)| !cache.contains_key(k) && seen.insert(*k))
            .collect()
    };
    if !missing.is_empty() {
        let sums = capture(model, &missing, config);
        let mut cache = GRAMS.lock().expect("cluster importance cache");
        for ((_, k), s) in missing.iter().zip(sums) {
            cache.insert(*k, Arc::new(s));
        }
    }
    let cache = GRAMS.lock().expect("cluster importance cache");
    layers
        .into_iter()
        .map(|l| match l {
            Err(why) => Weighting::Unweighted(why),
            Ok((layer, k)) => match cache[&k].as_ref() {
                Err(e) => Weighting::Failed(calibrate::failed(e)),
                Ok(_) => expand(g, &layer, &cache[&k]),
            },
        })
        .collect()
}

/// Captures the square sums of `layers`' activations in one run over the calibration sets.
fn capture(model: &Model, layers: &[&(Layer, u64)], config: &Config) -> Vec<Sums> {
    let g = &model.graph;
    let proto = model.to_proto();
    let mut names: Vec<String> = Vec::new();
    for (l, _) in layers {
        let n = g.value_name(l.act).to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut sums: Vec<Sums> = layers.iter().map(|(l, _)| Ok(Gram::new(l.k))).collect();
    let samplings: Vec<_> = layers.iter().map(|(l, _)| l.sampling(g)).collect();
    // How many sets each layer's activation came from (a segment-wise capture hands a set's
    // values in several calls, each value once).
    let mut seen = vec![0usize; layers.len()];
    let run = calibrate::load_sets(&config.calibration, &proto).and_then(|sets| {
        calibrate::capture_each(
            &proto,
            &names,
            &sets,
            config.memory_limit(),
            |_, captured| {
                for ((((l, _), s), sampling), n) in layers
                    .iter()
                    .zip(sums.iter_mut())
                    .zip(&samplings)
                    .zip(seen.iter_mut())
                {
                    let Ok(acc) = s else { continue };
                    let Some(act) = captured.get(g.value_name(l.act)) else {
                        continue;
                    };
                    *n += 1;
                    if let Err(e) = calibrate::gram(acc, act, sampling) {
                        *s = Err(e.to_string());
                    }
                }
                Ok(())
            },
        )?;
        for (((l, _), s), n) in layers.iter().zip(sums.iter_mut()).zip(&seen) {
            if s.is_ok() && *n != sets.len() {
                *s = Err(format!("`{}` was not captured", g.value_name(l.act)));
            }
        }
        Ok(())
    });
    match run {
        Ok(()) => sums,
        Err(e) => layers.iter().map(|_| Err(e.to_string())).collect(),
    }
}

/// A weight's calibration importance: per element, the damped mean square of the input feature
/// it multiplies; and the layer's Gram `XᵀX` with the weight's geometry, to measure output error.
#[derive(Debug, Clone)]
pub(super) struct Weighted {
    /// Per element of the weight.
    pub(super) weights: Vec<f64>,
    /// Calibration rows (vectors the weight multiplies) seen.
    pub(super) rows: usize,
    gram: Arc<Sums>,
    /// Size of the output-channel axis and the elements after it.
    n: usize,
    inner: usize,
}

impl Weighted {
    /// The layer's relative output error on the calibration rows with `decoded` for `values`:
    /// `sqrt(Σ_o e_oᵀ G e_o / Σ_o w_oᵀ G w_o)`, `o` over output channels, `G = XᵀX`.
    pub(super) fn output_error(&self, values: &[f32], decoded: &[f32]) -> f64 {
        let Ok(gram) = self.gram.as_ref() else {
            return f64::NAN;
        };
        let k = gram.dim();
        let (n, inner) = (self.n, self.inner);
        let mut e = Mat::<f64>::zeros(k, n);
        let mut w = Mat::<f64>::zeros(k, n);
        for (i, (v, d)) in values.iter().zip(decoded).enumerate() {
            let o = (i / inner) % n;
            let j = (i / (inner * n)) * inner + i % inner;
            e[(j, o)] = *v as f64 - *d as f64;
            w[(j, o)] = *v as f64;
        }
        // Σ_o x_oᵀ G x_o = Σ (G·X) ∘ X.
        let form = |x: &Mat<f64>| -> f64 {
            let gx = &gram.g * x;
            let mut t = 0.0;
            for o in 0..n {
                for j in 0..k {
                    t += gx[(j, o)] * x[(j, o)];
                }
            }
            t
        };
        let (num, den) = (form(&e), form(&w));
        if den > 0.0 {
            (num.max(0.0) / den).sqrt()
        } else {
            0.0
        }
    }
}

/// Per element of `layer`'s weight, the damped mean square of the input feature it multiplies.
fn expand(g: &Graph, layer: &Layer, s: &Arc<Sums>) -> Weighting {
    let Ok(gram) = s.as_ref().as_ref() else {
        return Weighting::Plain;
    };
    let rows = gram.rows;
    let means: Vec<f64> = (0..gram.dim())
        .map(|j| gram.g[(j, j)] / rows.max(1) as f64)
        .collect();
    let avg = means.iter().sum::<f64>() / means.len().max(1) as f64;
    if rows == 0 || !(avg > 0.0 && avg.is_finite()) {
        return Weighting::Unweighted(format!(
            "its input `{}` is zero (or not finite) on the calibration data",
            g.value_name(layer.act)
        ));
    }
    let damp = DAMPING * avg;
    let dims: Vec<usize> = layer.dims.iter().map(|d| (*d).max(0) as usize).collect();
    let n = dims[layer.out_axis];
    let inner: usize = dims[layer.out_axis + 1..].iter().product();
    let total: usize = dims.iter().product();
    // Element i's input feature: its index with the output-channel axis dropped.
    let weights = (0..total)
        .map(|i| {
            let m = means[(i / (inner * n)) * inner + i % inner];
            if m.is_finite() {
                m + damp
            } else {
                damp
            }
        })
        .collect();
    Weighting::Weighted(Weighted {
        weights,
        rows,
        gram: s.clone(),
        n,
        inner,
    })
}
