//! `--quantize-activations`: static activation quantization, `QuantizeLinear` →
//! `DequantizeLinear` pairs with ranges calibrated in tract.
//!
//! **What:** every float32 activation that a top-level Conv, MatMul or Gemm reads (Conv's `X`,
//! MatMul's and Gemm's `A`, and `B` where it is computed rather than a weight) gets one pair
//! `DequantizeLinear(QuantizeLinear(x, s, z), s, z)` with a uint8 per-tensor scale `s` and zero
//! point `z`, and those readers read the pair's output; other readers of `x` keep the float
//! value. With `--quantize-outputs`, each such node's output gets a pair too (when a node reads
//! it), which every reader of the output reads. The weights are quantized as in weight-only mode
//! (int8 per channel by default); biases stay float. That is onnxruntime's QDQ format
//! (`quantize_static(quant_format=QDQ)`, activations uint8, weights int8) and what TensorRT's
//! explicit-quantization mode expects around these ops. onnxruntime 1.32 fuses
//! `DequantizeLinear` → Conv/MatMul/Gemm → `QuantizeLinear` into `QLinearConv`,
//! `QLinearMatMul` or `QGemm` (quantizing a float bias itself), integer kernels, only when the
//! pair on the output is there and the weight's `DequantizeLinear` is read directly (per
//! tensor, or per channel from opset 13); without the output pair it runs the op in float
//! between the pairs. The output pairs add rounding, so they are asked for by the flag.
//!
//! **Ranges:** the model as the rule first sees it runs once in tract on the `--calibration`
//! input sets (`crate::calibrate::ranges`, the capture every data-aware rule uses), and each
//! activation's range is collected by `--quantize-calibrate`: `minmax` (the default),
//! `percentile[:P]` or `entropy` (see `crate::calibrate::range`). The ranges are cached for the
//! run (by calibration inputs, method, the activation's name, producer and readers, and the
//! model's interface), so the driver's later `find`s do not run the model again. The grid is
//! uint8 asymmetric: the range widened to include 0, `s = (max − min)/255`, `z = round(−min/s)`,
//! so 0 is exactly a code (zero padding stays zero).
//!
//! **Why:** with both operands on 8-bit grids, runtimes with integer kernels (onnxruntime's
//! QLinearConv / MatMulIntegerToFloat fusions, TensorRT int8) compute Conv and MatMul in
//! integers; the file is standard ONNX from opset 10 (per-tensor Q/DQ).
//!
//! **Example:** `y = Conv(x, W)` with `x` calibrated to `[−0.8, 3.1]` becomes
//! `x_dequantized = DequantizeLinear(QuantizeLinear(x, 0.01529, 52), 0.01529, 52)`,
//! `y = Conv(x_dequantized, W_dequantized)`; with `--quantize-outputs` `y`'s readers read
//! `y_dequantized`, `y`'s own pair.
//!
//! **Exact:** no (lossy): each activation moves by at most `s/2` inside its range and is clipped
//! outside it. An activation already on the grid (values `k·s` for integers `k` in
//! `[−z, 255 − z]` with the calibrated ends on it, `s` a power of two) passes the pair bit for
//! bit. The pair adds two nodes and two scalars (about 150 bytes): the one rewrite of this rule
//! that grows the encoded graph, which the user asked for by the flag; its report line says so.
//!
//! **Left alone, with a reason:** activations that are not float32, already behind a
//! `DequantizeLinear`, read only by nodes excluded by `--quantize-exclude` (or named there
//! themselves), whose calibration values are all NaN or infinite, or whose range could not be
//! captured (the model does not run in tract). Activations of ops inside subgraphs are not
//! visited.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::QuantizeConfig;
use crate::calibrate::range::{uint8_grid, RangeMethod};
use crate::error::{Error, Result};
use crate::ir::{Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::TensorProto;
use crate::rewrite::{Config, Findings, Match, Patch, Wire};
use crate::rules::util::make_node;

/// The ops whose activation inputs get a Q/DQ pair, and which inputs those are.
const READERS: &[(&str, &[usize])] = &[("Conv", &[0]), ("MatMul", &[0, 1]), ("Gemm", &[0, 1])];

/// The prefix of an activation match's `what`; the name follows in backticks.
const WHAT: &str = "activation `";

/// A calibrated range and what it was measured on, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Calibrated {
    /// The range the grid is fitted to.
    pub(super) range: (f32, f32),
    /// The smallest and largest value seen.
    pub(super) seen: (f32, f32),
    /// How many values.
    pub(super) values: u64,
}

