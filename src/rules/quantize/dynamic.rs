//! `--quantize-mode dynamic`: MatMul and Gemm as `DynamicQuantizeLinear` + `MatMulInteger`.
//!
//! As onnxruntime's dynamic quantizer writes them: the activation `A` is quantized at run time to
//! uint8 (`DynamicQuantizeLinear`: scale and zero point from its own min and max), the weight is
//! stored as int8 (symmetric, no zero point) or uint8 (with its zero points) laid out `[K, N]`,
//! `MatMulInteger` multiplies in int32, and the result is rescaled in float:
//!
//! ```text
//! a_q, a_s, a_z = DynamicQuantizeLinear(A)
//! y = Mul(Cast<float>(MatMulInteger(a_q, W_q, a_z[, W_z])), Mul(a_s, W_s))   (+ C for Gemm)
//! ```
//!
//! with `W_s` per output column `[N]` (per channel) or one scale (per tensor); Gemm's `alpha` is
//! folded into `W_s`, `transB = 1` stores the codes transposed. A weight takes this form when it
//! is 2-D, its only reader is a MatMul (as `B`) or a Gemm with `transA = 0` and `beta = 1`, and
//! the opset is 11 or more; every other weight (Conv, LSTM, Gather, shared weights, ...) is
//! quantized weight-only as in `qdq` mode, and its report line says why.
//!
//! tract 0.23 runs `DynamicQuantizeLinear` and `MatMulInteger` itself, so verification runs the
//! file as written.

use super::find::{weight_name, Candidate};
use super::grid::Quantized;
use super::{QuantizeConfig, WeightType};
use crate::error::Result;
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::rewrite::{Patch, Wire};
use crate::rules::util::{make_attr_i, make_node};

/// How a weight's reader becomes `MatMulInteger`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DynamicPlan {
    /// The MatMul or Gemm replaced.
    pub(super) reader: NodeId,
    /// Whether the weight is `[N, K]` (Gemm `transB = 1`) and its codes are stored transposed.
    pub(super) transpose: bool,
    /// Gemm's `alpha` (1 for MatMul), folded into the weight scales.
    pub(super) alpha: f32,
    /// Gemm's `C`, added after the rescale.
    pub(super) bias: Option<ValueRef>,
}

fn attr_f(model: &Model, id: NodeId, name: &str, default: f32) -> f32 {
    model
        .graph
        .node(id)
        .attr(name)
        .and_then(|a| a.f)
        .unwrap_or(default)
}

fn attr_i(model: &Model, id: NodeId, name: &str, default: i64) -> i64 {
    model
        .graph
        .node(id)
        .attr(name)
        .and_then(|a| a.i)
        .unwrap_or(default)
}

/// Whether `weight` can be read through `MatMulInteger`, and how; else why it is quantized
/// weight-only instead. Work proportional to the weight's readers.
pub(super) fn plan_dynamic(
    model: &Model,
    weight: ValueRef,
    dims: &[i64],
) -> std::result::Result<DynamicPlan, String> {
    let g = &model.graph;
    let opset = model.opset("").unwrap_or(1);
    if opset < 11 {
        return Err(format!(
            "DynamicQuantizeLinear needs opset 11, the model has {opset}"
        ));
    }
    if g.is_captured(weight) {
        return Err("dynamic mode rewrites top-level readers, it is read inside a subgraph".into());
    }
    let readers = g.consumers(weight);
    let [(reader, slot)] = readers[..] else {
        return Err("dynamic mode needs one reader, it has several".into());
    };
    if dims.len() != 2 {
        return Err(format!(
            "dynamic mode takes 2-D weights, it is {}-D",
            dims.len()
        ));
    }
    let op = g.node(reader).op_type();
    if !g.node(reader).domain().is_empty() {
        return Err(format!("its reader `{op}` is not a default-domain op"));
    }
    match (op, slot) {
        ("MatMul", 1) => Ok(DynamicPlan {
            reader,
            transpose: false,
            alpha: 1.0,
            bias: None,
        }),
        ("Gemm", 1) => {
            if attr_i(model, reader, "transA", 0) != 0 {
                return Err("dynamic mode takes Gemm with `transA` 0".into());
            }
            let bias = g.input(reader, 2);
            if bias.is_some() && attr_f(model, reader, "beta", 1.0) != 1.0 {
                return Err("dynamic mode takes Gemm with `beta` 1".into());
            }
            Ok(DynamicPlan {
                reader,
                transpose: attr_i(model, reader, "transB", 0) != 0,
                alpha: attr_f(model, reader, "alpha", 1.0),
                bias,
            })
        }
        _ => Err(format!(
            "dynamic mode rewrites MatMul and Gemm weights `B`, it is input {slot} of `{op}`"
        )),
    }
}

