//! `D001 to-fp16`: float16 conversion (`--dtype fp16`).
//!
//! **What:** float32 weights (initializers and `Constant` nodes) become float16, and so does
//! every float tensor computed by an op that runs in float16; ops that do not
//! ([`crate::ops::Half::Float32`] in the op table: not known to run in float16 in tract 0.23
//! or onnxruntime, or accumulating beyond float16's range) keep float32, with a `Cast` on each
//! float16 value they read, as do the inputs an op takes in float32 only (`Half::Compute`'s
//! `keep`). Graph inputs and outputs keep their type: a `Cast` to float16 after each float32
//! input an op reads, a `Cast` back to float32 before each output (its producer is re-added
//! under a new output name, the `Cast` takes the output's name). `value_info` entries follow.
//! Data-moving ops (`Half::Move`: Reshape, Concat, Gather, ...) follow their float input, so
//! that they never need a `Cast` of their own; `Shape`, `Size` and `Cast` read float16 as it is.
//! Values read by a subgraph (`If`/`Loop`/`Scan` capture them by name) keep float32, and so do
//! their producers; nodes with subgraphs keep float32 (their bodies are not converted).
//! **Why:** half the bytes for every weight, and float16 arithmetic where the runtime has it.
//! **Example:** `MatMul(x, W)` with `W` float32 [512, 512] becomes
//! `Cast(x → float16)`, `MatMul(·, W16)` and `Cast(· → float32)` with `W16` float16: 1 MB → 0.5 MB.
//! **Lossy:** float16 keeps 11 significant bits (relative error ≤ 2⁻¹¹ per value); weights
//! beyond ±65504 are clamped there (counted in the report). Judged by the model-level budget
//! like every lossy rule (default cosine ≥ 0.99 per output).
//!
//! The rule acts only under `--dtype fp16` ([`Config::fp16`]): `--rules all` keeps float32.
//! It finds one match for the whole graph; the conversion is planned in one pass over the nodes
//! in topological order.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::Result;
use crate::ir::{Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{attribute_proto, AttributeProto, NodeProto, TensorProto};
use crate::ops::{self, Half};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
/// The fewest elements of a float32 weight of a float32 op that is stored in float16.
const MIN_STORED: u64 = 64;
/// The largest finite float16.
const HALF_MAX: f32 = 65504.0;

/// See the module docs.
pub struct ToFp16;

/// What the one pass decided.
#[derive(Default)]
struct Plan {
    /// Ops that compute or move float16, in topological order.
    converted: Vec<NodeId>,
    converted_set: FxHashSet<NodeId>,
    /// Values that are float16 once converted (outputs of converted ops, and float16 values
    /// already in the model).
    half: FxHashSet<ValueRef>,
    /// Input slots of converted ops that read float16 (all float inputs but the kept ones).
    half_slots: FxHashSet<(NodeId, usize)>,
    /// Float32 constants some converted op reads in float16.
    constants: Vec<ValueRef>,
    /// Input slots of float32 ops (and kept inputs of float16 ops) that read a large float32
    /// weight: stored in float16, read through a Cast back to float32.
    stored_slots: FxHashSet<(NodeId, usize)>,
    /// Those weights.
    stored: Vec<ValueRef>,
    /// Float32 values computed at run time (or graph inputs) that converted ops read.
    to_half: Vec<ValueRef>,
    /// Float16 values that float32 ops, kept inputs or graph outputs read.
    to_float: Vec<ValueRef>,
    /// Ops with float inputs that keep float32, with why.
    kept: Vec<(NodeId, String)>,
}

fn is_float(dt: Option<i32>) -> bool {
    matches!(dt, Some(FLOAT) | Some(FLOAT16))
}

fn plan(model: &Model) -> Plan {
    let g = &model.graph;
    let facts = g.facts();
    let mut p = Plan::default();
    let mut constants: FxHashSet<ValueRef> = FxHashSet::default();
    let mut to_half: FxHashSet<ValueRef> = FxHashSet::default();
    let mut to_float: FxHashSet<ValueRef> = FxHashSet::default();
    let dtype = |v: ValueRef| facts.get(v).dtype;
    let is_const = |v: ValueRef| g.const_tensor(v).is_some();
    let mut stored: FxHashSet<ValueRef> = FxHashSet::default();
    // A float32 weight large enough that storing it in float16 saves more than its Cast costs.
    let stores_half = |v: ValueRef| {
        g.const_tensor(v).is_some_and(|t| {
            t.data_type == Some(FLOAT)
                && crate::ir::tensor::numel(t).is_some_and(|n| n >= MIN_STORED)
        })
    };
    for id in g.topo_order() {
        let node = g.node(id);
        let NodeKind::Op(proto) = &node.kind else {
            continue;
        };
        let inputs = g.node_inputs(id);
        let outputs: Vec<ValueRef> = (0..node.num_outputs())
            .map(|slot| ValueRef { node: id, slot })
            .collect();
        if g.const_tensor(ValueRef { node: id, slot: 0 }).is_some() {
            // A `Constant`: converted by its readers.
            continue;
        }
        let float_in: Vec<(usize, ValueRef)> = inputs
            .iter()
            .enumerate()
            .filter_map(|(s, v)| v.map(|v| (s, v)))
            .filter(|(_, v)| is_float(dtype(*v)))
            .collect();
        let float_out = outputs.iter().any(|v| is_float(dtype(*v)));
        if float_in.is_empty() && !float_out {
            continue;
        }
        let half = if !node.domain().is_empty() && !ops::is_default_domain(node.domain()) {
            Half::Float32("an op of another domain")
        } else if crate::ir::graph::has_subgraphs(proto) {
            Half::Float32("has subgraphs, which stay float32")
        } else if outputs.iter().any(|v| g.is_captured(*v)) {
            Half::Float32("a subgraph reads its output by name")
        } else if inputs
            .iter()
            .flatten()
            .chain(&outputs)
            .any(|v| dtype(*v).is_none() && g.is_used(*v))
        {
            Half::Float32("the type of an input or output is not known")
        } else {
            // Patches leave operand names empty until encoding: the table sees them from the
            // edges.
            let mut named = proto.clone();
            named.input = inputs
                .iter()
                .map(|v| v.map_or(String::new(), |v| g.value_name(v).to_string()))
                .collect();
            ops::half(&named)
        };
        let already_half = |v: &ValueRef| p.half.contains(v) || dtype(*v) == Some(FLOAT16);
        let keep: &[usize] = match half {
            Half::Compute { keep } => keep,
            _ => &[],
        };
        // Something is still float32: a converted graph has nothing left here.
        let float32_out = outputs.iter().any(|v| dtype(*v) == Some(FLOAT));
        let pending = float32_out
            || float_in
                .iter()
                .any(|(s, v)| !keep.contains(s) && dtype(*v) == Some(FLOAT));
        let go = pending
            && match half {
                Half::Compute { keep } => {
                    float32_out
                        || float_in
                            .iter()
                            .any(|(s, v)| !keep.contains(s) && (already_half(v) || is_const(*v)))
                }
                Half::Move => float_in
                    .iter()
                    .any(|(_, v)| already_half(v) || is_const(*v)),
                Half::AnyInput | Half::Float32(_) | Half::PerNode(_) => false,
            };
        if !go {
            if !pending || matches!(half, Half::AnyInput) {
                continue;
            }
            let reads_half = float_in.iter().any(|(_, v)| already_half(v));
            for &(s, v) in &float_in {
                if stores_half(v) {
                    p.stored_slots.insert((id, s));
                    if stored.insert(v) {
                        p.stored.push(v);
                    }
                }
            }
            for (_, v) in &float_in {
                if already_half(v) && dtype(*v) != Some(FLOAT16) {
                    to_float.insert(*v);
                }
            }
            if let Half::Float32(why) = half {
                p.kept.push((id, why.to_string()));
            } else if reads_half {
                p.kept.push((id, "no float16 input".into()));
            }
            continue;
        }
        for &(s, v) in &float_in {
            if keep.contains(&s) {
                if already_half(&v) && dtype(v) != Some(FLOAT16) {
                    to_float.insert(v);
                }
                if stores_half(v) {
                    p.stored_slots.insert((id, s));
                    if stored.insert(v) {
                        p.stored.push(v);
                    }
                }
                continue;
            }
            p.half_slots.insert((id, s));
            if already_half(&v) {
                continue;
            }
            if is_const(v) {
                if constants.insert(v) {
                    p.constants.push(v);
                }
            } else if to_half.insert(v) {
                p.to_half.push(v);
            }
        }
        for v in &outputs {
            if dtype(*v) == Some(FLOAT) {
                p.half.insert(*v);
                if g.is_graph_output(*v) {
                    to_float.insert(*v);
                }
            }
        }
        p.converted.push(id);
        p.converted_set.insert(id);
    }
    // Deterministic order for the Casts back to float32.
    let mut to_float: Vec<ValueRef> = to_float.into_iter().collect();
    to_float.sort();
    p.to_float = to_float;
    p
}

/// `t` in float16, with how many finite values were clamped to ±65504.
fn half_tensor(t: &TensorProto) -> Result<(TensorProto, usize)> {
    let a = crate::ir::tensor::to_f32(t)?;
    let mut clamped = 0;
    let mut raw = Vec::with_capacity(a.len() * 2);
    for &x in a.iter() {
        let y = if x.is_finite() && x.abs() > HALF_MAX {
            clamped += 1;
            HALF_MAX.copysign(x)
        } else {
            x
        };
        raw.extend_from_slice(&half::f16::from_f32(y).to_bits().to_le_bytes());
    }
    Ok((
        TensorProto {
            name: t.name.clone(),
            dims: t.dims.clone(),
            data_type: Some(FLOAT16),
            raw_data: Some(raw.into()),
            doc_string: t.doc_string.clone(),
            ..Default::default()
        },
        clamped,
    ))
}

fn cast(name: &str, to: i32) -> NodeProto {
    NodeProto {
        op_type: Some("Cast".into()),
        name: Some(name.to_string()),
        output: vec![name.to_string()],
        attribute: vec![AttributeProto {
            name: Some("to".into()),
            r#type: Some(attribute_proto::AttributeType::Int as i32),
            i: Some(to as i64),
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl Rule for ToFp16 {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "D001",
            name: "to-fp16",
            group: "dtype",
            summary: "float16 weights and arithmetic where the ops run in float16, float32 kept \
                      elsewhere and at the graph's inputs and outputs (with --dtype fp16)",
            exactness: Exactness::Lossy { tolerance: 1e-2 },
        }
    }

    /// A fixed conversion of the whole graph, never an option of a `--budget` search.
    fn search_variants(&self, _config: &Config) -> Vec<crate::rewrite::SearchVariant> {
        Vec::new()
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let mut f = Findings::default();
        if !config.fp16 {
            return f;
        }
        let p = plan(model);
        for (id, why) in &p.kept {
            f.skip(model, *id, format!("keeps float32: {why}"));
        }
        let anchor = p
            .converted
            .first()
            .copied()
            .or_else(|| p.stored.first().map(|v| v.node));
        if let Some(anchor) = anchor {
            f.matches.push(Match {
                anchor,
                nodes: vec![],
                what: format!(
                    "float16: {} ops, {} weights ({} stored for float32 ops), {} Casts to \
                     float16, {} to float32",
                    p.converted.len(),
                    p.constants.len() + p.stored.len(),
                    p.stored.len(),
                    p.to_half.len(),
                    p.to_float.len()
                ),
            });
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let p = plan(model);
        let mut patch = Patch::new(m.what.clone(), Some(m.anchor));
        let mut wire: FxHashMap<ValueRef, Wire> = FxHashMap::default();
        let mut clamped = 0usize;
        // Weights: a float16 copy, which takes the name when only float16 readers and stored
        // slots read it; float32 ops read stored weights through a Cast.
        let half_set: FxHashSet<ValueRef> = p.constants.iter().copied().collect();
        let mut stored_wire: FxHashMap<ValueRef, Wire> = FxHashMap::default();
        let mut all: Vec<ValueRef> = p.constants.clone();
        all.extend(p.stored.iter().filter(|v| !half_set.contains(v)));
        for v in all {
            let Some(t) = g.const_tensor(v) else { continue };
            let (mut t16, n) = half_tensor(t)?;
            clamped += n;
            let name = g.value_name(v).to_string();
            let only_converted = !g.is_captured(v)
                && !g.is_graph_output(v)
                && g.consumers(v)
                    .iter()
                    .all(|c| p.half_slots.contains(c) || p.stored_slots.contains(c));
            if !only_converted {
                t16.name = Some(format!("{name}_fp16"));
            }
            let new = match &g.node(v.node).kind {
                NodeKind::Op(n) => {
                    let mut c = n.clone();
                    c.output = vec![t16.name.clone().unwrap_or_default()];
                    for a in c.attribute.iter_mut() {
                        if a.name.as_deref() == Some("value") {
                            a.t = Some(t16.clone());
                        }
                    }
                    patch.add_op(c, &[])[0]
                }
                _ => patch.add_initializer(t16),
            };
            if only_converted {
                patch.remove(v.node);
                patch.keep_name(v, new);
                patch.set_declared_type(&name, FLOAT16);
            }
            if half_set.contains(&v) {
                wire.insert(v, new);
            }
            if p.stored.contains(&v) {
                let up = patch.add_op(cast(&format!("{name}_fp32"), FLOAT), &[Some(new)])[0];
                stored_wire.insert(v, up);
            }
        }
        for &v in &p.to_half {
            let name = format!("{}_fp16", g.value_name(v));
            let w = patch.add_op(cast(&name, FLOAT16), &[Some(Wire::Value(v))])[0];
            wire.insert(v, w);
        }
        let mut w = Wiring {
            g,
            patch,
            wire,
            replaced: FxHashMap::default(),
            float: FxHashMap::default(),
            stored: stored_wire,
        };
        // Producers of float16 graph outputs are re-added under new output names, in
        // topological order (a copy may read an earlier one).
        for &id in &p.converted {
            let outputs = (0..g.node(id).num_outputs()).map(|slot| ValueRef { node: id, slot });
            if !outputs
                .into_iter()
                .any(|v| p.half.contains(&v) && g.is_graph_output(v))
            {
                continue;
            }
            let Some(proto) = g.node(id).op() else {
                continue;
            };
            let mut copy = proto.clone();
            for o in copy.output.iter_mut().filter(|o| !o.is_empty()) {
                *o = format!("{o}_fp16");
            }
            let ins: Vec<Option<Wire>> = g
                .node_inputs(id)
                .into_iter()
                .enumerate()
                .map(|(s, i)| i.map(|v| w.reader(&p, id, s, v)))
                .collect();
            let outs = w.patch.add_op(copy, &ins);
            w.patch.remove(id);
            w.replaced.insert(id, outs);
        }
        // Readers: converted slots read float16, the others float32 (or either, for Shape,
        // Size and Cast).
        for id in g.topo_order() {
            if w.replaced.contains_key(&id) || g.node(id).op().is_none() {
                continue;
            }
            for (s, v) in g.node_inputs(id).into_iter().enumerate() {
                let Some(v) = v else { continue };
                let target = w.reader(&p, id, s, v);
                if target != Wire::Value(v) {
                    w.patch.rewire(id, s, Some(target));
                }
            }
        }
        // Names: replaced producers give their outputs' names back; float16 graph outputs go
        // to the Casts back to float32.
        let mut replaced: Vec<(NodeId, Vec<Wire>)> =
            w.replaced.iter().map(|(k, v)| (*k, v.clone())).collect();
        replaced.sort_by_key(|(k, _)| *k);
        for (node, outs) in replaced {
            for (slot, out) in outs.into_iter().enumerate() {
                let v = ValueRef { node, slot };
                if g.node(node).output_name(slot).is_none_or(str::is_empty) {
                    continue;
                }
                if g.is_graph_output(v) {
                    let target = if p.half.contains(&v) { w.float(v) } else { out };
                    w.patch.shunt(v, target);
                } else {
                    w.patch.keep_name(v, out);
                }
            }
        }
        let mut patch = w.patch;
        for v in &p.half {
            if !g.is_graph_output(*v) {
                patch.set_declared_type(g.value_name(*v), FLOAT16);
            }
        }
        if clamped > 0 {
            patch.description += &format!(" ({clamped} weights clamped to ±65504)");
        }
        Ok(patch)
    }
}

/// The patch under construction and where each value is to be read from.
struct Wiring<'g> {
    g: &'g crate::ir::Graph,
    patch: Patch,
    /// Float16 copies of weights and Casts of float32 values to float16.
    wire: FxHashMap<ValueRef, Wire>,
    /// Re-added producers of float16 graph outputs: their new outputs.
    replaced: FxHashMap<NodeId, Vec<Wire>>,
    /// Casts of float16 values back to float32.
    float: FxHashMap<ValueRef, Wire>,
    /// Weights stored in float16, cast back to float32.
    stored: FxHashMap<ValueRef, Wire>,
}

impl Wiring<'_> {
    /// `v` as it is once converted (float16 if its producer computes in float16).
    fn any(&self, v: ValueRef) -> Wire {
        match self.replaced.get(&v.node) {
            Some(outs) => outs[v.slot],
            None => Wire::Value(v),
        }
    }

    /// `v` in float16.
    fn half(&self, v: ValueRef) -> Wire {
        match self.wire.get(&v) {
            Some(w) => *w,
            None => self.any(v),
        }
    }

    /// `v`, float16 once converted, back in float32 (one Cast per value).
    fn float(&mut self, v: ValueRef) -> Wire {
        if let Some(w) = self.float.get(&v) {
            return *w;
        }
        let name = format!("{}_fp32", self.g.value_name(v));
        let src = self.any(v);
        let w = self.patch.add_op(cast(&name, FLOAT), &[Some(src)])[0];
        self.float.insert(v, w);
        w
    }

    /// What input `slot` of `id`, which reads `v`, reads once converted.
    fn reader(&mut self, p: &Plan, id: NodeId, slot: usize, v: ValueRef) -> Wire {
        if p.half_slots.contains(&(id, slot)) {
            return self.half(v);
        }
        if p.stored_slots.contains(&(id, slot)) {
            if let Some(w) = self.stored.get(&v) {
                return *w;
            }
        }
        if !p.half.contains(&v) {
            return self.any(v);
        }
        let any_input = self
            .g
            .node(id)
            .op()
            .is_some_and(|n| matches!(ops::half(n), Half::AnyInput));
        if any_input {
            self.any(v)
        } else {
            self.float(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{seeded_f32, ModelBuilder};
    use crate::onnx::proto::tensor_proto::DataType as D;
    use crate::rewrite::{run, DriverOptions};

    fn fp16() -> Config {
        Config {
            fp16: true,
            ..Default::default()
        }
    }

    fn convert(proto: &crate::onnx::proto::ModelProto) -> crate::onnx::proto::ModelProto {
        let mut m = Model::from_proto(proto.clone()).unwrap();
        let r = run(&mut m, &[&ToFp16], &fp16(), &DriverOptions::default()).unwrap();
        assert_eq!(r.patches(), 1, "one patch converts the whole graph");
        assert!(
            ToFp16.find(&m, &fp16()).matches.is_empty(),
            "a converted graph has nothing left to convert"
        );
        m.to_proto()
    }

    fn ops(p: &crate::onnx::proto::ModelProto) -> Vec<String> {
        let g = p.graph.as_ref().unwrap();
        g.node
            .iter()
            .map(|n| n.op_type.clone().unwrap_or_default())
            .collect()
    }

    fn elem_type(vi: &crate::onnx::proto::ValueInfoProto) -> Option<i32> {
        match vi.r#type.as_ref()?.value.as_ref()? {
            crate::onnx::proto::type_proto::Value::TensorType(t) => t.elem_type,
            _ => None,
        }
    }

    #[test]
    fn weights_exact_in_float16_give_the_very_same_outputs() {
        // Every weight and input is a small dyadic number: float16 holds them and their
        // products exactly, so the converted model must agree bit for bit.
        // (64 of them: fewer would not pay for the two Casts, and the driver refuses growth.)
        let w: Vec<f32> = (0..64).map(|i| [0.5f32, 2.0, -1.0, 0.25][i % 4]).collect();
        let w = ndarray::ArrayD::from_shape_vec(vec![64], w).unwrap();
        let mut b = ModelBuilder::new(17);
        b.input("x", D::Float, &[2, 64])
            .initializer_f32("w", w)
            .node_named("mul", "Mul", &["x", "w"], &["m"], vec![])
            .node_named("relu", "Relu", &["m"], &["y"], vec![])
            .output("y", D::Float, &[2, 64]);
        let a = b.build();
        let out = convert(&a);
        let g = out.graph.as_ref().unwrap();
        let w16 = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("w"));
        assert_eq!(w16.and_then(|t| t.data_type), Some(FLOAT16));
        assert_eq!(
            elem_type(&g.input[0]),
            Some(FLOAT),
            "inputs keep their type"
        );
        assert_eq!(
            elem_type(&g.output[0]),
            Some(FLOAT),
            "outputs keep their type"
        );
        assert_eq!(g.output[0].name.as_deref(), Some("y"));
        assert_eq!(ops(&out).iter().filter(|o| *o == "Cast").count(), 2);
        let x: Vec<f32> = (0..128).map(|i| (i % 17) as f32 - 8.0).collect();
        let x = tract_onnx::prelude::Tensor::from(
            ndarray::ArrayD::from_shape_vec(vec![2, 64], x).unwrap(),
        );
        let sets = [crate::verify::InputSet::new("ints", vec![("x".into(), x)])];
        let v = crate::verify::compare::verify(&a, &out, &sets, 0.0).unwrap();
        assert_eq!(v.sets.len(), 1);
        assert_eq!(v.sets[0].outputs.len(), 1);
        assert_eq!(v.sets[0].outputs[0].max_abs_error, Some(0.0), "{v}");
        assert!(v.passed, "{v}");
    }

    #[test]
    fn a_gemm_with_a_bias_keeps_float32_with_its_weight_stored_in_float16() {
        let mut b = ModelBuilder::new(13);
        b.input("x", D::Float, &[2, 64])
            .initializer_f32("w", seeded_f32(&[64, 8], 1))
            .initializer_f32("c", seeded_f32(&[8], 2))
            .node_named("fc", "Gemm", &["x", "w", "c"], &["y"], vec![])
            .output("y", D::Float, &[2, 8]);
        let a = b.build();
        let m = Model::from_proto(a.clone()).unwrap();
        let f = ToFp16.find(&m, &fp16());
        assert_eq!(f.skips.len(), 1, "{:?}", f.skips);
        assert!(f.skips[0].reason.contains("Gemm's bias"), "{:?}", f.skips);
        let out = convert(&a);
        let g = out.graph.as_ref().unwrap();
        let w = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("w"));
        assert_eq!(
            w.and_then(|t| t.data_type),
            Some(FLOAT16),
            "64·8 weights: stored"
        );
        let c = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("c"));
        assert_eq!(
            c.and_then(|t| t.data_type),
            Some(FLOAT),
            "8 weights: not worth a Cast"
        );
        assert_eq!(ops(&out), ["Cast", "Gemm"]);
        let sets = [crate::verify::InputSet::new(
            "seeded",
            vec![(
                "x".into(),
                tract_onnx::prelude::Tensor::from(seeded_f32(&[2, 64], 3)),
            )],
        )];
        let v = crate::verify::compare::verify(&a, &out, &sets, 1e-2).unwrap();
        assert!(v.passed, "{v}");
    }

    #[test]
    fn without_dtype_fp16_the_rule_finds_nothing() {
        let mut b = ModelBuilder::new(17);
        b.input("x", D::Float, &[2, 4])
            .initializer_f32("w", seeded_f32(&[4], 1))
            .node_named("mul", "Mul", &["x", "w"], &["y"], vec![])
            .output("y", D::Float, &[2, 4]);
        let m = Model::from_proto(b.build()).unwrap();
        assert!(ToFp16.find(&m, &Config::default()).matches.is_empty());
        assert_eq!(ToFp16.find(&m, &fp16()).matches.len(), 1);
    }
}
