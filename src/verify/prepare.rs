//! Preparing a model so that tract can run it on a given input set.
//!
//! tract-onnx 0.23 stumbles on things onnxruntime forgives (see `../shared/README.md`): declared
//! output shapes that are wrong, `value_info` that keeps symbolic dims which then fail to unify
//! with the concrete ones, and `If` nodes whose untaken branch does not type-check for the given
//! inputs. [`prepare`] returns a copy of the model with these fixed for one input set:
//!
//! - graph inputs get the exact element types and shapes of the given tensors;
//! - declared shapes of the graph outputs are cleared;
//! - `value_info` is dropped everywhere (tract re-infers every intermediate shape);
//! - every top-level `If` whose condition can be computed from the given inputs is replaced by the
//!   nodes of the branch it takes (repeatedly, so `If`s inside a taken branch are decided too).
//!
//! A condition is computed by a small constant evaluator (initializers, `Constant` nodes, the
//! given input tensors of at most [`SMALL_INPUT`] elements, the shapes of inputs, and simple ops
//! on these: comparisons, logic, `Cast`, `Shape`, `Size`, `Gather`, `Squeeze`, `Unsqueeze`,
//! `Reshape`, `Concat`, `ConstantOfShape`, `Add`/`Sub`/`Mul`, ...), else by running in tract the
//! part of the graph the condition depends on (when that part holds no undecided `If`). An `If`
//! that neither decides is left for tract to analyse, and to report on.

use std::collections::{HashMap, HashSet};

use tract_onnx::prelude::{DatumType, Tensor};

use super::inputs::{
    datum_type_of, declared_elem_type, declared_shape, onnx_type_of, tensor_from_proto,
    DeclaredDim, InputSet,
};
use crate::error::{Error, Result};
use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use crate::onnx::proto::type_proto::{self, Value as TypeValue};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// Given input tensors with at most this many elements are known to the constant evaluator.
pub const SMALL_INPUT: usize = 16;

/// Constants (initializers, `Constant` nodes, results) with at most this many elements are
/// tracked by the constant evaluator.
const SMALL_CONST: usize = 64;

/// Upper bound on the number of `If` nodes inlined, against pathological recursion.
const MAX_INLINED: usize = 10_000;

/// How an `If` node was decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IfDecision {
    /// Name of the `If` node (its first output when it has no name).
    pub node: String,
    /// `then_branch` or `else_branch`: the branch whose nodes replaced the `If`.
    pub branch: &'static str,
    /// `constants` when the constant evaluator decided, `tract` when tract computed the condition.
    pub by: &'static str,
}

/// A model made ready for tract on one input set.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The modified copy of the model.
    pub model: ModelProto,
    /// The `If` nodes replaced by their taken branch, in the order they were decided.
    pub decided_ifs: Vec<IfDecision>,
    /// Names of the top-level `If` nodes left in place because their condition stayed unknown.
    pub undecided_ifs: Vec<String>,
}

/// Prepares a copy of `model` for running in tract on `inputs`; see the module documentation.
///
/// Fails with [`Error::Usage`] when `inputs` does not fit the model: a tensor for no input, a
/// missing input, or an element type, rank or fixed dimension that contradicts the declaration.
pub fn prepare(model: &ModelProto, inputs: &InputSet) -> Result<Prepared> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| Error::Graph {
        reason: "the model has no graph".into(),
    })?;
    bind_inputs(graph, inputs)?;
    for out in &mut graph.output {
        clear_shape(out);
    }
    drop_value_info(graph);
    let mut decided = Vec::new();
    decide_ifs(&mut model, inputs, &mut decided)?;
    let undecided = model
        .graph
        .as_ref()
        .map(|g| g.node.iter().filter(|n| is_if(n)).map(node_label).collect())
        .unwrap_or_default();
    Ok(Prepared {
        model,
        decided_ifs: decided,
        undecided_ifs: undecided,
    })
}

fn clear_shape(vi: &mut ValueInfoProto) {
    if let Some(TypeValue::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape = None;
    }
}

