//! The shared harness: every rule, alone, on every fixture and every shared model. For each it
//! checks the invariants every rule owes:
//!
//! - a second run finds nothing (the rule reached its fixed point);
//! - the result round-trips decode → IR → encode byte for byte;
//! - tract agrees with the original within the rule's documented tolerance (bit-equal for the
//!   exact rules at 0), on every model except the ones [`NOT_RUNNABLE`] lists;
//! - the encoded model did not grow, and its graph outputs keep their names;
//! - the top-level node count did not grow, except for the rules in [`ADDS_NODES`].
//!
//! It also holds the tests of the one output comparison all tests use (`common/compare.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::compare;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_bytes, decode_file, encode_model, proto::ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, Rule};
use onnx_slim::verify::{self, InputSet, Outputs};

/// Rules whose docs say they trade a node for bytes: `share-transposed` adds a `Transpose`,
/// `lowrank` replaces one product by two, `quantize` adds a `DequantizeLinear` per weight,
/// `cluster` a `Cast` and a `Gather` (and, packed, a `Gather` and a `Reshape`) per weight.
const ADDS_NODES: &[&str] = &["share-transposed", "lowrank", "quantize", "cluster"];

/// At most this many input sets per model, to keep the harness quick.
const MAX_SETS: usize = 2;

/// Models (by file name) whose numerics are not compared, and why; every other fixture and
/// shared model must run in tract. Printed as a skip; a listed model that runs fails the test.
const NOT_RUNNABLE: &[(&str, &str)] = &[(
    "all_attr_types.onnx",
    "exercises the encoder: custom-domain ops (com.example) no runtime has",
)];

fn input_sets(model: &ModelProto, dir: &Path) -> Result<Vec<InputSet>, String> {
    let has_sets = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("test_data_set_")
        });
    let mut sets = if has_sets {
        verify::inputs::load_test_data_sets(dir, model).map_err(|e| e.to_string())?
    } else {
        vec![verify::inputs::random_inputs(model, &[], 0).map_err(|e| e.to_string())?]
    };
    sets.truncate(MAX_SETS);
    Ok(sets)
}

fn output_names(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default()
}

/// Runs `rule` on the model at `path` and records what went wrong, if anything; returns whether
/// outputs were compared (the rule rewrote and the model runs).
fn check(
    rule: &dyn Rule,
    path: &Path,
    runs: Option<&(Vec<InputSet>, Vec<Outputs>)>,
    out: &mut Vec<String>,
) -> bool {
    let name = rule.meta().name;
    let label = format!("{name} on {}", path.display());
    let original = match decode_file(path) {
        Ok(l) => l.model,
        Err(e) => {
            out.push(format!("{label}: cannot load: {e}"));
            return false;
        }
    };
    let config = Config::default();
    let mut model =
        Model::from_proto(original.clone()).expect("fixtures and shared models are valid");
    let first = match run(&mut model, &[rule], &config, &DriverOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            out.push(format!("{label}: the rule failed: {e}"));
            return false;
        }
    };
    match run(&mut model, &[rule], &config, &DriverOptions::default()) {
        Ok(r) if r.patches() == 0 => {}
        Ok(r) => out.push(format!(
            "{label}: a second run applied {} more patches",
            r.patches()
        )),
        Err(e) => out.push(format!("{label}: the second run failed: {e}")),
    }
    let rewritten = model.to_proto();
    let bytes = encode_model(&rewritten);
    let again = decode_bytes(bytes.clone().into(), path)
        .and_then(Model::from_proto)
        .map(|m| encode_model(&m.to_proto()));
    match again {
        Ok(b) if b == bytes => {}
        Ok(_) => out.push(format!(
            "{label}: the result does not round-trip byte for byte"
        )),
        Err(e) => out.push(format!("{label}: the result does not decode: {e}")),
    }
    let before = encode_model(&original).len();
    if bytes.len() > before {
        out.push(format!(
            "{label}: the model grew from {before} to {} bytes",
            bytes.len()
        ));
    }
    let count = |m: &ModelProto| m.graph.as_ref().map_or(0, |g| g.node.len());
    if !ADDS_NODES.contains(&name) && count(&rewritten) > count(&original) {
        out.push(format!(
            "{label}: the node count grew from {} to {}",
            count(&original),
            count(&rewritten)
        ));
    }
    if output_names(&original) != output_names(&rewritten) {
        out.push(format!("{label}: graph output names changed"));
    }
    if first.patches() == 0 {
        return false;
    }
    let Some((sets, a)) = runs else { return false };
    // The rule's own tolerance: 0 for the exact rules, every element equal.
    let tol = rule.tolerance(&config);
    match verify::run_many(&rewritten, sets, "rewritten") {
        Ok(b) => {
            for ((set, a), b) in sets.iter().zip(a.iter()).zip(&b) {
                if let Err(e) = compare::outputs_match(a, b, tol) {
                    out.push(format!("{label} ({}): {e}", set.label));
                }
            }
        }
        Err(e) => out.push(format!("{label}: verification could not run: {e}")),
    }
    true
}

