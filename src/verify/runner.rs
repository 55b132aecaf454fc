//! Running a model in tract on input sets.
//!
//! Models go to tract as bytes (`model_for_read`), after [`super::prepare::prepare`].
//! The typed model is optimized; when optimization or the optimized plan fails, the decluttered
//! and then the plain typed model are tried. Every tract call runs under `catch_unwind`, so a
//! tract panic becomes an [`Error::Tract`] too.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use prost::Message;
use tract_onnx::prelude::*;

use super::inputs::{datum_type_of, InputSet};
use super::prepare::{prepare, SMALL_INPUT};
use crate::error::{Error, Result};
use crate::onnx::proto::type_proto::Value as TypeValue;
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::onnx::visit::subgraphs;

/// Longest tract error chain kept in a message (tract can quote whole node protos).
const MAX_REASON: usize = 600;

/// Outputs of one run, named after the graph outputs, in graph order.
pub type Outputs = Vec<(String, Tensor)>;

/// Prepares `model` for `inputs` and runs it in tract; `label` names the model in errors.
pub fn run(model: &ModelProto, inputs: &InputSet, label: &str) -> Result<Outputs> {
    let mut out = run_many(model, std::slice::from_ref(inputs), label)?;
    out.pop().ok_or_else(|| Error::Tract {
        model: label.to_string(),
        reason: "no outputs".into(),
    })
}

/// Runs `model` on every input set; sets with the same input shapes, element types and small
/// input values share one prepared and compiled plan.
pub fn run_many(model: &ModelProto, sets: &[InputSet], label: &str) -> Result<Vec<Outputs>> {
    let mut all = Vec::with_capacity(sets.len());
    run_each(model, sets, label, |_, outputs| {
        all.push(outputs);
        Ok(())
    })?;
    Ok(all)
}

/// [`run_many`], handing each set's outputs to `f` (with the set's index) as soon as they are
/// computed, so that only one set's outputs are held at a time.
pub fn run_each(
    model: &ModelProto,
    sets: &[InputSet],
    label: &str,
    mut f: impl FnMut(usize, Outputs) -> Result<()>,
) -> Result<()> {
    let mut plans: HashMap<String, Compiled> = HashMap::new();
    for (index, set) in sets.iter().enumerate() {
        let key = signature(set);
        let outputs = match plans.get(&key) {
            Some(plan) => plan.run(set, label)?,
            None => {
                let prepared = prepare(model, set)?;
                let (plan, outputs) = compile_and_run(&prepared.model, set, label)?;
                plans.insert(key, plan);
                outputs
            }
        };
        f(index, outputs)?;
    }
    Ok(())
}

/// Runs a model that is already prepared for `inputs` (see [`prepare`]) in tract.
pub fn run_prepared(model: &ModelProto, inputs: &InputSet, label: &str) -> Result<Outputs> {
    compile_and_run(model, inputs, label).map(|(_, out)| out)
}

/// What decides whether two input sets can share a plan: names, types, shapes, and the values
/// of the small inputs (they may decide `If` nodes).
pub(crate) fn signature(set: &InputSet) -> String {
    let mut s = String::new();
    for (name, t) in &set.tensors {
        s.push_str(&format!("{name}:{:?}{:?}", t.datum_type(), t.shape()));
        if t.len() <= SMALL_INPUT {
            if let Ok(dump) = t.dump(true) {
                s.push('=');
                s.push_str(&dump);
            }
        }
        s.push(';');
    }
    s
}

/// A compiled plan plus the order in which it takes its inputs.
struct Compiled {
    plan: Arc<TypedRunnableModel>,
    input_order: Vec<String>,
    output_names: Vec<String>,
}

impl Compiled {
    fn run(&self, set: &InputSet, label: &str) -> Result<Outputs> {
        let inputs = ordered_inputs(&self.input_order, set, label)?;
        let plan = self.plan.clone();
        let out = guard(label, move || plan.run(inputs))?;
        name_outputs(out, &self.output_names, label)
    }
}

fn ordered_inputs(order: &[String], set: &InputSet, label: &str) -> Result<TVec<TValue>> {
    order
        .iter()
        .map(|n| {
            set.get(n)
                .map(|t| t.clone().into_tvalue())
                .ok_or_else(|| Error::Tract {
                    model: label.to_string(),
                    reason: format!("no value for input `{n}`"),
                })
        })
        .collect()
}

