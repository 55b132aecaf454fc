//! The patch of `lowrank`: the factor pair that replaces a weight, and its report line.

use super::layer::*;
use super::plan::*;
use super::*;

// Patch

pub(super) fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// Adds a weight like the original: an initializer, or a `Constant` node if it was one.
pub(super) fn add_weight(p: &mut Patch, as_constant: bool, name: &str, a: ArrayD<f32>) -> Wire {
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

pub(super) fn op_node(
    op: &str,
    name: &str,
    out: &str,
    n_in: usize,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: vec![String::new(); n_in],
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

pub(super) fn reshaped(a: Array2<f32>, shape: &[usize]) -> ArrayD<f32> {
    a.as_standard_layout()
        .to_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("same number of elements")
}

pub(super) fn describe(
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

pub(super) fn build_patch(
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
    let (n1, n2) = factor_labels(&label);
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