/// Checks `inputs` against the graph inputs and sets each input's type to the tensor's.
fn bind_inputs(graph: &mut GraphProto, inputs: &InputSet) -> Result<()> {
    let inits: HashSet<String> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    let listed = || {
        graph
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_deref().unwrap_or("")))
            .map(|i| format!("`{}`", i.name.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, _) in &inputs.tensors {
        if !graph
            .input
            .iter()
            .any(|i| i.name.as_deref() == Some(name.as_str()))
        {
            return Err(Error::Usage(format!(
                "`{}` gives a value for `{name}`, which is not an input of the model (inputs: {})",
                inputs.label,
                listed()
            )));
        }
    }
    for vi in &graph.input {
        let name = vi.name.as_deref().unwrap_or("");
        if inputs.get(name).is_none() && !inits.contains(name) {
            return Err(Error::Usage(format!(
                "`{}` gives no value for input `{name}`",
                inputs.label
            )));
        }
    }
    for vi in &mut graph.input {
        let name = vi.name.clone().unwrap_or_default();
        let Some(t) = inputs.get(&name) else {
            continue;
        };
        if let Some(decl) = declared_elem_type(vi) {
            if let Ok(want) = datum_type_of(decl, &name) {
                if want != t.datum_type() {
                    return Err(Error::Usage(format!(
                        "input `{name}` of `{}` is {:?} but the model declares {}",
                        inputs.label,
                        t.datum_type(),
                        crate::onnx::dtype::name(decl)
                    )));
                }
            }
        }
        if let Some(decl) = declared_shape(vi) {
            let bad = decl.len() != t.rank()
                || decl
                    .iter()
                    .zip(t.shape())
                    .any(|(d, &s)| matches!(d, DeclaredDim::Fixed(f) if *f != s));
            if bad {
                return Err(Error::Usage(format!(
                    "input `{name}` of `{}` has shape {:?} but the model declares {}",
                    inputs.label,
                    t.shape(),
                    show_decl(&decl)
                )));
            }
        }
        let elem = onnx_type_of(t.datum_type()).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            reason: format!("{:?} has no onnx element type", t.datum_type()),
        })?;
        vi.r#type = Some(TypeProto {
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: t
                        .shape()
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        });
    }
    Ok(())
}

