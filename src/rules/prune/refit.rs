//! `--prune-ratio` with `--calibration DIR`: the consumers' weights re-fitted by least squares.
//!
//! For a MatMul (2-D kernel, followed by an `Add` of a constant bias), Gemm (`transA = 0`,
//! `alpha = beta = 1`, a bias of one row or none) or 1×1 Conv (no padding, stride 1, `group` 1)
//! consumer reading the group's channels `X` (`n × C` on the calibration inputs, a Conv's
//! positions as rows, at most 16384 evenly spaced, captured in tract once per layer in the model as `find`
//! first sees it, i.e. the original), the kept channels `K` and a bias are fitted so that the
//! layer's outputs match what it gave with every channel: `min ‖[X_K 1]·[W'; b'] − (X·W + b)‖²
//! + λ‖[W'; b']‖²` (a ridge `λ` of 1e-6 of the mean diagonal of the Gram matrix keeps it
//! well-posed when the calibration has fewer rows than channels), solved by a QR least squares
//! (faer) of the stacked system. This replaces the constant fold for that consumer.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use faer::linalg::solvers::SolveLstsq;
use faer::Mat;
use ndarray::{Array2, ArrayD, Axis};

use super::group::{layer, Group, Role};
use super::value::{matmul_bias, pads_input};
use super::{const_f32, rule_err};
use crate::calibrate;
use crate::error::Result;
use crate::ir::{Graph, Model, NodeId};
use crate::rewrite::Config;

/// Captured inputs `X` (`n × C`) of consumers, by [`key`].
static CAPTURED: Mutex<BTreeMap<u64, Arc<std::result::Result<Array2<f32>, String>>>> =
    Mutex::new(BTreeMap::new());

/// What a captured input depends on: the calibration paths, the consumer, the value it reads
/// and its channel count (a value already cut is captured anew).
fn key(g: &Graph, id: NodeId, channels: usize, config: &Config) -> Option<u64> {
    let l = layer(g, id)?;
    let x = g.input(id, l.act)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.calibration.hash(&mut h);
    g.node(id).label().hash(&mut h);
    g.value_name(x).hash(&mut h);
    channels.hash(&mut h);
    Some(h.finish())
}

/// Whether consumer `id` is one the re-fit handles (see the module docs).
pub(super) fn refittable(g: &Graph, id: NodeId) -> bool {
    let Some(l) = layer(g, id) else { return false };
    let n = g.node(id);
    let rank2 = g
        .input(id, l.kernel)
        .and_then(|v| g.const_tensor(v))
        .is_some_and(|t| t.dims.len() == 2);
    let f = |a: &str| n.attr(a).and_then(|a| a.f).unwrap_or(1.0);
    match n.op_type() {
        "MatMul" => l.act == 0 && rank2 && matmul_bias(g, id).is_some(),
        "Gemm" => {
            let bias_rows = g
                .input(id, 2)
                .and_then(|v| g.const_tensor(v))
                .map(|t| t.dims.iter().rev().skip(1).product::<i64>())
                .unwrap_or(1);
            rank2 && f("alpha") == 1.0 && f("beta") == 1.0 && bias_rows == 1
        }
        "Conv" => {
            let one_by_one = g
                .input(id, l.kernel)
                .and_then(|v| g.const_tensor(v))
                .is_some_and(|t| t.dims.len() >= 3 && t.dims[2..].iter().all(|d| *d == 1));
            let strided = n
                .attr("strides")
                .is_some_and(|a| a.ints.iter().any(|s| *s != 1));
            l.groups == 1 && one_by_one && !strided && !pads_input(g, id)
        }
        _ => false,
    }
}

/// The channel axis of consumer `id`'s input: 1 for Conv, the last for MatMul and Gemm.
fn channel_axis(g: &Graph, id: NodeId) -> Option<usize> {
    (g.node(id).op_type() == "Conv").then_some(1)
}