type Measured = std::result::Result<Calibrated, String>;

/// Ranges by [`range_key`]: `find` runs again after every round of patches.
static RANGES: Mutex<BTreeMap<u64, Measured>> = Mutex::new(BTreeMap::new());

/// Every key captured, in order (to test that nothing is captured twice).
#[cfg(test)]
pub(super) static CAPTURED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// One activation: the value and its quantizable readers `(node, input slot)`.
#[derive(Debug, Clone)]
struct Activation {
    value: ValueRef,
    readers: Vec<(NodeId, usize)>,
}

fn reader_slots(g: &Graph, id: NodeId) -> &'static [usize] {
    let n = g.node(id);
    if !n.domain().is_empty() {
        return &[];
    }
    READERS
        .iter()
        .find(|(op, _)| *op == n.op_type())
        .map_or(&[], |(_, s)| *s)
}

/// What an activation's range depends on: the calibration inputs and method, the value's name,
/// producer and readers, and the model's interface. Stable across the rule's own patches (they
/// rewire readers' inputs, not their labels), so each activation is captured once per run.
fn range_key(g: &Graph, config: &Config, method: RangeMethod, a: &Activation) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.calibration.hash(&mut h);
    method.name().hash(&mut h);
    g.value_name(a.value).hash(&mut h);
    (g.node(a.value.node).label(), a.value.slot).hash(&mut h);
    for (r, s) in &a.readers {
        (g.node(*r).label(), g.node(*r).op_type(), s).hash(&mut h);
    }
    for id in g.inputs() {
        g.node(id).label().hash(&mut h);
    }
    for (_, vi) in g.outputs() {
        vi.name.hash(&mut h);
    }
    h.finish()
}

/// The activation named by a match of this rule, if it is one.
pub(super) fn activation_name(m: &Match) -> Option<&str> {
    m.what.strip_prefix(WHAT)?.split('`').next()
}

fn excluded(cfg: &QuantizeConfig, name: &str) -> bool {
    cfg.exclude.iter().any(|e| e == name)
}