fn show_decl(decl: &[DeclaredDim]) -> String {
    let parts: Vec<String> = decl
        .iter()
        .map(|d| match d {
            DeclaredDim::Fixed(f) => f.to_string(),
            DeclaredDim::Symbol(s) => s.clone(),
            DeclaredDim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Removes `value_info` from `graph` and every subgraph in it.
fn drop_value_info(graph: &mut GraphProto) {
    graph.value_info.clear();
    for node in &mut graph.node {
        for_each_subgraph_mut(node, &mut |g| drop_value_info(g));
    }
}

fn for_each_subgraph_mut(node: &mut NodeProto, f: &mut dyn FnMut(&mut GraphProto)) {
    for a in &mut node.attribute {
        if let Some(g) = a.g.as_mut() {
            f(g);
        }
        for g in &mut a.graphs {
            f(g);
        }
    }
}

fn subgraphs(node: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

fn is_if(node: &NodeProto) -> bool {
    node.op_type.as_deref() == Some("If")
        && matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

fn node_label(node: &NodeProto) -> String {
    match node.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => node.output.first().cloned().unwrap_or_default(),
    }
}

/// Names defined at the top level of `g`: inputs, initializers and node outputs.
fn defined_names(g: &GraphProto) -> HashSet<String> {
    let mut s: HashSet<String> = HashSet::new();
    s.extend(g.input.iter().filter_map(|i| i.name.clone()));
    s.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    s.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|t| t.values.as_ref().and_then(|v| v.name.clone())),
    );
    for n in &g.node {
        s.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    s
}

/// Names `g` uses but does not define (the outer-scope values a subgraph captures).
fn free_names(g: &GraphProto) -> HashSet<String> {
    let local = defined_names(g);
    let mut refs: HashSet<String> = HashSet::new();
    for n in &g.node {
        refs.extend(node_uses(n));
    }
    refs.extend(g.output.iter().filter_map(|o| o.name.clone()));
    refs.retain(|r| !r.is_empty() && !local.contains(r));
    refs
}

/// Every value `node` reads: its inputs and what its subgraphs capture.
fn node_uses(node: &NodeProto) -> HashSet<String> {
    let mut s: HashSet<String> = node
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .cloned()
        .collect();
    for g in subgraphs(node) {
        s.extend(free_names(g));
    }
    s
}

/// Every value and node name anywhere in `g`, subgraphs included.
fn all_names(g: &GraphProto, values: &mut HashSet<String>, nodes: &mut HashSet<String>) {
    values.extend(defined_names(g));
    values.extend(g.output.iter().filter_map(|o| o.name.clone()));
    for n in &g.node {
        values.extend(n.input.iter().cloned());
        if let Some(name) = &n.name {
            nodes.insert(name.clone());
        }
        for sg in subgraphs(n) {
            all_names(sg, values, nodes);
        }
    }
}

/// Renames the outer-scope references of subgraph `g` per `map`, honouring names `g` redefines.
fn rename_refs(g: &mut GraphProto, map: &HashMap<String, String>) {
    let local = defined_names(g);
    let eff: HashMap<String, String> = map
        .iter()
        .filter(|(k, _)| !local.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if eff.is_empty() {
        return;
    }
    for n in &mut g.node {
        for i in &mut n.input {
            if let Some(r) = eff.get(i) {
                *i = r.clone();
            }
        }
        for_each_subgraph_mut(n, &mut |sg| rename_refs(sg, &eff));
    }
    for o in &mut g.output {
        if let Some(r) = o.name.as_ref().and_then(|n| eff.get(n)) {
            o.name = Some(r.clone());
        }
    }
}

fn fresh(base: &str, used: &mut HashSet<String>) -> String {
    let mut k = 1usize;
    loop {
        let cand = format!("{base}__inlined{k}");
        if used.insert(cand.clone()) {
            return cand;
        }
        k += 1;
    }
}

/// Replaces the `If` node at `idx` of the top-level graph by the nodes of its taken branch.
fn inline_if(graph: &mut GraphProto, idx: usize, take_then: bool) -> Result<()> {
    let node = graph.node.remove(idx);
    let attr_name = if take_then {
        "then_branch"
    } else {
        "else_branch"
    };
    let mut branch = node
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(attr_name))
        .and_then(|a| a.g.clone())
        .ok_or_else(|| Error::Node {
            node: node_label(&node),
            op: "If".into(),
            reason: format!("no `{attr_name}` graph"),
        })?;
    let mut used_values = HashSet::new();
    let mut used_nodes = HashSet::new();
    all_names(graph, &mut used_values, &mut used_nodes);
    used_values.extend(node.output.iter().cloned());

    let produced: HashSet<String> = branch
        .node
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    let mut map: HashMap<String, String> = HashMap::new();
    for (i, out) in branch.output.iter().enumerate() {
        let Some(bo) = out.name.as_ref() else {
            continue;
        };
        let Some(target) = node.output.get(i).filter(|t| !t.is_empty()) else {
            continue;
        };
        if produced.contains(bo) && !map.contains_key(bo) {
            map.insert(bo.clone(), target.clone());
        }
    }
    for d in defined_names(&branch) {
        if !map.contains_key(&d) && used_values.contains(&d) {
            let f = fresh(&d, &mut used_values);
            map.insert(d, f);
        } else {
            used_values.insert(d);
        }
    }
    let rename = |s: &mut String| {
        if let Some(r) = map.get(s.as_str()) {
            *s = r.clone();
        }
    };
    for n in &mut branch.node {
        n.input.iter_mut().for_each(rename);
        n.output.iter_mut().for_each(rename);
        for_each_subgraph_mut(n, &mut |sg| rename_refs(sg, &map));
        if let Some(name) = n.name.as_mut().filter(|n| !n.is_empty()) {
            if !used_nodes.insert(name.clone()) {
                *name = fresh(name, &mut used_nodes);
            }
        }
    }
    for t in &mut branch.initializer {
        if let Some(n) = t.name.as_mut() {
            rename(n);
        }
    }
    for s in &mut branch.sparse_initializer {
        if let Some(n) = s.values.as_mut().and_then(|v| v.name.as_mut()) {
            rename(n);
        }
    }
    let mut new_nodes = std::mem::take(&mut branch.node);
    for (i, out) in branch.output.iter().enumerate() {
        let Some(target) = node.output.get(i).filter(|t| !t.is_empty()) else {
            continue;
        };
        let Some(bo) = out.name.as_ref() else {
            return Err(Error::Node {
                node: node_label(&node),
                op: "If".into(),
                reason: format!("output {i} of `{attr_name}` has no name"),
            });
        };
        let src = map.get(bo).cloned().unwrap_or_else(|| bo.clone());
        if &src != target {
            new_nodes.push(NodeProto {
                input: vec![src],
                output: vec![target.clone()],
                name: Some(fresh(
                    &format!("{}_out{i}", node_label(&node)),
                    &mut used_nodes,
                )),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
    }
    graph.initializer.append(&mut branch.initializer);
    graph
        .sparse_initializer
        .append(&mut branch.sparse_initializer);
    graph.node.splice(idx..idx, new_nodes);
    Ok(())
}

/// Decides top-level `If` nodes until none is left that can be decided.
fn decide_ifs(
    model: &mut ModelProto,
    inputs: &InputSet,
    decisions: &mut Vec<IfDecision>,
) -> Result<()> {
    let mut tract_failed: HashSet<String> = HashSet::new();
    for _ in 0..MAX_INLINED {
        let Some(graph) = model.graph.as_ref() else {
            return Ok(());
        };
        if !graph.node.iter().any(is_if) {
            return Ok(());
        }
        let consts = ConstEval::new(graph, inputs).run();
        let mut decided: Option<(usize, bool, &'static str)> = None;
        for (idx, node) in graph.node.iter().enumerate() {
            if !is_if(node) {
                continue;
            }
            let Some(cond) = node.input.first().filter(|c| !c.is_empty()) else {
                continue;
            };
            if let Some(b) = consts.get(cond).and_then(Val::truth) {
                decided = Some((idx, b, "constants"));
                break;
            }
            let key = node.output.first().cloned().unwrap_or_default();
            if tract_failed.contains(&key) {
                continue;
            }
            match cond_by_tract(model, graph, cond, inputs) {
                TractCond::Known(b) => {
                    decided = Some((idx, b, "tract"));
                    break;
                }
                // Another `If` must be decided first; try again in a later round.
                TractCond::Blocked => {}
                TractCond::Failed => {
                    tract_failed.insert(key);
                }
            }
        }
        let Some((idx, take_then, by)) = decided else {
            return Ok(());
        };
        let Some(graph) = model.graph.as_mut() else {
            return Ok(());
        };
        let label = node_label(&graph.node[idx]);
        inline_if(graph, idx, take_then)?;
        decisions.push(IfDecision {
            node: label,
            branch: if take_then {
                "then_branch"
            } else {
                "else_branch"
            },
            by,
        });
    }
    Ok(())
}

/// What tract says about an `If` condition.
enum TractCond {
    /// The condition's value.
    Known(bool),
    /// The condition depends on another `If`, not decided yet.
    Blocked,
    /// tract cannot compute it (or it is not a one-element value).
    Failed,
}

/// Computes the value of `cond` by running, in tract, the nodes it depends on.
fn cond_by_tract(
    model: &ModelProto,
    graph: &GraphProto,
    cond: &str,
    inputs: &InputSet,
) -> TractCond {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
    }
    let mut needed_nodes: HashSet<usize> = HashSet::new();
    let mut needed_values: HashSet<String> = HashSet::new();
    let mut stack = vec![cond.to_string()];
    while let Some(v) = stack.pop() {
        if !needed_values.insert(v.clone()) {
            continue;
        }
        if let Some(&i) = producer.get(v.as_str()) {
            if needed_nodes.insert(i) {
                let n = &graph.node[i];
                if is_if(n) {
                    return TractCond::Blocked;
                }
                stack.extend(node_uses(n));
            }
        }
    }
    let mut order: Vec<usize> = needed_nodes.into_iter().collect();
    order.sort_unstable();
    let sub_graph = GraphProto {
        node: order.iter().map(|&i| graph.node[i].clone()).collect(),
        name: graph.name.clone(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| t.name.as_ref().is_some_and(|n| needed_values.contains(n)))
            .cloned()
            .collect(),
        sparse_initializer: graph
            .sparse_initializer
            .iter()
            .filter(|s| {
                s.values
                    .as_ref()
                    .and_then(|v| v.name.as_ref())
                    .is_some_and(|n| needed_values.contains(n))
            })
            .cloned()
            .collect(),
        input: graph
            .input
            .iter()
            .filter(|i| i.name.as_ref().is_some_and(|n| needed_values.contains(n)))
            .cloned()
            .collect(),
        output: vec![ValueInfoProto {
            name: Some(cond.to_string()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let sub_inputs = InputSet::new(
        inputs.label.clone(),
        inputs
            .tensors
            .iter()
            .filter(|(n, _)| needed_values.contains(n))
            .cloned()
            .collect(),
    );
    let sub_model = ModelProto {
        graph: Some(sub_graph),
        ..model.clone_without_graph()
    };
    let truth = super::runner::fold_or_run(&sub_model, &sub_inputs, "if condition")
        .ok()
        .and_then(|out| out.into_iter().next())
        .and_then(|t| Val::from_tensor(&t))
        .and_then(|v| v.truth());
    match truth {
        Some(b) => TractCond::Known(b),
        None => TractCond::Failed,
    }
}

trait CloneWithoutGraph {
    fn clone_without_graph(&self) -> ModelProto;
}

impl CloneWithoutGraph for ModelProto {
    fn clone_without_graph(&self) -> ModelProto {
        ModelProto {
            ir_version: self.ir_version,
            opset_import: self.opset_import.clone(),
            producer_name: self.producer_name.clone(),
            producer_version: self.producer_version.clone(),
            domain: self.domain.clone(),
            model_version: self.model_version,
            functions: self.functions.clone(),
            ..Default::default()
        }
    }
}

/// A small constant known to the evaluator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Val {
    shape: Vec<usize>,
    data: Data,
}

#[derive(Debug, Clone, PartialEq)]
enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
            Data::B(v) => v.len(),
        }
    }
    fn f(&self, i: usize) -> f64 {
        match self {
            Data::F(v) => v[i],
            Data::I(v) => v[i] as f64,
            Data::B(v) => v[i] as u8 as f64,
        }
    }
    fn i(&self, i: usize) -> i64 {
        match self {
            Data::F(v) => v[i] as i64,
            Data::I(v) => v[i],
            Data::B(v) => v[i] as i64,
        }
    }
    fn b(&self, i: usize) -> bool {
        match self {
            Data::F(v) => v[i] != 0.0,
            Data::I(v) => v[i] != 0,
            Data::B(v) => v[i],
        }
    }
    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
            Data::B(v) => Data::B(idx.iter().map(|&i| v[i]).collect()),
        }
    }
    fn concat(parts: &[&Data]) -> Option<Data> {
        let first = parts.first()?;
        Some(match first {
            Data::F(_) => Data::F(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.f(i)))
                    .collect(),
            ),
            Data::I(_) => Data::I(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.i(i)))
                    .collect(),
            ),
            Data::B(_) => Data::B(
                parts
                    .iter()
                    .flat_map(|p| (0..p.len()).map(move |i| p.b(i)))
                    .collect(),
            ),
        })
    }
}