/// What [`every_rule_on`] found: failures, models whose numerics were compared, and rule ×
/// model pairs whose outputs were compared.
struct Checked {
    failures: Vec<String>,
    runnable: usize,
    compared: usize,
}

fn every_rule_on(models: &[PathBuf]) -> Checked {
    let mut c = Checked {
        failures: Vec::new(),
        runnable: 0,
        compared: 0,
    };
    for path in models {
        let file = common::case_name(path);
        let listed = NOT_RUNNABLE.iter().find(|(n, _)| *n == file);
        let sets = decode_file(path).map_err(|e| e.to_string()).and_then(|l| {
            let sets = input_sets(&l.model, path.parent().expect("a folder"))?;
            let outs = verify::run_many(&l.model, &sets, "original").map_err(|e| e.to_string())?;
            Ok((sets, outs))
        });
        let sets = match (sets, listed) {
            (Ok(s), None) => {
                c.runnable += 1;
                Some(s)
            }
            (Ok(_), Some(_)) => {
                c.failures.push(format!(
                    "{file} runs in tract now: remove it from NOT_RUNNABLE"
                ));
                None
            }
            (Err(e), None) => {
                c.failures
                    .push(format!("{}: tract cannot run it: {e}", path.display()));
                None
            }
            (Err(_), Some((_, why))) => {
                common::skip_loudly(&format!(
                    "SKIPPED: numerics of every rule on {file}: {why} (everything else checked)"
                ));
                None
            }
        };
        for rule in registry::all() {
            if check(rule, path, sets.as_ref(), &mut c.failures) {
                c.compared += 1;
            }
        }
    }
    c
}

#[test]
fn every_rule_keeps_the_invariants_on_every_fixture() {
    let fixtures = common::fixtures();
    let c = every_rule_on(&fixtures);
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    assert_eq!(
        c.runnable,
        fixtures.len() - NOT_RUNNABLE.len(),
        "fixtures run"
    );
    // Every rule fires on some fixture (below), so at least one comparison per rule; measured:
    // the rule × fixture pairs where the rule rewrote and the fixture runs.
    assert!(c.compared >= registry::all().len());
    // 35 = 23 + sparsify (default 0.5) on the 7 fixtures with a float32 layer kernel + cluster
    // on the 5 whose weights are large enough for codes and a codebook to be smaller.
    assert_eq!(c.compared, 35, "rule × fixture outputs compared");
}

#[test]
fn every_rule_keeps_the_invariants_on_every_shared_model() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let paths: Vec<PathBuf> = models.iter().map(|m| m.join("model.onnx")).collect();
    let c = every_rule_on(&paths);
    assert!(c.failures.is_empty(), "{}", c.failures.join("\n"));
    assert_eq!(c.runnable, 6, "shared models run in tract");
    // 51 = 40 + sparsify on the 5 models whose kernels are initializers (not ppocr's Constants)
    // + cluster on all 6.
    assert_eq!(
        c.compared, 51,
        "rule × shared-model outputs compared (measured)"
    );
}