fn name_outputs(out: TVec<TValue>, names: &[String], label: &str) -> Result<Outputs> {
    if out.len() != names.len() {
        return Err(Error::Tract {
            model: label.to_string(),
            reason: format!(
                "tract gave {} outputs for {} graph outputs",
                out.len(),
                names.len()
            ),
        });
    }
    names
        .iter()
        .cloned()
        .zip(out)
        .map(|(n, v)| onnx_typed(v.into_tensor(), label).map(|t| (n, t)))
        .collect()
}

/// tract computes `Shape` and what derives from it as `TDim`, a type ONNX does not have: the
/// model's output is `int64`, and is compared as such (a folded shape is an `int64` constant).
fn onnx_typed(t: Tensor, label: &str) -> Result<Tensor> {
    if t.datum_type() != DatumType::TDim {
        return Ok(t);
    }
    t.cast_to::<i64>()
        .map(|c| c.into_owned())
        .map_err(|e| Error::Tract {
            model: label.to_string(),
            reason: format!("a symbolic output dimension: {e}"),
        })
}

/// Runs `f`, turning a tract error or a panic into [`Error::Tract`] for `label`.
fn guard<T>(label: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Tract {
            model: label.to_string(),
            reason: chain_line(&e),
        }),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Tract {
                model: label.to_string(),
                reason: format!("tract panicked: {}", one_line(&msg)),
            })
        }
    }
}

/// The whole error chain of a tract error on one line: `outer: ...: root cause`.
pub fn chain_line(e: &TractError) -> String {
    one_line(&format!("{e:#}"))
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > MAX_REASON {
        let cut: String = s.chars().take(MAX_REASON).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Loads `model` in tract with the input facts of `inputs`, then analyses it into a typed model.
fn load_typed(model: &ModelProto, inputs: &InputSet) -> TractResult<(TypedModel, Vec<String>)> {
    let bytes = model.encode_to_vec();
    let mut im = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true)
        .model_for_read(&mut &bytes[..])?;
    let mut order = Vec::new();
    for (i, outlet) in im.input_outlets()?.to_vec().into_iter().enumerate() {
        let name = im.node(outlet.node).name.clone();
        let t = inputs
            .get(&name)
            .ok_or_else(|| TractError::msg(format!("no value for input `{name}`")))?;
        im.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))?;
        order.push(name);
    }
    for i in 0..im.output_outlets()?.len() {
        im.set_output_fact(i, InferenceFact::default())?;
    }
    Ok((im.into_typed()?, order))
}

