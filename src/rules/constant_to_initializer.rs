//! `C002 constant-to-initializer`: turns top-level `Constant` nodes into initializers.
//!
//! **What:** a `Constant` whose value is a dense tensor (`value`) or a number or list
//! (`value_float(s)`, `value_int(s)`) becomes an initializer of the same name and contents.
//! **Why:** some exporters (paddle2onnx) write every weight as a `Constant` node: hundreds of nodes
//! that runtimes must schedule, and that weight-level tools (quantizers, sharing) do not see.
//! **Example:** `w = Constant(value=<f32 [8,3,3,3]>); y = Conv(x, w)` → initializer `w`,
//! `y = Conv(x, w)`.
//! **Exact:** yes, bit for bit; the value keeps its name, dtype and dims. `Constant`s inside
//! subgraphs are left alone (only the top level is IR), and so are string and sparse values.

use crate::error::{Error, Result};
use crate::ir::{Model, ValueRef};
use crate::onnx::proto::{tensor_proto::DataType, NodeProto, TensorProto};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::is_op;

/// See the module docs.
pub struct ConstantToInitializer;

/// The tensor a `Constant` node produces, if it is dense and numeric.
pub(crate) fn constant_value(p: &NodeProto) -> std::result::Result<TensorProto, &'static str> {
    let a = p.attribute.first().ok_or("Constant without a value")?;
    if p.attribute.len() != 1 {
        return Err("Constant with several attributes");
    }
    let name = a.name.as_deref().unwrap_or("");
    let mut t = match name {
        "value" => {
            let t = a.t.clone().ok_or("`value` holds no tensor")?;
            if t.data_type == Some(DataType::String as i32) {
                return Err("string tensors stay Constant nodes");
            }
            if t.data_location == Some(1) || !t.external_data.is_empty() {
                return Err("the value is stored externally");
            }
            t
        }
        "value_float" => TensorProto {
            data_type: Some(DataType::Float as i32),
            float_data: vec![a.f.ok_or("`value_float` is empty")?],
            ..Default::default()
        },
        "value_floats" => TensorProto {
            data_type: Some(DataType::Float as i32),
            dims: vec![a.floats.len() as i64],
            float_data: a.floats.clone(),
            ..Default::default()
        },
        "value_int" => TensorProto {
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![a.i.ok_or("`value_int` is empty")?],
            ..Default::default()
        },
        "value_ints" => TensorProto {
            data_type: Some(DataType::Int64 as i32),
            dims: vec![a.ints.len() as i64],
            int64_data: a.ints.clone(),
            ..Default::default()
        },
        "sparse_value" => return Err("sparse values stay Constant nodes"),
        _ => return Err("string values stay Constant nodes"),
    };
    t.name = p.output.first().cloned();
    Ok(t)
}

impl Rule for ConstantToInitializer {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C002",
            name: "constant-to-initializer",
            group: "clean",
            summary: "turn top-level Constant nodes into initializers of the same name",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    /// Each match converts its own `Constant` node and nothing else.
    fn independent_matches(&self) -> bool {
        true
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            if !is_op(g, id, "Constant") {
                continue;
            }
            let p = g.node(id).op().expect("an op");
            if p.output.len() != 1 || p.output[0].is_empty() {
                f.skip(model, id, "Constant without exactly one named output");
                continue;
            }
            match constant_value(p) {
                Ok(_) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("Constant `{}` → initializer", p.output[0]),
                }),
                Err(reason) => f.skip(model, id, reason),
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let p = g.node(m.anchor).op().expect("an op");
        let t = constant_value(p).map_err(|r| Error::Rule {
            rule: "constant-to-initializer".into(),
            reason: r.into(),
        })?;
        let mut patch = Patch::new(m.what.clone(), Some(m.anchor));
        let old = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        let w = patch.add_initializer(t);
        patch.shunt(old, w);
        patch.keep_name(old, w);
        patch.remove(m.anchor);
        Ok(patch)
    }
}