#[test]
fn every_rule_fires_on_some_fixture() {
    let fixtures = common::fixtures();
    let mut silent = Vec::new();
    for rule in registry::all() {
        // `to-fp16` acts only when asked (`--dtype fp16`).
        let config = Config {
            fp16: rule.meta().name == "to-fp16",
            ..Default::default()
        };
        let fired = fixtures.iter().any(|p| {
            let l = decode_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut m = Model::from_proto(l.model).expect("fixtures are valid");
            run(&mut m, &[rule], &config, &DriverOptions::default())
                .map(|r| r.patches() > 0)
                .unwrap_or(false)
        });
        if !fired {
            silent.push(rule.meta().name);
        }
    }
    assert!(silent.is_empty(), "rules no fixture exercises: {silent:?}");
}

// ---------------------------------------------------------------------------------------------
// The large-graph case: every rule on a chain it matches at every link, at two sizes. Work is
// counted, not timed: `onnx_slim::ir::visited()` counts every node and edge the graph's walks
// yield and every slot its copies copy, so a driver or rule that walks the whole graph (or all
// readers of a shared constant) per patch makes it grow with the square of the chain.

/// Links of the two chains, and how much more work the larger may take than its size ratio
/// allows: linear work grows 10×; the rounds of the driver and a sort add a little; anything
/// quadratic grows about 100×.
const SMALL: usize = 300;
const LARGE: usize = 3_000;
const WORK_SLACK: f64 = 2.5;

/// Rules whose one match converts the whole graph (one patch, however long the chain).
const WHOLE_GRAPH: &[&str] = &["to-fp16"];

/// Rules whose work on that chain is still quadratic, and why. Printed as a skip; a listed rule
/// that has become linear fails the test (take it off the list).
const STILL_QUADRATIC: &[(&str, &str)] = &[];

mod large {
    use ndarray::{Array2, ArrayD, IxDyn};
    use onnx_slim::ir::builder::{
        attr_g, attr_i, attr_ints, attr_t, seeded_f32, tensor_f32, tensor_i64_1d, ModelBuilder,
    };
    use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
    use onnx_slim::rewrite::Config;

    fn filled(name: &str, dims: &[usize], v: f32) -> TensorProto {
        tensor_f32(name, &ArrayD::from_elem(IxDyn(dims), v))
    }

    /// `v0 → unit → v1 → … → vn`, input and output of shape `dims`; `shared` adds initializers
    /// every link may read.
    fn chain(
        dims: &[i64],
        n: usize,
        shared: &[TensorProto],
        unit: impl Fn(&mut ModelBuilder, usize, &str, &str),
    ) -> ModelProto {
        let mut b = ModelBuilder::new(17);
        b.input("v0", DataType::Float, dims);
        for t in shared {
            b.initializer(t.clone());
        }
        for i in 0..n {
            unit(&mut b, i, &format!("v{i}"), &format!("v{}", i + 1));
        }
        b.output(&format!("v{n}"), DataType::Float, dims);
        b.build()
    }

    /// `next = op(prev, w_i)` with a weight of shape `dims` per link, made by `w`.
    fn weighted(
        io: &[i64],
        n: usize,
        op: &'static str,
        shared: &[TensorProto],
        w: impl Fn(usize) -> ArrayD<f32>,
    ) -> ModelProto {
        chain(io, n, shared, |b, i, p, q| {
            let name = format!("w{i}");
            b.initializer(tensor_f32(&name, &w(i)));
            b.node(op, &[p, &name], &[q], vec![]);
        })
    }

