//! `C009 fuse-batchnorm`: folds an inference-mode `BatchNormalization` into the `Conv`,
//! `ConvTranspose`, `Gemm` or `MatMul` that feeds it.
//!
//! **What:** with `s = scale / sqrt(var + eps)` per output channel, the producer's weight becomes
//! `W' = W · s` (scaled along the output-channel axis) and its bias `b' = (b - mean) · s + beta`.
//! `Conv`/`ConvTranspose` keep their attributes and get the new bias; `Gemm` gets the new `C`
//! (with `beta = 1`); a `MatMul` of a rank-2 activation by a constant `[K, N]` weight becomes
//! `Gemm(A, W', b')`.
//! **Why:** exported CNNs (paddle2onnx, Keras) keep BN as a separate op: one extra pass over every
//! activation, and a node per layer.
//! **Example:** `y = BatchNormalization(Conv(x, W), scale, B, mean, var)` → `y = Conv(x, W', b')`.
//! **Exact:** to float reordering (tolerance 1e-5); the arithmetic is done in f64 and rounded once.
//! Only when the producer's output is read by the BN alone, the BN has one output (inference mode),
//! every tensor involved is a constant float32, and the producer's weight (and bias) are read by
//! nothing else — so the model never grows.

use crate::error::{Error, Result};
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::{attr_f, attr_i, is_op, make_node, single_use};
use crate::ir::facts::Facts;
use ndarray::ArrayD;

/// See the module docs.
pub struct FuseBatchnorm;

struct Plan {
    producer: NodeId,
    /// New weight and bias.
    w: ArrayD<f32>,
    b: ArrayD<f32>,
}

fn f32_const(
    model: &Model,
    v: Option<ValueRef>,
    what: &str,
) -> std::result::Result<ArrayD<f32>, String> {
    let v = v.ok_or(format!("no {what}"))?;
    let t = model
        .graph
        .const_tensor(v)
        .ok_or(format!("the {what} is not constant"))?;
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!("the {what} is not float32"));
    }
    tensor::to_f32(t).map_err(|e| e.to_string())
}

fn plan(model: &Model, facts: &Facts, bn: NodeId) -> std::result::Result<Plan, String> {
    let g = &model.graph;
    if (1..g.node(bn).num_outputs()).any(|s| g.node(bn).output_name(s).is_some()) {
        return Err("BN has more than one output (training mode)".into());
    }
    if attr_i(g, bn, "spatial", 1) == 0 {
        return Err("BN with spatial=0 (per-activation statistics)".into());
    }
    if attr_i(g, bn, "training_mode", 0) != 0 {
        return Err("BN is in training mode".into());
    }
    let x = g.input(bn, 0).ok_or("BN without input")?;
    let producer = x.node;
    let op = g.node(producer).op_type().to_string();
    if !["Conv", "ConvTranspose", "Gemm", "MatMul"]
        .iter()
        .any(|o| is_op(g, producer, o))
    {
        return Err(String::new());
    }
    if !single_use(g, x) {
        return Err("BN input has other consumers".into());
    }
    let eps = attr_f(g, bn, "epsilon", 1e-5) as f64;
    let scale = f32_const(model, g.input(bn, 1), "BN scale")?;
    let beta = f32_const(model, g.input(bn, 2), "BN bias")?;
    let mean = f32_const(model, g.input(bn, 3), "BN mean")?;
    let var = f32_const(model, g.input(bn, 4), "BN variance")?;
    let c = scale.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|n| *n != c) {
        return Err("BN parameters of different lengths".into());
    }
    let s: Vec<f64> = (0..c)
        .map(|i| {
            scale.as_slice().unwrap()[i] as f64 / (var.as_slice().unwrap()[i] as f64 + eps).sqrt()
        })
        .collect();
    let sh = |i: usize| s[i];
    let mean_ = mean.as_slice().unwrap().to_vec();
    let beta_ = beta.as_slice().unwrap().to_vec();
    let wv = g.input(producer, 1).ok_or("no weight")?;
    if !single_use(g, wv) {
        return Err("the weight is shared with other nodes".into());
    }
    let mut w = f32_const(model, Some(wv), "weight")?;
    let bias_in = g.input(producer, 2);
    if let Some(bv) = bias_in {
        if !single_use(g, bv) {
            return Err("the bias is shared with other nodes".into());
        }
    }
    let new_bias = |b: Vec<f64>| -> ArrayD<f32> {
        let v: Vec<f32> = (0..c)
            .map(|i| ((b[i] - mean_[i] as f64) * sh(i) + beta_[i] as f64) as f32)
            .collect();
        ArrayD::from_shape_vec(ndarray::IxDyn(&[c]), v).unwrap()
    };
    match op.as_str() {
        "Conv" | "ConvTranspose" => {
            if w.ndim() < 3 {
                return Err("the weight has rank < 3".into());
            }
            let group = attr_i(g, producer, "group", 1).max(1) as usize;
            let dims = w.shape().to_vec();
            let inner: usize = dims[2..].iter().product();
            let ws = w.as_slice_mut().ok_or("weight layout")?;
            if op == "Conv" {
                if dims[0] != c {
                    return Err(format!("Conv has {} output channels, BN {c}", dims[0]));
                }
                let per = dims[1] * inner;
                for m in 0..c {
                    for v in &mut ws[m * per..(m + 1) * per] {
                        *v = (*v as f64 * s[m]) as f32;
                    }
                }
            } else {
                // W: [C_in, M/group, k...]; output channel = group_index * (M/group) + j.
                let cin = dims[0];
                let mg = dims[1];
                if mg * group != c || cin % group != 0 {
                    return Err("ConvTranspose channels do not match BN".into());
                }
                let cin_g = cin / group;
                for ic in 0..cin {
                    let gi = ic / cin_g;
                    for j in 0..mg {
                        let oc = gi * mg + j;
                        let start = (ic * mg + j) * inner;
                        for v in &mut ws[start..start + inner] {
                            *v = (*v as f64 * s[oc]) as f32;
                        }
                    }
                }
            }
            let b: Vec<f64> = match bias_in {
                Some(_) => {
                    let b = f32_const(model, bias_in, "bias")?;
                    if b.len() != c {
                        return Err("bias length differs from the channels".into());
                    }
                    b.iter().map(|v| *v as f64).collect()
                }
                None => vec![0.0; c],
            };
            Ok(Plan {
                producer,
                w,
                b: new_bias(b),
            })
        }
        "Gemm" | "MatMul" => {
            let a = g.input(producer, 0).ok_or("no A")?;
            if facts.get(a).rank() != Some(2) {
                return Err("the activation is not known to be rank 2".into());
            }
            if w.ndim() != 2 {
                return Err("the weight is not 2-D".into());
            }
            let (trans_b, alpha, beta_g) = if op == "Gemm" {
                if attr_i(g, producer, "transA", 0) != 0 && facts.get(a).rank() != Some(2) {
                    return Err("transA".into());
                }
                (
                    attr_i(g, producer, "transB", 0) != 0,
                    attr_f(g, producer, "alpha", 1.0) as f64,
                    attr_f(g, producer, "beta", 1.0) as f64,
                )
            } else {
                (false, 1.0, 1.0)
            };
            let n = if trans_b { w.shape()[0] } else { w.shape()[1] };
            if n != c {
                return Err(format!("the weight has {n} output columns, BN {c}"));
            }
            for ((r, col), v) in w.indexed_iter_mut().map(|(i, v)| ((i[0], i[1]), v)) {
                let ch = if trans_b { r } else { col };
                *v = (*v as f64 * s[ch] * alpha) as f32;
            }
            let b: Vec<f64> = match bias_in {
                Some(_) if op == "Gemm" => {
                    let b = f32_const(model, bias_in, "bias")?;
                    let ok = b.len() == c && b.shape().iter().rev().skip(1).all(|d| *d == 1)
                        || b.len() == 1;
                    if !ok {
                        return Err("the Gemm bias is not a per-column vector".into());
                    }
                    (0..c)
                        .map(|i| {
                            beta_g * b.as_slice().unwrap()[if b.len() == 1 { 0 } else { i }] as f64
                        })
                        .collect()
                }
                _ => vec![0.0; c],
            };
            Ok(Plan {
                producer,
                w,
                b: new_bias(b),
            })
        }
        _ => Err(String::new()),
    }
}