/// Every activation a Conv/MatMul/Gemm reads, grouped by value in graph order, with skips for
/// those left alone. Linear in the graph.
fn activations(model: &Model, cfg: &QuantizeConfig, f: &mut Findings) -> Vec<Activation> {
    let g = &model.graph;
    let facts = g.facts();
    let mut order: Vec<ValueRef> = Vec::new();
    let mut readers: BTreeMap<ValueRef, Vec<(NodeId, usize)>> = BTreeMap::new();
    for id in g.ops() {
        let slots = reader_slots(g, id);
        if slots.is_empty() {
            continue;
        }
        if excluded(cfg, &g.node(id).label()) {
            f.skip(
                model,
                id,
                "its activations are excluded by --quantize-exclude",
            );
            continue;
        }
        for &slot in slots {
            let Some(v) = g.input(id, slot) else { continue };
            if g.const_tensor(v).is_some() {
                continue;
            }
            let name = g.value_name(v);
            if g.node(v.node).op_type() == "DequantizeLinear" {
                if !is_own_pair(g, v) {
                    f.skip(
                        model,
                        id,
                        format!("activation `{name}` is already behind a DequantizeLinear"),
                    );
                }
                continue;
            }
            if super::find::behind_dequantize(g, v) {
                continue;
            }
            if facts.get(v).dtype != Some(DataType::Float as i32) {
                f.skip(
                    model,
                    id,
                    format!("activation `{name}` is not known to be float32"),
                );
                continue;
            }
            if excluded(cfg, name) {
                f.skip(
                    model,
                    id,
                    format!("activation `{name}` excluded by --quantize-exclude"),
                );
                continue;
            }
            let r = readers.entry(v).or_default();
            if r.is_empty() {
                order.push(v);
            }
            r.push((id, slot));
        }
        // The output (`--quantize-outputs`): onnxruntime fuses `DequantizeLinear` → op →
        // `QuantizeLinear` into an integer kernel (QLinearConv, QLinearMatMul) only when the
        // `QuantizeLinear` follows.
        if !cfg.outputs {
            continue;
        }
        let y = ValueRef { node: id, slot: 0 };
        let consumers = g.consumers(y);
        if consumers.is_empty()
            || consumers
                .iter()
                .any(|(c, _)| g.node(*c).op_type() == "QuantizeLinear")
            || facts.get(y).dtype != Some(DataType::Float as i32)
        {
            continue;
        }
        let name = g.value_name(y);
        if excluded(cfg, name) {
            f.skip(
                model,
                id,
                format!("activation `{name}` excluded by --quantize-exclude"),
            );
            continue;
        }
        let r = readers.entry(y).or_default();
        if r.is_empty() {
            order.push(y);
        }
        r.extend(
            consumers
                .into_iter()
                .filter(|(c, _)| !excluded(cfg, &g.node(*c).label())),
        );
    }
    order
        .into_iter()
        .filter_map(|v| {
            let mut readers = readers.remove(&v).unwrap_or_default();
            readers.sort();
            readers.dedup();
            (!readers.is_empty()).then_some(Activation { value: v, readers })
        })
        .collect()
}

/// Whether `v` is the output of a Conv/MatMul/Gemm whose pair every reader reads (not only the
/// quantizable ones).
fn is_op_output(g: &Graph, cfg: &QuantizeConfig, v: ValueRef) -> bool {
    cfg.outputs
        && v.slot == 0
        && !reader_slots(g, v.node).is_empty()
        && !excluded(cfg, &g.node(v.node).label())
}

/// Whether `v` is the output of a `DequantizeLinear` reading a `QuantizeLinear` (a pair this
/// rule wrote, or one like it) or constant codes (a quantized weight), which need no skip line.
fn is_own_pair(g: &Graph, v: ValueRef) -> bool {
    g.input(v.node, 0).is_some_and(|q| {
        g.node(q.node).op_type() == "QuantizeLinear" || g.const_tensor(q).is_some()
    })
}

/// The ranges of `acts` (same order), from the cache or captured in one tract run per
/// calibration set of the model as it is now.
fn calibrated(
    model: &Model,
    config: &Config,
    method: RangeMethod,
    acts: &[Activation],
) -> Vec<Measured> {
    let g = &model.graph;
    let keys: Vec<u64> = acts
        .iter()
        .map(|a| range_key(g, config, method, a))
        .collect();
    let cached = |k: u64| RANGES.lock().ok().and_then(|c| c.get(&k).cloned());
    let missing: Vec<usize> = (0..acts.len())
        .filter(|i| cached(keys[*i]).is_none())
        .collect();
    if !missing.is_empty() {
        #[cfg(test)]
        if let Ok(mut c) = CAPTURED.lock() {
            c.extend(missing.iter().map(|i| keys[*i]));
        }
        let names: Vec<String> = missing
            .iter()
            .map(|i| g.value_name(acts[*i].value).to_string())
            .collect();
        let proto = model.to_proto();
        let measured = crate::calibrate::load_sets(&config.calibration, &proto).and_then(|sets| {
            crate::calibrate::ranges(&proto, &names, &sets, method, config.memory_limit())
        });
        if let Ok(mut cache) = RANGES.lock() {
            for (i, name) in missing.iter().zip(&names) {
                let m = match &measured {
                    Err(e) => Err(crate::calibrate::failed(e)),
                    Ok(r) => match r.get(name) {
                        None => Err(format!("`{name}` was not captured")),
                        Some(c) => c.range().map(|range| Calibrated {
                            range,
                            seen: c.min_max().unwrap_or(range),
                            values: c.count(),
                        }),
                    },
                };
                cache.insert(keys[*i], m);
            }
        }
    }
    keys.iter()
        .map(|k| cached(*k).unwrap_or_else(|| Err("the range cache is unavailable".into())))
        .collect()
}