/// The patch for a weight with a [`DynamicPlan`]: see the module docs. `q` holds the codes in
/// the weight's own layout.
pub(super) fn rewrite_dynamic(
    model: &Model,
    cfg: &QuantizeConfig,
    c: &Candidate,
    d: &DynamicPlan,
    q: Quantized,
    anchor: NodeId,
) -> Result<Patch> {
    let g = &model.graph;
    let name = weight_name(g, c.weight).to_string();
    let t = g
        .const_tensor(c.weight)
        .ok_or_else(|| crate::error::Error::Rule {
            rule: "quantize".into(),
            reason: format!("weight `{name}` is not constant"),
        })?;
    let (r, k) = (t.dims[0] as usize, t.dims[1] as usize);
    let (codes, dims) = if d.transpose {
        // [N, K] → [K, N]
        let mut out = vec![0u8; q.codes.len()];
        for i in 0..r {
            for j in 0..k {
                out[j * r + i] = q.codes[i * k + j];
            }
        }
        (out, vec![k as i64, r as i64])
    } else {
        (q.codes, t.dims.clone())
    };
    let n = dims[1];
    let a = g
        .input(d.reader, 0)
        .ok_or_else(|| crate::error::Error::Rule {
            rule: "quantize".into(),
            reason: format!("`{}` has no input 0", g.node(d.reader).label()),
        })?;
    let mut p = Patch::new(String::new(), Some(anchor));
    let prefix = g.node(d.reader).label();
    let dql = make_node(
        "DynamicQuantizeLinear",
        &format!("{prefix}_quantize_input"),
        1,
        &[
            &format!("{prefix}_input_quantized"),
            &format!("{prefix}_input_scale"),
            &format!("{prefix}_input_zero_point"),
        ],
    );
    let aq = p.add_op(dql, &[Some(Wire::Value(a))]);
    let codes = p.add_initializer(super::grid::int_tensor(
        format!("{name}_quantized"),
        dims,
        codes,
        cfg.weights,
    ));
    let per_channel = c.axis.is_some();
    let param_dims = if per_channel { vec![n] } else { vec![] };
    let mut inputs = vec![Some(aq[0]), Some(codes), Some(aq[2])];
    if cfg.weights == WeightType::Uint8 {
        inputs.push(Some(p.add_initializer(super::grid::int_tensor(
            format!("{name}_zero_point"),
            param_dims.clone(),
            q.zero_points,
            cfg.weights,
        ))));
    }
    let mmi = make_node(
        "MatMulInteger",
        &format!("{prefix}_integer"),
        inputs.len(),
        &[&format!("{prefix}_int32")],
    );
    let y = p.add_op(mmi, &inputs)[0];
    let mut cast = make_node(
        "Cast",
        &format!("{prefix}_to_float"),
        1,
        &[&format!("{prefix}_float")],
    );
    cast.attribute
        .push(make_attr_i("to", DataType::Float as i32 as i64));
    let y = p.add_op(cast, &[Some(y)])[0];
    let scales: Vec<f32> = q.scales.iter().map(|s| s * d.alpha).collect();
    let mut st = tensor::from_f32(
        &format!("{name}_scale"),
        &ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[scales.len()]), scales).map_err(|e| {
            crate::error::Error::Rule {
                rule: "quantize".into(),
                reason: e.to_string(),
            }
        })?,
    );
    st.dims = param_dims;
    let ws = p.add_initializer(st);
    let s = p.add_op(
        make_node(
            "Mul",
            &format!("{prefix}_scales"),
            2,
            &[&format!("{prefix}_scale")],
        ),
        &[Some(aq[1]), Some(ws)],
    )[0];
    let mut y = p.add_op(
        make_node(
            "Mul",
            &format!("{prefix}_rescale"),
            2,
            &[&format!("{prefix}_rescaled")],
        ),
        &[Some(y), Some(s)],
    )[0];
    if let Some(b) = d.bias {
        y = p.add_op(
            make_node(
                "Add",
                &format!("{prefix}_bias"),
                2,
                &[&format!("{prefix}_biased")],
            ),
            &[Some(y), Some(Wire::Value(b))],
        )[0];
    }
    let out = ValueRef {
        node: d.reader,
        slot: 0,
    };
    p.shunt(out, y);
    p.keep_name(out, y);
    p.remove(d.reader);
    p.remove(c.weight.node);
    Ok(p)
}
