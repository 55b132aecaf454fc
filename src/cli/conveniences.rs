//! The main job's everyday conveniences: `--dtype fp16`, `--input-shapes`, `--outputs` /
//! `--cut-inputs`, `--skip` and `--infer-shapes`. Each is a small step before or after the
//! rewrite; the float16 conversion itself is a rule ([`crate::rules::to_fp16`]).

use std::collections::{HashMap, HashSet};

use clap::Args;

use crate::error::{Error, Result};
use crate::ir::facts::Dim;
use crate::ir::{Model, NodeKind, ValueRef};
use crate::onnx::proto::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
use crate::onnx::proto::{type_proto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::rewrite::{self, registry, Rule};

/// Flags of the main job that change the model's interface, types or rule selection.
#[derive(Debug, Args, Clone, Default)]
pub struct ConvenienceArgs {
    /// Convert the model to `fp16`: float16 weights and arithmetic, float32 kept where an op
    /// needs it; graph inputs and outputs keep their type (lossy, judged by --budget).
    #[arg(long, value_name = "fp16")]
    pub dtype: Option<String>,
    /// Write input shapes into the model: OUT declares these graph inputs with these sizes,
    /// e.g. `x:1,3,224,224` or `x:1,64,y:1,10` (repeatable); the input's symbolic dims become
    /// these sizes everywhere the model declares them, and verification runs at them. (To run
    /// verification at a shape without changing the model: --input-shape NAME=DIMS.)
    #[arg(long, value_name = "NAME:DIMS")]
    pub input_shapes: Vec<String>,
    /// Cut the graph: these values become its outputs (comma-separated, repeatable); what
    /// only the old outputs needed is removed.
    #[arg(long, value_name = "NAME,...", visible_alias = "cut-outputs")]
    pub outputs: Vec<String>,
    /// Cut the graph: these values become its inputs (comma-separated, repeatable); what
    /// computed them is removed, and so are graph inputs nothing reads any more.
    #[arg(long, value_name = "NAME,...")]
    pub cut_inputs: Vec<String>,
    /// Rules, codes or groups taken out of the selection (comma-separated, repeatable).
    #[arg(long, value_name = "RULE,...")]
    pub skip: Vec<String>,
    /// Write the inferred type and shape of every computed value into `value_info`.
    #[arg(long)]
    pub infer_shapes: bool,
}

impl ConvenienceArgs {
    /// `--dtype`: whether to convert to float16.
    pub fn fp16(&self) -> Result<bool> {
        match self.dtype.as_deref() {
            None | Some("fp32") | Some("float32") => Ok(false),
            Some("fp16") | Some("float16") => Ok(true),
            Some(other) => Err(Error::Usage(format!(
                "unknown --dtype `{other}`; valid: fp16, fp32"
            ))),
        }
    }

    /// Whether the model is changed before the rewrite.
    pub fn prepares(&self) -> bool {
        !self.input_shapes.is_empty() || !self.outputs.is_empty() || !self.cut_inputs.is_empty()
    }
}

fn words(specs: &[String]) -> Vec<String> {
    specs
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Applies `--skip` and `--dtype` to the selected `rules` (`selection` is the `--rules` value,
/// for messages): a skipped word must name a selected rule, and `--dtype fp16` adds `to-fp16`.
pub fn select_rules(
    rules: &mut Vec<&dyn Rule>,
    args: &ConvenienceArgs,
    selection: &str,
) -> Result<()> {
    if args.fp16()? {
        let to_fp16: &dyn Rule = &crate::rules::to_fp16::ToFp16;
        if !args.skip.is_empty()
            && words(&args.skip).iter().any(|w| {
                registry::select(w)
                    .is_ok_and(|v| v.iter().any(|r| r.meta().code == to_fp16.meta().code))
            })
        {
            return Err(Error::Usage(
                "--dtype fp16 runs `to-fp16`, which --skip takes out".into(),
            ));
        }
        if !rules.iter().any(|r| r.meta().code == to_fp16.meta().code) {
            rules.push(to_fp16);
        }
    }
    for word in words(&args.skip) {
        let named = registry::select(&word).map_err(|e| match e {
            Error::Usage(m) => Error::Usage(format!("--skip: {m}")),
            e => e,
        })?;
        let before = rules.len();
        rules.retain(|r| !named.iter().any(|n| n.meta().code == r.meta().code));
        if rules.len() == before {
            return Err(Error::Usage(format!(
                "--skip `{word}`: `--rules {selection}` does not run it"
            )));
        }
    }
    Ok(())
}

/// Refuses `--dtype fp16` in a `--budget`/`--target-size` search, which chooses per layer among
/// the lossy rules' options and has no place for a conversion of the whole graph.
pub fn check_search(args: &ConvenienceArgs, search: bool) -> Result<()> {
    if search && args.fp16()? {
        return Err(Error::Usage(
            "--dtype fp16 converts the whole graph; it cannot be combined with a --budget search or --target-size (give a --lowrank-*/--quantize-*/--prune-ratio flag, or run the conversion separately)"
                .into(),
        ));
    }
    Ok(())
}

/// Applies `--outputs`/`--cut-inputs`, then `--input-shapes`, to `model` before the rewrite.
/// Returns whether anything changed.
pub fn prepare(model: &mut ModelProto, args: &ConvenienceArgs) -> Result<bool> {
    let outputs = words(&args.outputs);
    let inputs = words(&args.cut_inputs);
    if !outputs.is_empty() || !inputs.is_empty() {
        cut(model, &outputs, &inputs)?;
    }
    if !args.input_shapes.is_empty() {
        let shapes = parse_input_shapes(&args.input_shapes)?;
        fix_input_shapes(model, &shapes)?;
    }
    Ok(args.prepares())
}

/// After the rewrite: `--infer-shapes`. Returns how many `value_info` entries were added.
pub fn finish(model: &mut ModelProto, args: &ConvenienceArgs) -> Result<usize> {
    if args.infer_shapes {
        infer_shapes(model)
    } else {
        Ok(0)
    }
}

/// Parses `--input-shapes` values: `name:d1,d2,...`, several per value separated by commas
/// (a word with a colon starts the next input) or whitespace.
pub fn parse_input_shapes(specs: &[String]) -> Result<Vec<(String, Vec<i64>)>> {
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for word in specs
        .iter()
        .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|w| !w.is_empty())
    {
        let dim = match word.rsplit_once(':') {
            Some((name, dim)) => {
                if name.is_empty() {
                    return Err(Error::Usage(format!(
                        "--input-shapes `{word}`: the input name is empty (expected NAME:DIMS, e.g. `x:1,3,224,224`)"
                    )));
                }
                if out.iter().any(|(n, _)| n == name) {
                    return Err(Error::Usage(format!(
                        "--input-shapes gives input `{name}` twice"
                    )));
                }
                out.push((name.to_string(), Vec::new()));
                dim
            }
            None => word,
        };
        let Some((name, dims)) = out.last_mut() else {
            let hint = if word.contains('=') {
                " (`NAME=DIMS` is the form of --input-shape, which only binds a shape for verification)"
            } else {
                ""
            };
            return Err(Error::Usage(format!(
                "--input-shapes `{word}`: expected NAME:DIMS, e.g. `x:1,3,224,224`{hint}"
            )));
        };
        match dim.parse::<i64>() {
            Ok(d) if d > 0 => dims.push(d),
            _ => {
                return Err(Error::Usage(format!(
                    "--input-shapes: dim `{dim}` of input `{name}` is not a size ≥ 1"
                )))
            }
        }
    }
    Ok(out)
}

/// Refuses `--input-shape` (the verification's binding, `bound`) naming an input that
/// `--input-shapes` writes into the model at another shape: the model would be written at one
/// shape and verified at another, which cannot both hold.
pub fn check_against_verification(
    args: &ConvenienceArgs,
    bound: &[(String, Vec<usize>)],
) -> Result<()> {
    if args.input_shapes.is_empty() || bound.is_empty() {
        return Ok(());
    }
    let fixed = parse_input_shapes(&args.input_shapes)?;
    for (name, dims) in &fixed {
        let Some((_, shape)) = bound.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if shape.len() != dims.len() || shape.iter().zip(dims).any(|(&a, &b)| a as i64 != b) {
            let join = |d: Vec<String>| d.join(",");
            return Err(Error::Usage(format!(
                "`--input-shape {name}={}` (the shape verification runs at) contradicts \
                 `--input-shapes {name}:{}` (the shape written into the model); give one: \
                 --input-shapes alone also verifies at the shape it writes",
                join(shape.iter().map(|d| d.to_string()).collect()),
                join(dims.iter().map(|d| d.to_string()).collect()),
            )));
        }
    }
    Ok(())
}

fn tensor_dims(vi: &mut ValueInfoProto) -> Option<&mut TensorShapeProto> {
    match vi.r#type.as_mut()?.value.as_mut()? {
        type_proto::Value::TensorType(t) => Some(t.shape.get_or_insert_with(Default::default)),
        _ => None,
    }
}

/// Writes `shapes` into the declared types of the graph inputs they name; a `dim_param` fixed
/// this way is fixed wherever the graph declares it (inputs, outputs, `value_info`).
pub fn fix_input_shapes(model: &mut ModelProto, shapes: &[(String, Vec<i64>)]) -> Result<()> {
    let graph = model.graph.get_or_insert_with(Default::default);
    let initializers: HashSet<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let names: Vec<String> = graph
        .input
        .iter()
        .filter_map(|i| i.name.clone())
        .filter(|n| !initializers.contains(n.as_str()))
        .collect();
    let mut params: HashMap<String, i64> = HashMap::new();
    for (name, dims) in shapes {
        let Some(vi) = graph
            .input
            .iter_mut()
            .find(|i| i.name.as_deref() == Some(name.as_str()))
        else {
            return Err(Error::Usage(format!(
                "--input-shapes: the model has no input `{name}` (inputs: {})",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let Some(shape) = tensor_dims(vi) else {
            return Err(Error::Usage(format!(
                "--input-shapes: input `{name}` is not a tensor"
            )));
        };
        if !shape.dim.is_empty() && shape.dim.len() != dims.len() {
            return Err(Error::Usage(format!(
                "--input-shapes: input `{name}` has rank {}, the shape given has {} dims",
                shape.dim.len(),
                dims.len()
            )));
        }
        if shape.dim.is_empty() {
            shape.dim = vec![Dimension::default(); dims.len()];
        }
        for (axis, (d, &size)) in shape.dim.iter_mut().zip(dims).enumerate() {
            match &d.value {
                Some(DimValue::DimValue(v)) if *v > 0 && *v != size => {
                    return Err(Error::Usage(format!(
                        "--input-shapes: dim {axis} of input `{name}` is fixed at {v}, not {size}"
                    )))
                }
                Some(DimValue::DimParam(p)) if !p.is_empty() => {
                    if let Some(old) = params.insert(p.clone(), size) {
                        if old != size {
                            return Err(Error::Usage(format!(
                                "--input-shapes: dim `{p}` is given as both {old} and {size}"
                            )));
                        }
                    }
                }
                _ => {}
            }
            d.value = Some(DimValue::DimValue(size));
        }
    }
    if !params.is_empty() {
        for vi in graph
            .input
            .iter_mut()
            .chain(graph.output.iter_mut())
            .chain(graph.value_info.iter_mut())
        {
            let Some(type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                continue;
            };
            for d in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
                if let Some(DimValue::DimParam(p)) = &d.value {
                    if let Some(&size) = params.get(p) {
                        d.value = Some(DimValue::DimValue(size));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The declared or inferred type of value `v` (named `name`) as a `ValueInfoProto`; `None` when
/// its element type is not known.
fn value_info_of(model: &Model, v: ValueRef, name: &str) -> Option<ValueInfoProto> {
    let g = &model.graph;
    if let Some(vi) = g
        .outputs()
        .iter()
        .map(|(_, i)| i)
        .chain(g.value_infos())
        .find(|i| i.name.as_deref() == Some(name) && i.r#type.is_some())
    {
        return Some(vi.clone());
    }
    let facts = g.facts();
    let fact = facts.get(v);
    let elem = fact.dtype?;
    let shape = fact.shape.as_ref().map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::K(k) => Some(DimValue::DimValue(*k)),
                    Dim::S(s) => facts
                        .symbols()
                        .name(*s)
                        .map(|n| DimValue::DimParam(n.to_string())),
                },
                ..Default::default()
            })
            .collect(),
    });
    Some(ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `--outputs` / `--cut-inputs`: the named values become the graph's outputs / inputs; what
/// nothing reads any more goes through `remove-dead`, and graph inputs nothing reads go too
/// when inputs were cut.
pub fn cut(proto: &mut ModelProto, outputs: &[String], inputs: &[String]) -> Result<()> {
    let model = Model::from_proto(proto.clone())?;
    let g = &model.graph;
    let find = |flag: &str, name: &str| -> Result<ValueRef> {
        g.producer(name)
            .ok_or_else(|| Error::Usage(format!("{flag}: the model has no value `{name}`")))
    };
    let mut new_outputs = Vec::with_capacity(outputs.len());
    for name in outputs {
        let v = find("--outputs", name)?;
        let vi = value_info_of(&model, v, name).ok_or_else(|| {
            Error::Usage(format!(
                "--outputs: the type of `{name}` is not known (no declaration, and inference does not reach it)"
            ))
        })?;
        new_outputs.push(vi);
    }
    let mut new_inputs = Vec::with_capacity(inputs.len());
    for name in inputs {
        let v = find("--cut-inputs", name)?;
        match &g.node(v.node).kind {
            NodeKind::Input { .. } => {
                return Err(Error::Usage(format!(
                    "--cut-inputs: `{name}` is already a graph input"
                )))
            }
            NodeKind::Initializer(_) | NodeKind::SparseInitializer(_) => {
                return Err(Error::Usage(format!(
                    "--cut-inputs: `{name}` is a weight, not a computed value"
                )))
            }
            NodeKind::Op(_) if g.const_tensor(v).is_some() => {
                return Err(Error::Usage(format!(
                    "--cut-inputs: `{name}` is a constant, not a computed value"
                )))
            }
            NodeKind::Op(_) => {}
        }
        let vi = value_info_of(&model, v, name).ok_or_else(|| {
            Error::Usage(format!(
                "--cut-inputs: the type of `{name}` is not known (no declaration, and inference does not reach it)"
            ))
        })?;
        new_inputs.push((vi, g.fresh_name(&format!("{name}__cut"))));
    }
    drop(model);
    let graph = proto.graph.get_or_insert_with(Default::default);
    if !new_outputs.is_empty() {
        graph.output = new_outputs;
    }
    let cut_names: HashSet<String> = new_inputs
        .iter()
        .filter_map(|(vi, _)| vi.name.clone())
        .collect();
    for (vi, renamed) in new_inputs {
        let name = vi.name.clone().unwrap_or_default();
        // The old producer writes a name nothing reads: remove-dead takes it.
        for n in graph.node.iter_mut() {
            for o in n.output.iter_mut().filter(|o| **o == name) {
                *o = renamed.clone();
            }
        }
        graph
            .value_info
            .retain(|i| i.name.as_deref() != Some(&name));
        graph.input.push(vi);
    }
    let mut model = Model::from_proto(std::mem::take(proto))?;
    let remove_dead: &dyn Rule = &crate::rules::remove_dead::RemoveDead;
    rewrite::run(
        &mut model,
        &[remove_dead],
        &rewrite::Config::default(),
        &rewrite::DriverOptions::default(),
    )?;
    if !cut_names.is_empty() {
        let unread: Vec<_> = model
            .graph
            .inputs()
            .into_iter()
            .filter(|&id| {
                let n = model.graph.node(id);
                let name = n.output_name(0).unwrap_or("");
                !cut_names.contains(name) && !model.graph.is_used(ValueRef { node: id, slot: 0 })
            })
            .collect();
        for id in unread {
            model.graph.remove_node(id);
        }
    }
    *proto = model.to_proto();
    Ok(())
}

/// `--infer-shapes`: a `value_info` entry for every computed value of the top-level graph that
/// has none (and is not a graph output), with its inferred element type and, where the rank is
/// known, its dims (known sizes, named symbols, or unknown). Returns how many were added.
pub fn infer_shapes(proto: &mut ModelProto) -> Result<usize> {
    let model = Model::from_proto(proto.clone())?;
    let g = &model.graph;
    let declared: HashSet<&str> = g
        .value_infos()
        .iter()
        .chain(g.outputs().iter().map(|(_, i)| i))
        .filter_map(|i| i.name.as_deref())
        .collect();
    let mut added = Vec::new();
    for id in g.topo_order() {
        let node = g.node(id);
        if node.op().is_none() {
            continue;
        }
        for slot in 0..node.num_outputs() {
            let Some(name) = node.output_name(slot).filter(|n| !n.is_empty()) else {
                continue;
            };
            if declared.contains(name) {
                continue;
            }
            if let Some(vi) = value_info_of(&model, ValueRef { node: id, slot }, name) {
                added.push(vi);
            }
        }
    }
    let n = added.len();
    proto
        .graph
        .get_or_insert_with(Default::default)
        .value_info
        .extend(added);
    Ok(n)
}
