//! Preparing a model so that tract can run it on a given input set.
//!
//! tract-onnx 0.23 stumbles on things onnxruntime forgives (see `../shared/README.md`): declared
//! output shapes that are wrong, `value_info` that keeps symbolic dims which then fail to unify
//! with the concrete ones, and `If` nodes whose untaken branch does not type-check for the given
//! inputs. [`prepare`] returns a copy of the model with these fixed for one input set:
//!
//! - sparse initializers (and `Constant`'s `sparse_value`), which tract does not read, become
//!   the dense tensors they stand for, bit for bit ([`crate::onnx::sparse::densify_graph`]);
//! - graph inputs get the exact element types and shapes of the given tensors;
//! - declared shapes of the graph outputs are cleared;
//! - `value_info` is dropped everywhere (tract re-infers every intermediate shape);
//! - every top-level `DequantizeLinear` tract 0.23 cannot run (int4/uint4 codes or
//!   `block_size`, opset 21) is replaced by the float initializer it computes
//!   ([`Prepared::materialised`], see `dequantize.rs`);
//! - every top-level `If` whose condition can be computed from the given inputs is replaced by the
//!   nodes of the branch it takes (repeatedly, so `If`s inside a taken branch are decided too).
//!
//! A condition is computed by a small constant evaluator (initializers, `Constant` nodes, the
//! given input tensors of at most [`SMALL_INPUT`] elements, the shapes of inputs, and simple ops
//! on these: comparisons, logic, `Cast`, `Shape`, `Size`, `Gather`, `Squeeze`, `Unsqueeze`,
//! `Reshape`, `Concat`, `ConstantOfShape`, `Add`/`Sub`/`Mul`, ...), else by running in tract the
//! part of the graph the condition depends on (when that part holds no undecided `If`). An `If`
//! that neither decides is left for tract to analyse, and to report on.

mod const_eval;
mod decide;
mod dequantize;
mod names;

use std::collections::HashSet;

use super::inputs::{
    datum_type_of, declared_elem_type, declared_shape, onnx_type_of, DeclaredDim, InputSet,
};
use crate::error::{Error, Result};
use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use crate::onnx::proto::type_proto::{self, Value as TypeValue};
use crate::onnx::proto::{GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::onnx::visit::subgraphs_mut;
use decide::decide_ifs;
use names::{is_if, node_label};

/// Given input tensors with at most this many elements are known to the constant evaluator.
pub const SMALL_INPUT: usize = 16;

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
    /// One line per `DequantizeLinear` tract cannot run that was replaced by the float weight it
    /// computes (int4/uint4 codes or `block_size`): the graph tract ran is this equivalent one.
    pub materialised: Vec<String>,
}

/// The `DequantizeLinear` nodes of `model` that [`prepare`] replaces by the float weight they
/// compute because tract 0.23 runs neither int4/uint4 codes nor `block_size` (their labels;
/// empty when tract runs the model as written). Cheap: nothing is computed.
pub fn equivalent_graph_nodes(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .map(dequantize::pending)
        .unwrap_or_default()
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
    crate::onnx::sparse::densify_graph(graph)?;
    bind_inputs(graph, inputs)?;
    for out in &mut graph.output {
        clear_shape(out);
    }
    drop_value_info(graph);
    let materialised = dequantize::materialise_dequantize(graph)?;
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
        materialised,
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
        subgraphs_mut(node).for_each(drop_value_info);
    }
}