impl Val {
    fn new(shape: Vec<usize>, data: Data) -> Option<Val> {
        (numel(&shape) == Some(data.len())).then_some(Val { shape, data })
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    /// The truth of a one-element value.
    pub(crate) fn truth(&self) -> Option<bool> {
        (self.len() == 1).then(|| self.data.b(0))
    }
    fn ints(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I(v) => Some(v.clone()),
            _ => None,
        }
    }
    pub(crate) fn from_tensor(t: &Tensor) -> Option<Val> {
        if t.len() > SMALL_CONST {
            return None;
        }
        let shape = t.shape().to_vec();
        let data = match t.datum_type() {
            DatumType::Bool => Data::B(
                t.to_plain_array_view::<bool>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            dt if dt.is_float() => Data::F(
                t.cast_to::<f64>()
                    .ok()?
                    .to_plain_array_view::<f64>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            dt if dt.is_integer() => Data::I(
                t.cast_to::<i64>()
                    .ok()?
                    .to_plain_array_view::<i64>()
                    .ok()?
                    .iter()
                    .copied()
                    .collect(),
            ),
            _ => return None,
        };
        Val::new(shape, data)
    }
    fn from_proto(t: &TensorProto) -> Option<Val> {
        let n: i64 = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
        if !(0..=SMALL_CONST as i64).contains(&n) {
            return None;
        }
        Val::from_tensor(&tensor_from_proto(t).ok()?)
    }
    fn cast(&self, to: i32) -> Option<Val> {
        let dt = datum_type_of(to, "").ok()?;
        let n = self.len();
        let data = if dt == DatumType::Bool {
            Data::B((0..n).map(|i| self.data.b(i)).collect())
        } else if dt.is_float() {
            Data::F((0..n).map(|i| self.data.f(i)).collect())
        } else if dt.is_integer() {
            Data::I((0..n).map(|i| self.data.i(i)).collect())
        } else {
            return None;
        };
        Val::new(self.shape.clone(), data)
    }
    fn reshaped(&self, shape: Vec<usize>) -> Option<Val> {
        Val::new(shape, self.data.clone())
    }
}

/// Number of elements of `shape`, `None` on overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// For each position of `out`, the flat index into a tensor of shape `inp` broadcast to it.
fn broadcast_index(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let off = out.len() - inp.len();
    let mut strides = vec![0usize; inp.len()];
    let mut s = 1;
    for i in (0..inp.len()).rev() {
        strides[i] = if inp[i] == 1 { 0 } else { s };
        s *= inp[i];
    }
    (0..n)
        .map(|mut flat| {
            let mut idx = 0;
            for ax in (0..out.len()).rev() {
                let c = flat % out[ax];
                flat /= out[ax];
                if ax >= off {
                    idx += c * strides[ax - off];
                }
            }
            idx
        })
        .collect()
}

fn binary(a: &Val, b: &Val, op: &str) -> Option<Val> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    if numel(&shape)? > SMALL_CONST {
        return None;
    }
    let ia = broadcast_index(&shape, &a.shape);
    let ib = broadcast_index(&shape, &b.shape);
    let pairs = ia.iter().zip(&ib);
    let floats = matches!(a.data, Data::F(_)) || matches!(b.data, Data::F(_));
    let data = match op {
        "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" => Data::B(
            pairs
                .map(|(&i, &j)| {
                    let ord = if floats {
                        a.data.f(i).partial_cmp(&b.data.f(j))
                    } else {
                        Some(a.data.i(i).cmp(&b.data.i(j)))
                    };
                    use std::cmp::Ordering::*;
                    match (op, ord) {
                        (_, None) => false,
                        ("Equal", Some(o)) => o == Equal,
                        ("Greater", Some(o)) => o == Greater,
                        ("Less", Some(o)) => o == Less,
                        ("GreaterOrEqual", Some(o)) => o != Less,
                        (_, Some(o)) => o != Greater,
                    }
                })
                .collect(),
        ),
        "And" | "Or" | "Xor" => Data::B(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.b(i), b.data.b(j));
                    match op {
                        "And" => x && y,
                        "Or" => x || y,
                        _ => x != y,
                    }
                })
                .collect(),
        ),
        "Add" | "Sub" | "Mul" if floats => Data::F(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.f(i), b.data.f(j));
                    match op {
                        "Add" => x + y,
                        "Sub" => x - y,
                        _ => x * y,
                    }
                })
                .collect(),
        ),
        "Add" | "Sub" | "Mul" => Data::I(
            pairs
                .map(|(&i, &j)| {
                    let (x, y) = (a.data.i(i), b.data.i(j));
                    match op {
                        "Add" => x.wrapping_add(y),
                        "Sub" => x.wrapping_sub(y),
                        _ => x.wrapping_mul(y),
                    }
                })
                .collect(),
        ),
        _ => return None,
    };
    Val::new(shape, data)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The constant evaluator over a top-level graph.