/// The activation matches of `find`: one per activation with a calibrated range (anchored at
/// its first reader, the readers as the match's nodes), and skips for the others.
pub(super) fn find_activations(model: &Model, config: &Config, f: &mut Findings) -> Vec<Match> {
    let Some(method) = config.quantize.activations else {
        return vec![];
    };
    let g = &model.graph;
    let opset = model.opset("").unwrap_or(1);
    let acts = activations(model, &config.quantize, f);
    if acts.is_empty() {
        return vec![];
    }
    if opset < 10 {
        for a in &acts {
            f.skip(
                model,
                a.readers[0].0,
                format!(
                    "activation `{}`: QuantizeLinear needs opset 10, the model has {opset}",
                    g.value_name(a.value)
                ),
            );
        }
        return vec![];
    }
    let ranges = calibrated(model, config, method, &acts);
    let mut out = Vec::new();
    for (a, r) in acts.into_iter().zip(ranges) {
        let name = g.value_name(a.value);
        match r {
            Ok(_) => out.push(Match {
                anchor: a.readers[0].0,
                nodes: {
                    let mut n: Vec<NodeId> = a.readers.iter().map(|(n, _)| *n).collect();
                    n.dedup();
                    n
                },
                what: format!("{WHAT}{name}`"),
            }),
            Err(why) => f.skip(model, a.readers[0].0, format!("activation `{name}`: {why}")),
        }
    }
    out
}