impl Rule for FuseBatchnorm {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C009",
            name: "fuse-batchnorm",
            group: "clean",
            summary: "fold inference BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it",
            exactness: Exactness::Exact { tolerance: 1e-5 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let bns: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| is_op(g, *id, "BatchNormalization"))
            .collect();
        if bns.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in bns {
            match plan(model, &facts, id) {
                Ok(p) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![p.producer],
                    what: format!(
                        "fuse BN `{}` into {} `{}`",
                        g.node(id).label(),
                        g.node(p.producer).op_type(),
                        g.node(p.producer).label()
                    ),
                }),
                Err(reason) if !reason.is_empty() => f.skip(model, id, reason),
                Err(_) => {}
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let pl = plan(model, &facts, m.anchor).map_err(|reason| Error::Rule {
            rule: "fuse-batchnorm".into(),
            reason,
        })?;
        let prod = g.node(pl.producer).op().expect("an op").clone();
        let op = prod.op_type.clone().unwrap_or_default();
        let wv = g.input(pl.producer, 1).expect("checked");
        let base = g.value_name(wv).to_string();
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let mut kernel = tensor::from_f32(&format!("{base}_bn"), &pl.w);
        // The folded kernel is the same weight rescaled: it keeps the original's `doc_string`
        // (prune's mark that its channels were already cut by ratio).
        kernel.doc_string = g.const_tensor(wv).and_then(|t| t.doc_string.clone());
        let w = p.add_initializer(kernel);
        let b = p.add_initializer(tensor::from_f32(&format!("{base}_bn_bias"), &pl.b));
        let out = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        let out_name = g.value_name(out).to_string();
        let a = g.input(pl.producer, 0).map(Wire::Value);
        let mut node = match op.as_str() {
            "MatMul" => make_node(
                "Gemm",
                &prod.name.clone().unwrap_or_default(),
                3,
                &[&out_name],
            ),
            _ => {
                let mut n = prod.clone();
                n.output = vec![out_name.clone()];
                n.input = vec![String::new(); 3];
                n
            }
        };
        if op == "Gemm" {
            for at in node.attribute.iter_mut() {
                match at.name.as_deref() {
                    Some("alpha") | Some("beta") => at.f = Some(1.0),
                    _ => {}
                }
            }
        }
        node.input.truncate(3);
        let new = p.add_op(node, &[a, Some(w), Some(b)]);
        p.shunt(out, new[0]);
        p.keep_name(out, new[0]);
        p.remove(m.anchor);
        p.remove(pl.producer);
        Ok(p)
    }
}