fn output_names(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .map(|g| {
            g.output
                .iter()
                .map(|o| o.name.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Loads, compiles and runs; tries the optimized, decluttered and plain typed model in turn.
fn compile_and_run(model: &ModelProto, set: &InputSet, label: &str) -> Result<(Compiled, Outputs)> {
    let names = output_names(model);
    let loaded = guard(label, || load_typed(model, set));
    let (typed, order) = match loaded {
        Ok(v) => v,
        Err(e) => return Err(explain(model, e)),
    };
    let mut last_err = None;
    for stage in ["optimized", "decluttered", "typed"] {
        let t = typed.clone();
        let attempt = guard(label, move || {
            let m = match stage {
                "optimized" => t.into_optimized()?,
                "decluttered" => t.into_decluttered()?,
                _ => t,
            };
            m.into_runnable()
        })
        .and_then(|plan| {
            let compiled = Compiled {
                plan,
                input_order: order.clone(),
                output_names: names.clone(),
            };
            let out = compiled.run(set, label)?;
            Ok((compiled, out))
        });
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) => last_err = Some(e),
        }
    }
    Err(explain(
        model,
        last_err.unwrap_or_else(|| Error::Tract {
            model: label.to_string(),
            reason: "no plan".into(),
        }),
    ))
}

/// Computes the outputs of `model` on `inputs`, from tract's constant folding when it knows them
/// without running, else by running the decluttered model. Used to decide `If` conditions.
pub(crate) fn fold_or_run(
    model: &ModelProto,
    inputs: &InputSet,
    label: &str,
) -> Result<Vec<Tensor>> {
    guard(label, || {
        let (typed, order) = load_typed(model, inputs)?;
        let typed = typed.into_decluttered()?;
        let konst: Option<Vec<Tensor>> = (0..typed.output_outlets()?.len())
            .map(|i| {
                typed
                    .output_fact(i)
                    .ok()
                    .and_then(|f| f.konst.as_ref().map(|k| (**k).clone()))
            })
            .collect();
        if let Some(k) = konst {
            return Ok(k);
        }
        let tv: TVec<TValue> = order
            .iter()
            .map(|n| {
                inputs
                    .get(n)
                    .map(|t| t.clone().into_tvalue())
                    .ok_or_else(|| TractError::msg(format!("no value for input `{n}`")))
            })
            .collect::<TractResult<_>>()?;
        let out = typed.into_runnable()?.run(tv)?;
        Ok(out.into_iter().map(|v| v.into_tensor()).collect())
    })
}

/// Puts what tract lacks in front of a tract error: ops tract has no implementation for, and
/// element types it does not know.
fn explain(model: &ModelProto, err: Error) -> Error {
    let Error::Tract {
        model: label,
        reason,
    } = err
    else {
        return err;
    };
    let mut lacks = Vec::new();
    if let Some(g) = model.graph.as_ref() {
        let register = tract_onnx::onnx().op_register;
        missing_ops(g, &register.0, &mut lacks);
        missing_types(g, &mut lacks);
    }
    lacks.dedup();
    lacks.truncate(5);
    let reason = if lacks.is_empty() {
        reason
    } else {
        format!("{}; {reason}", lacks.join("; "))
    };
    let undecided: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| {
            g.node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some("If"))
                .map(|n| n.name.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let hint = match undecided.first() {
        Some(n) => format!(
            " (the inputs do not decide `If` `{n}`: give the inputs it reads real values, e.g. `--input sr=16000`, or real `--inputs`)"
        ),
        None => " (try real inputs with `--inputs`, other sizes with `--input-shape NAME=DIMS`, or values with `--input NAME=VALUE`)".into(),
    };
    let reason = reason + &hint;
    Error::Tract {
        model: label,
        reason,
    }
}

fn missing_ops<V>(g: &GraphProto, register: &HashMap<String, V>, out: &mut Vec<String>) {
    for n in &g.node {
        let op = n.op_type.as_deref().unwrap_or("");
        if !register.contains_key(op) {
            let name = n
                .name
                .as_deref()
                .filter(|s| !s.is_empty())
                .or(n.output.first().map(|s| s.as_str()))
                .unwrap_or("");
            out.push(format!("unsupported op `{op}` (node `{name}`)"));
        }
        for sg in subgraphs(n) {
            missing_ops(sg, register, out);
        }
    }
}

fn missing_types(g: &GraphProto, out: &mut Vec<String>) {
    fn check(out: &mut Vec<String>, dt: Option<i32>, what: &str, name: &str) {
        if let Some(dt) = dt {
            if datum_type_of(dt, name).is_err() {
                out.push(format!(
                    "element type `{}` of {what} `{name}` is not supported by tract",
                    crate::onnx::dtype::name(dt)
                ));
            }
        }
    }
    for t in &g.initializer {
        check(
            out,
            t.data_type,
            "initializer",
            t.name.as_deref().unwrap_or(""),
        );
    }
    for vi in g.input.iter().chain(g.output.iter()) {
        if let Some(TypeValue::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            check(
                out,
                t.elem_type,
                "graph value",
                vi.name.as_deref().unwrap_or(""),
            );
        }
    }
    for n in &g.node {
        let name = n.name.as_deref().unwrap_or("");
        let is_cast = matches!(n.op_type.as_deref(), Some("Cast"));
        for a in &n.attribute {
            if let Some(t) = &a.t {
                check(out, t.data_type, "the tensor of node", name);
            }
            if let Some(to) = a.i.filter(|_| is_cast && a.name.as_deref() == Some("to")) {
                check(out, Some(to as i32), "the cast of node", name);
            }
        }
        for sg in subgraphs(n) {
            missing_types(sg, out);
        }
    }
}

/// A model prepared and compiled by tract for one input signature (names, element types,
/// shapes), to be run again and again: `bench` times [`Plan::run`] alone, not the compile.
pub struct Plan {
    compiled: Compiled,
    label: String,
}

impl Plan {
    /// Prepares `model` for `inputs` and compiles it (optimized, else decluttered, else plain
    /// typed, as [`run`] does); returns the plan and the outputs of its first run on `inputs`.
    pub fn compile(model: &ModelProto, inputs: &InputSet, label: &str) -> Result<(Plan, Outputs)> {
        let prepared = prepare(model, inputs)?;
        let (compiled, outputs) = compile_and_run(&prepared.model, inputs, label)?;
        let plan = Plan {
            compiled,
            label: label.to_string(),
        };
        Ok((plan, outputs))
    }

    /// Runs the compiled plan on `inputs`, which must have the signature it was compiled for.
    pub fn run(&self, inputs: &InputSet) -> Result<Outputs> {
        self.compiled.run(inputs, &self.label)
    }
}