    /// A chain of `n` links where `rule` matches at every link (at all but the last for
    /// `prune`, whose last layer feeds the graph output), and the configuration to run it with.
    /// `None` for a rule this table does not know: the test then fails.
    pub fn matched_everywhere(rule: &str, n: usize) -> Option<(ModelProto, Config)> {
        let mut config = Config::default();
        let io = [1i64, 4];
        let model = match rule {
            "constant-to-initializer" => chain(&io, n, &[], |b, i, p, q| {
                let c = format!("c{i}");
                let t = filled("", &[1, 4], i as f32 + 1.0);
                b.node("Constant", &[], &[&c], vec![attr_t("value", t)]);
                b.node("Add", &[p, &c], &[q], vec![]);
            }),
            "eliminate-identity" => chain(&io, n, &[], |b, _, p, q| {
                b.node("Identity", &[p], &[q], vec![]);
            }),
            "eliminate-dropout" => chain(&io, n, &[], |b, _, p, q| {
                b.node("Dropout", &[p], &[q], vec![]);
            }),
            "eliminate-noop" => chain(&io, n, &[], |b, _, p, q| {
                b.node("Transpose", &[p], &[q], vec![attr_ints("perm", &[0, 1])]);
            }),
            // One zero read by every link: removing its readers one by one must not walk them.
            "eliminate-neutral-arith" => {
                chain(&io, n, &[filled("zero", &[1, 4], 0.0)], |b, _, p, q| {
                    b.node("Add", &[p, "zero"], &[q], vec![]);
                })
            }
            "fold-constants" => chain(&io, n, &[filled("a", &[1, 4], 2.0)], |b, i, p, q| {
                let (k, c) = (format!("k{i}"), format!("c{i}"));
                b.initializer(filled(&k, &[1, 4], i as f32));
                b.node("Mul", &["a", &k], &[&c], vec![]);
                b.node("Add", &[p, &c], &[q], vec![]);
            }),
            // The shape computation must weigh more than the constant replacing it.
            "static-reshape-shape" => chain(&io, n, &[], |b, i, p, q| {
                let s = format!("the_shape_of_v{i}_as_a_traced_exporter_computes_it");
                b.node_named(&format!("{s}_node"), "Shape", &[p], &[&s], vec![]);
                b.node("Reshape", &[p, &s], &[q], vec![]);
            }),
            // Parameters of their own per link: pairs sharing one are merged by one patch.
            "merge-slices" => chain(&io, n, &[], |b, i, p, q| {
                let (s, t) = (format!("s{i}"), format!("t{i}"));
                let c = |b: &mut ModelBuilder, what: &str, v: i64| {
                    let name = format!("{what}{i}");
                    b.initializer(tensor_i64_1d(&name, &[v]));
                    name
                };
                let (s0, e0, a0) = (c(b, "s0_", 0), c(b, "e0_", 4), c(b, "a0_", 0));
                let (s1, e1, a1) = (c(b, "s1_", 0), c(b, "e1_", 4), c(b, "a1_", 1));
                b.node("Slice", &[p, &s0, &e0, &a0], &[&s], vec![]);
                b.node("Slice", &[&s, &s1, &e1, &a1], &[&t], vec![]);
                b.node("Relu", &[&t], &[q], vec![]);
            }),
            "fuse-batchnorm" => {
                let shared = [
                    filled("scale", &[2], 0.5),
                    filled("bias", &[2], 0.1),
                    filled("mean", &[2], 0.2),
                    filled("var", &[2], 2.0),
                ];
                chain(&[1, 2, 2, 2], n, &shared, |b, i, p, q| {
                    let (w, c) = (format!("w{i}"), format!("c{i}"));
                    b.initializer(tensor_f32(&w, &seeded_f32(&[2, 2, 1, 1], i as u64)));
                    b.node("Conv", &[p, &w], &[&c], vec![]);
                    let bn = [c.as_str(), "scale", "bias", "mean", "var"];
                    b.node("BatchNormalization", &bn, &[q], vec![]);
                })
            }
            "fuse-conv-add" => chain(&[1, 2, 2, 2], n, &[], |b, i, p, q| {
                let (w, c, a) = (format!("w{i}"), format!("c{i}"), format!("a{i}"));
                b.initializer(tensor_f32(&w, &seeded_f32(&[2, 2, 1, 1], i as u64)));
                b.initializer(filled(&a, &[2, 1, 1], i as f32));
                b.node("Conv", &[p, &w], &[&c], vec![]);
                b.node("Add", &[&c, &a], &[q], vec![]);
            }),
            "matmul-add-to-gemm" => chain(&io, n, &[filled("bias", &[4], 0.25)], |b, i, p, q| {
                let (w, m) = (format!("w{i}"), format!("m{i}"));
                b.initializer(tensor_f32(&w, &seeded_f32(&[4, 4], i as u64)));
                b.node("MatMul", &[p, &w], &[&m], vec![]);
                b.node("Add", &[&m, "bias"], &[q], vec![]);
            }),
            "drop-zero-rnn-state" => {
                let shared = [
                    tensor_f32("W", &seeded_f32(&[1, 4, 4], 1)),
                    tensor_f32("R", &seeded_f32(&[1, 4, 4], 2)),
                    filled("h0", &[1, 1, 4], 0.0),
                    tensor_i64_1d("axis1", &[1]),
                ];
                chain(&[1, 1, 4], n, &shared, |b, i, p, q| {
                    let y = format!("y{i}");
                    let ins = [p, "W", "R", "", "", "h0"];
                    b.node("RNN", &ins, &[&y], vec![attr_i("hidden_size", 4)]);
                    b.node("Squeeze", &[&y, "axis1"], &[q], vec![]);
                })
            }
            "eliminate-common-subexpressions" => chain(&io, n, &[], |b, i, p, q| {
                let (x, y) = (format!("a{i}"), format!("b{i}"));
                b.node("Relu", &[p], &[&x], vec![]);
                b.node("Relu", &[p], &[&y], vec![]);
                b.node("Add", &[&x, &y], &[q], vec![]);
            }),
            "remove-dead" => chain(&io, n, &[], |b, i, p, q| {
                let d = format!("dead{i}");
                b.initializer(filled(&format!("unread{i}"), &[1, 4], 1.0));
                b.node("Neg", &[p], &[&d], vec![]);
                b.node("Relu", &[p], &[q], vec![]);
            }),
            // Equal constants merge into the first, which ends up read by every link.
            "share-identical" => chain(&io, n, &[], |b, i, p, q| {
                let c = format!("c{i}");
                b.initializer(filled(&c, &[1, 4], 3.0));
                b.node("Add", &[p, &c], &[q], vec![]);
            }),
            // 16 × 20 floats: over the 1 KiB a Transpose node must save.
            "share-transposed" => chain(&[1, 16], n, &[], |b, i, p, q| {
                let (w, t, m) = (format!("w{i}"), format!("t{i}"), format!("m{i}"));
                let a = seeded_f32(&[16, 20], i as u64);
                let at = a.t().to_owned().as_standard_layout().to_owned();
                b.initializer(tensor_f32(&w, &a));
                b.initializer(tensor_f32(&t, &at));
                b.node("MatMul", &[p, &w], &[&m], vec![]);
                b.node("MatMul", &[&m, &t], &[q], vec![]);
            }),
            // Link i's branches hold the value i, which the top-level `k{i}` holds too.
            "share-into-subgraphs" => {
                let mut m = chain(&io, n, &[], |b, i, p, q| {
                    b.initializer(filled(&format!("k{i}"), &[1], i as f32));
                    let branch = |op: &str, tag: &str| {
                        let mut g = ModelBuilder::subgraph(&format!("{tag}{i}"));
                        let (k, o) = (format!("{tag}k{i}"), format!("{tag}o{i}"));
                        let value = attr_t("value", filled("", &[1], i as f32));
                        g.node("Constant", &[], &[&k], vec![value]);
                        g.node(op, &[p, &k], &[&o], vec![]);
                        g.output(&o, DataType::Float, &[1, 4]);
                        g.build_graph()
                    };
                    let attrs = vec![
                        attr_g("then_branch", branch("Add", "t")),
                        attr_g("else_branch", branch("Sub", "e")),
                    ];
                    b.node("If", &["cond"], &[q], attrs);
                });
                let g = m.graph.as_mut().expect("a graph");
                let mut cond = ModelBuilder::new(17);
                cond.input("cond", DataType::Bool, &[]);
                g.input.push(cond.build_graph().input.remove(0));
                m
            }
            // Column 3 of every weight is zero: the next layer reads that channel as 0.
            "prune" => weighted(&io, n, "MatMul", &[], |i| {
                let mut w = seeded_f32(&[4, 4], i as u64);
                w.slice_each_axis_mut(|ax| match ax.axis.index() {
                    1 => ndarray::Slice::from(3..4),
                    _ => ndarray::Slice::from(..),
                })
                .fill(0.0);
                w
            }),
            "sparsify" => weighted(&io, n, "MatMul", &[], |i| seeded_f32(&[4, 4], i as u64)),
            "lowrank" => {
                config.lowrank.min_params = 256;
                weighted(&[1, 16], n, "MatMul", &[], |i| {
                    let u = seeded_f32(&[16, 1], 2 * i as u64);
                    let v = seeded_f32(&[1, 16], 2 * i as u64 + 1);
                    let u = u.into_dimensionality::<ndarray::Ix2>().expect("2-D");
                    let v = v.into_dimensionality::<ndarray::Ix2>().expect("2-D");
                    let w: Array2<f32> = u.dot(&v);
                    w.into_dyn()
                })
            }
            "quantize" => weighted(&[1, 16], n, "MatMul", &[], |i| {
                seeded_f32(&[16, 16], i as u64)
            }),
            "cluster" => weighted(&[1, 32], n, "MatMul", &[], |i| {
                seeded_f32(&[32, 32], i as u64)
            }),
            // One match converts the whole graph (see WHOLE_GRAPH).
            "to-fp16" => {
                config.fp16 = true;
                weighted(&[1, 16], n, "MatMul", &[], |i| {
                    seeded_f32(&[16, 16], i as u64)
                })
            }
            _ => return None,
        };
        Some((model, config))
    }
}