fn scalar(name: String, dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name),
        dims: vec![],
        data_type: Some(dt as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// The patch of an activation match: the Q/DQ pair, its readers rewired to it.
pub(super) fn rewrite_activation(
    model: &Model,
    m: &Match,
    config: &Config,
    name: &str,
) -> Result<Patch> {
    let g = &model.graph;
    let fail = |reason: String| Error::Rule {
        rule: "quantize".into(),
        reason,
    };
    let method = config
        .quantize
        .activations
        .ok_or_else(|| fail("activations are not quantized in this configuration".into()))?;
    let v = g
        .producer(name)
        .ok_or_else(|| fail(format!("activation `{name}` is no longer in the graph")))?;
    let every_reader = is_op_output(g, &config.quantize, v);
    let readers: Vec<(NodeId, usize)> = m
        .nodes
        .iter()
        .flat_map(|&n| {
            let slots: Vec<usize> = if every_reader {
                (0..g.node_inputs(n).len()).collect()
            } else {
                reader_slots(g, n).to_vec()
            };
            slots
                .into_iter()
                .filter(move |&s| g.input(n, s) == Some(v))
                .map(move |s| (n, s))
        })
        .collect();
    if readers.is_empty() {
        return Err(fail(format!(
            "activation `{name}` has no reader left to rewire"
        )));
    }
    let act = Activation {
        value: v,
        readers: readers.clone(),
    };
    let key = range_key(g, config, method, &act);
    let cal = RANGES
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .unwrap_or_else(|| Err("its range was not calibrated".into()))
        .map_err(|why| fail(format!("activation `{name}`: {why}")))?;
    let (s, z) = uint8_grid(cal.range.0, cal.range.1);
    let mut p = Patch::new(String::new(), Some(m.anchor));
    let sw = p.add_initializer(scalar(
        format!("{name}_scale"),
        DataType::Float,
        s.to_le_bytes().to_vec(),
    ));
    let zw = p.add_initializer(scalar(
        format!("{name}_zero_point"),
        DataType::Uint8,
        vec![z],
    ));
    let q = make_node(
        "QuantizeLinear",
        &format!("{name}_quantize"),
        3,
        &[&format!("{name}_quantized")],
    );
    let q = p.add_op(q, &[Some(Wire::Value(v)), Some(sw), Some(zw)])[0];
    let dq = make_node(
        "DequantizeLinear",
        &format!("{name}_dequantize"),
        3,
        &[&format!("{name}_dequantized")],
    );
    let dq = p.add_op(dq, &[Some(q), Some(sw), Some(zw)])[0];
    for (n, slot) in &readers {
        p.rewire(*n, *slot, Some(dq));
    }
    p.allow_growth();
    let read_by: Vec<String> = readers
        .iter()
        .map(|(n, _)| format!("{} `{}`", g.node(*n).op_type(), g.node(*n).label()))
        .collect();
    let clipped = if cal.range != cal.seen {
        format!(" (seen [{:.6}, {:.6}])", cal.seen.0, cal.seen.1)
    } else {
        String::new()
    };
    p.description = format!(
        "{}: uint8 per tensor, range [{:.6}, {:.6}]{clipped} by {} over {} calibration values, scale {s:e}, zero point {z}; read by {}; QuantizeLinear + DequantizeLinear add two nodes (grows the graph)",
        m.what,
        cal.range.0,
        cal.range.1,
        method.name(),
        cal.values,
        read_by.join(", ")
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{seeded_f32, ModelBuilder};
    use crate::rewrite::Rule;
    use prost::Message;

    #[test]
    fn each_activation_is_captured_once_although_find_runs_again() {
        let mut b = ModelBuilder::new(13);
        b.input("x", DataType::Float, &[4, 16])
            .initializer_f32("W1", seeded_f32(&[16, 16], 1))
            .initializer_f32("W2", seeded_f32(&[16, 8], 2))
            .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
            .node_named("relu", "Relu", &["h"], &["hr"], vec![])
            .node_named("fc2", "MatMul", &["hr", "W2"], &["y"], vec![])
            .output("y", DataType::Float, &[4, 8]);
        let mut model = Model::from_proto(b.build()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("test_data_set_0");
        std::fs::create_dir(&set).unwrap();
        let x = crate::ir::tensor::from_f32("x", &seeded_f32(&[4, 16], 3));
        std::fs::write(set.join("input_0.pb"), x.encode_to_vec()).unwrap();
        let config = Config {
            calibration: vec![dir.path().to_path_buf()],
            quantize: QuantizeConfig {
                min_elements: 16,
                activations: Some(RangeMethod::MinMax),
                outputs: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut f = Findings::default();
        let acts = activations(&model, &config.quantize, &mut f);
        // `x` and `hr` as read, `h` as fc1's output (`--quantize-outputs`; fc2's `y` is read by
        // nothing but the graph).
        assert_eq!(acts.len(), 3);
        let keys: Vec<u64> = acts
            .iter()
            .map(|a| range_key(&model.graph, &config, RangeMethod::MinMax, a))
            .collect();
        let original = model.clone();
        let rules: Vec<&dyn Rule> = vec![&super::super::Quantize];
        let report = crate::rewrite::run(&mut model, &rules, &config, &Default::default()).unwrap();
        // Two weights and three activations.
        assert_eq!(report.patches(), 5);
        // `find` on the model as first seen again: the ranges come from the cache.
        let again = super::super::Quantize.find(&original, &config);
        assert_eq!(again.matches.len(), 5);
        let captured = CAPTURED.lock().unwrap();
        for k in &keys {
            assert_eq!(captured.iter().filter(|c| *c == k).count(), 1);
        }
    }
}