/// Captures, in one tract run of `model` as it is, the inputs of the re-fittable consumers of
/// `groups` not captured yet (nothing without `--calibration`).
pub(super) fn capture(model: &Model, groups: &[&Group], config: &Config) {
    if config.calibration.is_empty() {
        return;
    }
    let g = &model.graph;
    let mut wanted: Vec<(u64, String, Option<usize>)> = Vec::new();
    {
        let Ok(cache) = CAPTURED.lock() else { return };
        for group in groups {
            for &(id, role) in &group.members {
                if role != Role::Consumer || !refittable(g, id) {
                    continue;
                }
                let Some(x) = layer(g, id).and_then(|l| g.input(id, l.act)) else {
                    continue;
                };
                let Some(k) = group.map_of(x).and_then(|m| key(g, id, m.dim, config)) else {
                    continue;
                };
                if !cache.contains_key(&k) && !wanted.iter().any(|(w, _, _)| *w == k) {
                    wanted.push((k, g.value_name(x).to_string(), channel_axis(g, id)));
                }
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let proto = model.to_proto();
    let names: Vec<String> = wanted.iter().map(|(_, n, _)| n.clone()).collect();
    let captured = calibrate::load_sets(&config.calibration, &proto)
        .and_then(|sets| calibrate::capture(&proto, &names, &sets, config.memory_limit()));
    let Ok(mut cache) = CAPTURED.lock() else {
        return;
    };
    for (k, name, axis) in wanted {
        let x = match &captured {
            Ok(sets) => rows(sets.iter().filter_map(|s| s.get(&name)), axis),
            Err(e) => Err(e.to_string()),
        };
        cache.insert(k, Arc::new(x));
    }
}

/// Most rows a re-fit uses: more (a convolution's positions) are subsampled evenly.
const MAX_ROWS: usize = 16384;

/// The captured arrays stacked as rows `n × C`, the channel on `axis` (`None`: the last), at
/// most [`MAX_ROWS`] of them, evenly spaced.
fn rows<'a>(
    arrays: impl Iterator<Item = &'a ArrayD<f32>>,
    axis: Option<usize>,
) -> std::result::Result<Array2<f32>, String> {
    let mut parts: Vec<Array2<f32>> = Vec::new();
    for a in arrays {
        let mut a = a.view();
        if let Some(ax) = axis.filter(|ax| *ax + 1 < a.ndim()) {
            let mut order: Vec<usize> = (0..a.ndim()).filter(|i| *i != ax).collect();
            order.push(ax);
            a = a.permuted_axes(order);
        }
        let c = *a.shape().last().ok_or("a captured value is a scalar")?;
        let n = a.len() / c.max(1);
        let m = a
            .as_standard_layout()
            .to_shape((n, c))
            .map_err(|e| e.to_string())?
            .to_owned();
        parts.push(m);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    if views.is_empty() {
        return Err("nothing was captured".into());
    }
    let all = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
    if all.nrows() <= MAX_ROWS {
        return Ok(all);
    }
    let step = all.nrows().div_ceil(MAX_ROWS);
    let picked: Vec<usize> = (0..all.nrows()).step_by(step).collect();
    Ok(all.select(Axis(0), &picked))
}

/// A re-fitted consumer: its kernel over the kept channels (in the kernel's own layout) and its
/// bias (`[N]`).
pub(super) struct Refit {
    pub(super) kernel: ArrayD<f32>,
    pub(super) bias: ArrayD<f32>,
}

/// The re-fit of consumer `id` of `group` when the group's channels `remove` go, when its
/// input was captured.
pub(super) fn refit(
    g: &Graph,
    group: &Group,
    id: NodeId,
    remove: &[usize],
    config: &Config,
) -> Result<Option<Refit>> {
    if config.calibration.is_empty() || !refittable(g, id) {
        return Ok(None);
    }
    let Some(map) = layer(g, id)
        .and_then(|l| g.input(id, l.act))
        .and_then(|x| group.map_of(x))
    else {
        return Ok(None);
    };
    // The positions of the consumer's input that stay.
    let keep = &map.kept(remove)[..];
    let Some(k) = key(g, id, map.dim, config) else {
        return Ok(None);
    };
    let x = match CAPTURED.lock().ok().and_then(|c| c.get(&k).cloned()) {
        Some(x) => x,
        None => return Ok(None),
    };
    let x = match x.as_ref() {
        Ok(x) => x,
        Err(why) => return Err(rule_err(calibrate::failed(why))),
    };
    let l = layer(g, id).ok_or_else(|| rule_err("a consumer is no longer a layer"))?;
    let w_full = const_f32(g, id, l.kernel)?;
    let dims = w_full.shape().to_vec();
    // A 1×1 Conv's `[M, C, 1, 1]` as `[M, C]`.
    let w = w_full
        .to_shape((dims[0], dims[1..].iter().product::<usize>()))
        .map_err(|e| rule_err(e.to_string()))?
        .to_owned();
    // `W` as `C × N`.
    let w = if l.in_axis == 0 { w } else { w.reversed_axes() };
    let (c, n_out) = w.dim();
    if x.ncols() != c {
        return Ok(None);
    }
    let Ok(b) = current_bias(g, id, n_out) else {
        return Ok(None);
    };
    let rows = x.nrows();
    let p = keep.len() + 1;
    // Target: the layer's outputs with every channel.
    let xf = Mat::<f64>::from_fn(rows, c, |i, j| f64::from(x[[i, j]]));
    let wf = Mat::<f64>::from_fn(c, n_out, |i, j| f64::from(w[[i, j]]));
    let y = &xf * &wf;
    // [X_K 1] over a ridge block √λ·I.
    let mut diag = 0.0;
    for &ch in keep {
        for i in 0..rows {
            diag += xf[(i, ch)] * xf[(i, ch)];
        }
    }
    diag = (diag + rows as f64) / p as f64;
    let ridge = (1e-6 * diag).sqrt();
    let a = Mat::<f64>::from_fn(rows + p, p, |i, j| {
        if i < rows {
            if j < keep.len() {
                xf[(i, keep[j])]
            } else {
                1.0
            }
        } else if i - rows == j {
            ridge
        } else {
            0.0
        }
    });
    let rhs = Mat::<f64>::from_fn(rows + p, n_out, |i, j| {
        if i < rows {
            y[(i, j)] + b[j]
        } else {
            0.0
        }
    });
    let beta = a.qr().solve_lstsq(&rhs);
    if (0..p).any(|i| (0..n_out).any(|j| !beta[(i, j)].is_finite())) {
        return Err(rule_err("the re-fit is not finite"));
    }
    let kernel = Array2::from_shape_fn((keep.len(), n_out), |(i, j)| beta[(i, j)] as f32);
    let kernel = if l.in_axis == 0 {
        kernel
    } else {
        kernel.reversed_axes()
    };
    let bias = ndarray::Array1::from_shape_fn(n_out, |j| beta[(keep.len(), j)] as f32);
    let mut new_dims = dims;
    new_dims[l.in_axis] = keep.len();
    let kernel = kernel
        .as_standard_layout()
        .to_shape(new_dims)
        .map_err(|e| rule_err(e.to_string()))?
        .to_owned();
    Ok(Some(Refit {
        kernel,
        bias: bias.into_dyn(),
    }))
}

/// Consumer `id`'s bias as `n_out` values (0 when it has none); `Err` when it is not one row.
pub(super) fn current_bias(g: &Graph, id: NodeId, n_out: usize) -> Result<Vec<f64>> {
    let (node, slot) = match g.node(id).op_type() {
        "MatMul" => matmul_bias(g, id).ok_or_else(|| rule_err("a MatMul lost its bias"))?,
        _ => (id, 2),
    };
    let Some(v) = g.input(node, slot) else {
        return Ok(vec![0.0; n_out]);
    };
    let t = g
        .const_tensor(v)
        .ok_or_else(|| rule_err("the bias is not constant"))?;
    let vals: Vec<f64> = crate::ir::tensor::to_f32(t)?
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    match vals.len() {
        1 => Ok(vec![vals[0]; n_out]),
        n if n == n_out => Ok(vals),
        n => Err(rule_err(format!("the bias has {n} values, not {n_out}"))),
    }
}

/// The re-fits of `group`'s consumers when its channels `remove` go, by consumer.
pub(super) fn refits(
    g: &Graph,
    group: &Group,
    remove: &[usize],
    config: &Config,
) -> Result<HashMap<NodeId, Refit>> {
    let mut out = HashMap::new();
    for &(id, role) in &group.members {
        if role == Role::Consumer {
            if let Some(r) = refit(g, group, id, remove, config)? {
                out.insert(id, r);
            }
        }
    }
    Ok(out)
}