#[test]
fn every_rule_does_linear_work_on_a_graph_it_matches_everywhere() {
    let mut failures = Vec::new();
    let mut measured = 0;
    for rule in registry::all() {
        let name = rule.meta().name;
        let mut runs = Vec::new();
        for n in [SMALL, LARGE] {
            let Some((proto, config)) = large::matched_everywhere(name, n) else {
                failures.push(format!("{name}: no large-graph case"));
                break;
            };
            let mut model = Model::from_proto(proto).expect("the chain builds");
            let before = onnx_slim::ir::visited();
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&mut model, &[rule], &config, &DriverOptions::default())
            }));
            let work = onnx_slim::ir::visited() - before;
            let report = match report {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    failures.push(format!("{name} on {n} links: {e}"));
                    break;
                }
                Err(_) => {
                    failures.push(format!("{name} on {n} links: panicked"));
                    break;
                }
            };
            if let Err(e) = model.graph.check() {
                failures.push(format!(
                    "{name} on {n} links: the result does not check: {e}"
                ));
            }
            if report.patches() + 1 < n {
                let skips: Vec<String> = report.rules[0]
                    .skips
                    .iter()
                    .take(3)
                    .map(|s| format!("{} ({}): {}", s.node, s.op, s.reason))
                    .collect();
                println!("{name} on {n} links: skips {skips:?}");
            }
            runs.push((n, report.patches(), work));
        }
        let [(n1, p1, w1), (n2, p2, w2)] = runs[..] else {
            continue;
        };
        let ratio = w2 as f64 / w1 as f64;
        println!(
            "{name}: {p1} patches, {w1} visits on {n1} links; {p2}, {w2} on {n2}: ×{ratio:.1}"
        );
        // Every link (but prune's last) matched, and every match was applied; a rule whose one
        // match is the whole graph applied it.
        let whole = WHOLE_GRAPH.contains(&name);
        if (whole && (p1, p2) != (1, 1)) || (!whole && (p1 < n1 - 1 || p2 < n2 - 1)) {
            failures.push(format!(
                "{name}: {p1} patches on {n1} links, {p2} on {n2}: the rule did not match every link"
            ));
        }
        let bound = WORK_SLACK * (n2 / n1) as f64;
        if let Some((_, why)) = STILL_QUADRATIC.iter().find(|(r, _)| *r == name) {
            if ratio > bound {
                common::skip_loudly(&format!(
                    "KNOWN: {name} does quadratic work (×{ratio:.1} for ×{} links): {why}",
                    n2 / n1
                ));
            } else {
                failures.push(format!(
                    "{name} is linear now (×{ratio:.1}): take it off STILL_QUADRATIC"
                ));
            }
        } else if ratio > bound {
            failures.push(format!(
                "{name}: {w1} visits on {n1} links, {w2} on {n2}: ×{ratio:.1} for ×{} links (at most ×{bound})",
                n2 / n1
            ));
        }
        measured += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(measured, registry::all().len(), "rules measured");
    assert_eq!(measured, 23);
    assert_eq!(STILL_QUADRATIC.len(), 0);
}