struct ConstEval<'a> {
    graph: &'a GraphProto,
    vals: HashMap<String, Val>,
    shapes: HashMap<String, Vec<usize>>,
}

impl<'a> ConstEval<'a> {
    fn new(graph: &'a GraphProto, inputs: &InputSet) -> Self {
        let mut vals = HashMap::new();
        let mut shapes = HashMap::new();
        for t in &graph.initializer {
            let Some(name) = t.name.clone() else { continue };
            if t.dims.iter().all(|&d| d >= 0) {
                shapes.insert(name.clone(), t.dims.iter().map(|&d| d as usize).collect());
            }
            if let Some(v) = Val::from_proto(t) {
                vals.insert(name, v);
            }
        }
        for (name, t) in &inputs.tensors {
            shapes.insert(name.clone(), t.shape().to_vec());
            if t.len() <= SMALL_INPUT {
                if let Some(v) = Val::from_tensor(t) {
                    vals.insert(name.clone(), v);
                } else {
                    vals.remove(name);
                }
            } else {
                vals.remove(name);
            }
        }
        ConstEval {
            graph,
            vals,
            shapes,
        }
    }

    fn run(mut self) -> HashMap<String, Val> {
        for node in &self.graph.node {
            if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
                continue;
            }
            if let Some(outs) = self.eval(node) {
                for (name, v) in node.output.iter().zip(outs) {
                    if name.is_empty() {
                        continue;
                    }
                    self.shapes.insert(name.clone(), v.shape.clone());
                    self.vals.insert(name.clone(), v);
                }
            }
        }
        self.vals
    }

    fn input(&self, node: &NodeProto, i: usize) -> Option<&Val> {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| self.vals.get(n))
    }

    fn axes(&self, node: &NodeProto) -> Option<Option<Vec<i64>>> {
        if let Some(a) = attr_ints(node, "axes") {
            return Some(Some(a));
        }
        match node.input.get(1).filter(|n| !n.is_empty()) {
            Some(_) => Some(Some(self.input(node, 1)?.ints()?)),
            None => Some(None),
        }
    }

    fn eval(&self, node: &NodeProto) -> Option<Vec<Val>> {
        let op = node.op_type.as_deref()?;
        let one = |v: Option<Val>| v.map(|v| vec![v]);
        match op {
            "Constant" => one(self.constant(node)),
            "Identity" => one(self.input(node, 0).cloned()),
            "Cast" => one(self.input(node, 0)?.cast(attr_i(node, "to")? as i32)),
            "Not" => {
                let a = self.input(node, 0)?;
                one(Val::new(
                    a.shape.clone(),
                    Data::B((0..a.len()).map(|i| !a.data.b(i)).collect()),
                ))
            }
            "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or"
            | "Xor" | "Add" | "Sub" | "Mul" => {
                one(binary(self.input(node, 0)?, self.input(node, 1)?, op))
            }
            "Shape" => {
                let shape = self.shapes.get(node.input.first()?)?;
                let r = shape.len() as i64;
                let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                let start = clamp(attr_i(node, "start").unwrap_or(0));
                let end = clamp(attr_i(node, "end").unwrap_or(r));
                let dims: Vec<i64> = shape
                    .get(start..end.max(start))?
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                one(Val::new(vec![dims.len()], Data::I(dims)))
            }
            "Size" => {
                let shape = self.shapes.get(node.input.first()?)?;
                one(Val::new(vec![], Data::I(vec![numel(shape)? as i64])))
            }
            "Gather" => one(self.gather(node)),
            "Unsqueeze" => {
                let a = self.input(node, 0)?;
                let axes = self.axes(node)??;
                let r = a.shape.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&x| norm_axis(x, r))
                    .collect::<Option<_>>()?;
                axes.sort_unstable();
                let mut shape = a.shape.clone();
                for ax in axes {
                    if ax > shape.len() {
                        return None;
                    }
                    shape.insert(ax, 1);
                }
                one(a.reshaped(shape))
            }
            "Squeeze" => {
                let a = self.input(node, 0)?;
                let shape = match self.axes(node)? {
                    None => a.shape.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let axes: Vec<usize> = axes
                            .iter()
                            .map(|&x| norm_axis(x, a.shape.len()))
                            .collect::<Option<_>>()?;
                        if axes.iter().any(|&ax| a.shape[ax] != 1) {
                            return None;
                        }
                        a.shape
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, &d)| d)
                            .collect()
                    }
                };
                one(a.reshaped(shape))
            }
            "Reshape" => {
                let a = self.input(node, 0)?;
                let spec = self.input(node, 1)?.ints()?;
                let allowzero = attr_i(node, "allowzero").unwrap_or(0) != 0;
                let mut shape = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        0 if !allowzero => shape.push(*a.shape.get(i)?),
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            shape.push(1);
                        }
                        d if d >= 0 => shape.push(d as usize),
                        _ => return None,
                    }
                }
                if let Some(i) = infer {
                    let known: usize = numel(&shape)?;
                    if known == 0 || a.len() % known != 0 {
                        return None;
                    }
                    shape[i] = a.len() / known;
                }
                one(a.reshaped(shape))
            }
            "Concat" => {
                let parts: Vec<&Val> = (0..node.input.len())
                    .map(|i| self.input(node, i))
                    .collect::<Option<_>>()?;
                if parts.iter().any(|p| p.shape.len() != 1) {
                    return None;
                }
                norm_axis(attr_i(node, "axis").unwrap_or(0), 1)?;
                let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
                let d = Data::concat(&data)?;
                one(Val::new(vec![d.len()], d))
            }
            "ConstantOfShape" => {
                let shape: Vec<usize> = self
                    .input(node, 0)?
                    .ints()?
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<_>>()?;
                let n: usize = numel(&shape)?;
                if n > SMALL_CONST {
                    return None;
                }
                let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => Val::from_proto(t)?,
                    None => Val::new(vec![1], Data::F(vec![0.0]))?,
                };
                if value.len() != 1 {
                    return None;
                }
                let idx = vec![0usize; n];
                one(Val::new(shape, value.data.pick(&idx)))
            }
            _ => None,
        }
    }

    fn constant(&self, node: &NodeProto) -> Option<Val> {
        let a = node.attribute.first()?;
        match a.name.as_deref()? {
            "value" => Val::from_proto(a.t.as_ref()?),
            "value_float" => Val::new(vec![], Data::F(vec![a.f? as f64])),
            "value_int" => Val::new(vec![], Data::I(vec![a.i?])),
            "value_floats" if a.floats.len() <= SMALL_CONST => Val::new(
                vec![a.floats.len()],
                Data::F(a.floats.iter().map(|&x| x as f64).collect()),
            ),
            "value_ints" if a.ints.len() <= SMALL_CONST => {
                Val::new(vec![a.ints.len()], Data::I(a.ints.clone()))
            }
            _ => None,
        }
    }

    fn gather(&self, node: &NodeProto) -> Option<Val> {
        let data = self.input(node, 0)?;
        let idx = self.input(node, 1)?;
        let indices = idx.ints()?;
        let rank = data.shape.len();
        let axis = norm_axis(attr_i(node, "axis").unwrap_or(0), rank)?;
        let dim = data.shape[axis] as i64;
        let outer: usize = data.shape[..axis].iter().product();
        let inner: usize = data.shape[axis + 1..].iter().product();
        let mut picks = Vec::new();
        for o in 0..outer {
            for &k in &indices {
                let k = if k < 0 { k + dim } else { k };
                if !(0..dim).contains(&k) {
                    return None;
                }
                let base = (o * dim as usize + k as usize) * inner;
                picks.extend(base..base + inner);
            }
        }
        let mut shape = data.shape[..axis].to_vec();
        shape.extend(&idx.shape);
        shape.extend(&data.shape[axis + 1..]);
        Val::new(shape, data.data.pick(&picks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::attribute_proto::AttributeType;
    use crate::onnx::proto::tensor_proto::DataType;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{}", outputs[0])),
            ..Default::default()
        }
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            i: Some(v),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }
    }

    fn const_ints(out: &str, v: &[i64], dims: &[i64]) -> NodeProto {
        let mut n = node("Constant", &[], &[out]);
        n.attribute.push(AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(TensorProto {
                dims: dims.to_vec(),
                data_type: Some(DataType::Int64 as i32),
                int64_data: v.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        });
        n
    }

    #[test]
    fn evaluates_shape_gather_equal() {
        let mut gather = node("Gather", &["shape", "zero"], &["dim0"]);
        gather.attribute.push(int_attr("axis", 0));
        let graph = GraphProto {
            node: vec![
                node("Shape", &["x"], &["shape"]),
                const_ints("zero", &[-1], &[]),
                gather,
                const_ints("four", &[4], &[]),
                node("Equal", &["dim0", "four"], &["eq"]),
                node("Not", &["eq"], &["neq"]),
                {
                    let mut c = node("Cast", &["dim0"], &["dimf"]);
                    c.attribute.push(int_attr("to", DataType::Float as i64));
                    c
                },
                node("Unsqueeze", &["dim0", "axes"], &["u"]),
                const_ints("axes", &[0], &[1]),
            ],
            ..Default::default()
        };
        let inputs = InputSet::new(
            "t",
            vec![("x".into(), Tensor::zero::<f32>(&[2, 4]).unwrap())],
        );
        let vals = ConstEval::new(&graph, &inputs).run();
        assert_eq!(vals["dim0"].ints(), Some(vec![4]));
        assert_eq!(vals["eq"].truth(), Some(true));
        assert_eq!(vals["neq"].truth(), Some(false));
        assert_eq!(vals["dimf"].data, Data::F(vec![4.0]));
        // Unsqueeze before its axes constant: unknown, and no panic.
        assert!(!vals.contains_key("u"));
    }

    #[test]
    fn broadcasting_index() {
        assert_eq!(broadcast_shape(&[2, 1], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_index(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_shape(&[2], &[3]), None);
    }
}