// ---------------------------------------------------------------------------------------------
// The comparison every test uses (tests/common/compare.rs) fails where it must.

mod comparison {
    use super::common::compare::{outputs_match, outputs_within_abs, positional};
    use onnx_slim::verify::Outputs;
    use tract_onnx::prelude::Tensor;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_shape(shape, v).expect("shape fits")
    }

    fn one(t: Tensor) -> Outputs {
        positional([t])
    }

    /// Fails at tolerance 0, at a loose tolerance, and under the absolute criterion.
    fn fails(a: &Outputs, b: &Outputs) {
        for tol in [0.0, 1.0] {
            assert!(outputs_match(a, b, tol).is_err(), "passed at {tol}");
        }
        assert!(
            outputs_within_abs(a, b, |_| 1.0).is_err(),
            "passed within 1"
        );
    }

    #[test]
    fn equal_outputs_pass_including_nan_at_the_same_place() {
        let a = one(t(&[3], &[f32::NAN, f32::INFINITY, -1.5]));
        assert_eq!(outputs_match(&a, &a.clone(), 0.0).unwrap().len(), 1);
        assert!(outputs_within_abs(&a, &a.clone(), |_| 0.0).is_ok());
        let near = one(t(&[3], &[f32::NAN, f32::INFINITY, -1.5 + 1e-6]));
        assert!(outputs_match(&a, &near, 1e-5).is_ok());
        assert!(
            outputs_match(&a, &near, 0.0).is_err(),
            "tolerance 0 is exact"
        );
    }

    #[test]
    fn tolerance_0_is_bit_equal_but_any_nan_equals_any_nan() {
        let zero = one(t(&[2], &[0.0, 1.0]));
        let minus_zero = one(t(&[2], &[-0.0, 1.0]));
        assert!(outputs_match(&zero, &minus_zero, 1e-6).is_ok());
        let e = outputs_match(&zero, &minus_zero, 0.0).unwrap_err();
        assert!(
            e.contains("not bit-equal") && e.contains("element 0"),
            "{e}"
        );
        let quiet = one(t(&[1], &[f32::NAN]));
        let payload = one(t(&[1], &[f32::from_bits(f32::NAN.to_bits() | 1)]));
        assert!(outputs_match(&quiet, &payload, 0.0).is_ok());
    }

    #[test]
    fn all_nan_against_finite_fails_both_ways() {
        let nan = one(t(&[2, 2], &[f32::NAN; 4]));
        let finite = one(t(&[2, 2], &[0.0, 1.0, 2.0, 3.0]));
        fails(&nan, &finite);
        fails(&finite, &nan);
    }

    #[test]
    fn nan_in_one_side_fails() {
        let a = one(t(&[3], &[1.0, 2.0, 3.0]));
        let b = one(t(&[3], &[1.0, f32::NAN, 3.0]));
        fails(&a, &b);
        fails(&b, &a);
    }

    #[test]
    fn an_infinity_against_anything_else_fails() {
        let a = one(t(&[2], &[1.0, f32::INFINITY]));
        for other in [f32::NEG_INFINITY, f32::MAX, 0.0, f32::NAN] {
            let b = one(t(&[2], &[1.0, other]));
            fails(&a, &b);
            fails(&b, &a);
        }
    }

    #[test]
    fn a_shape_mismatch_fails_even_with_the_same_values() {
        let a = one(t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        let b = one(t(&[4], &[1.0, 2.0, 3.0, 4.0]));
        fails(&a, &b);
    }

    #[test]
    fn a_dtype_mismatch_fails_even_with_the_same_values() {
        let a = one(t(&[2], &[1.0, 2.0]));
        let b = one(Tensor::from_shape(&[2], &[1.0f64, 2.0]).unwrap());
        fails(&a, &b);
        let i = one(Tensor::from_shape(&[2], &[1i64, 2]).unwrap());
        fails(&a, &i);
    }

    #[test]
    fn a_different_output_count_fails() {
        let x = t(&[2], &[1.0, 2.0]);
        let one_out = positional([x.clone()]);
        let two_out = positional([x.clone(), x.clone()]);
        fails(&one_out, &two_out);
        fails(&two_out, &one_out);
        let none: Outputs = vec![];
        fails(&none, &none);
        fails(&one_out, &none);
    }

    #[test]
    fn integers_must_be_equal_whatever_the_tolerance() {
        let a = one(Tensor::from_shape(&[2], &[1i64, 2]).unwrap());
        let b = one(Tensor::from_shape(&[2], &[1i64, 3]).unwrap());
        fails(&a, &b);
    }
}
