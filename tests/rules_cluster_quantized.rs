//! `cluster` on weights already quantized: the int8/uint8 tensor behind a `DequantizeLinear`
//! that feeds a MatMul becomes codes → Gather from an integer codebook → the same
//! `DequantizeLinear`. The lossless oracle (at most 16 distinct integers), the zero point kept
//! exactly, per-channel zero points, what is left and why, and onnxruntime.

mod common;

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::ir::{text, Model};
use onnx_slim::onnx::encode_model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::cluster::{ClusterConfig, ClusterGranularity};
use onnx_slim::verify::{self, InputSet, Outputs};
use tract_onnx::prelude::Tensor;

use common::compare;

fn cluster(proto: &ModelProto, cfg: ClusterConfig) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        cluster: cfg,
        ..Default::default()
    };
    let rules = registry::select("cluster").expect("cluster is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn rewrites(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| rr.rewrites.iter().map(|w| w.description.clone()))
        .collect()
}

fn skips(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| rr.skips.iter().map(|k| k.reason.clone()))
        .collect()
}

fn op_count(m: &Model, op: &str) -> usize {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == op)
        .count()
}

fn raw(name: &str, dims: &[i64], ty: DataType, bytes: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(ty as i32),
        raw_data: Some(Bytes::from(bytes)),
        ..Default::default()
    }
}

/// A deterministic stream below `n` (an LCG).
fn picks(count: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed.wrapping_mul(6364136223846793005) ^ 0x9e3779b97f4a7c15;
    (0..count)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as usize) % n
        })
        .collect()
}

/// x[rows,K] → MatMul(x, DequantizeLinear(Q[K,48], scale, zero, axis 1)) → y[rows,48].
fn qmlp(q: TensorProto, scale: TensorProto, zero: TensorProto, rows: i64) -> ModelProto {
    let k = q.dims[0];
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[rows, k])
        .initializer(q)
        .initializer(scale)
        .initializer(zero)
        .node_named(
            "dq",
            "DequantizeLinear",
            &["Q", "scale", "zero"],
            &["W"],
            vec![attr_i("axis", 1)],
        )
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[rows, 48]);
    b.build()
}

fn scale_per_tensor() -> TensorProto {
    raw(
        "scale",
        &[],
        DataType::Float,
        0.0123f32.to_le_bytes().to_vec(),
    )
}

fn outputs(proto: &ModelProto, s: &InputSet) -> Outputs {
    verify::run_many(proto, std::slice::from_ref(s), "model")
        .expect("tract runs")
        .remove(0)
}

fn x_set(rows: usize, x: ArrayD<f32>) -> InputSet {
    assert_eq!(x.shape()[0], rows);
    InputSet::new("test", vec![("x".to_string(), Tensor::from(x))])
}

/// int8 weights on 16 levels, 0 (the zero point) among them.
fn sixteen_levels_int8() -> Vec<u8> {
    let levels: Vec<i8> = vec![
        -127, -90, -61, -40, -22, -9, -3, 0, 2, 7, 15, 30, 51, 77, 101, 127,
    ];
    picks(64 * 48, levels.len(), 1)
        .into_iter()
        .map(|i| levels[i] as u8)
        .collect()
}

#[test]
fn int8_weights_with_at_most_sixteen_values_cluster_to_bit_equal_outputs() {
    let q = raw("Q", &[64, 48], DataType::Int8, sixteen_levels_int8());
    let zero = raw("zero", &[], DataType::Int8, vec![0]);
    let proto = qmlp(q, scale_per_tensor(), zero, 4);
    let (m, report) = cluster(&proto, ClusterConfig::default());
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 1, "{lines:?} {:?}", skips(&report));
    let l = &lines[0];
    assert!(
        l.contains("quantized weight `Q`")
            && l.contains("16 centroids")
            && l.contains("codes packed two per byte")
            && l.contains("3072 → 1568 bytes")
            && l.contains("weight error 0.000 %")
            && l.contains("int8 codebook")
            && l.contains("exact: every value is a centroid"),
        "{l}"
    );
    // The DequantizeLinear is kept; the codes are unpacked and decoded by two Gathers.
    assert_eq!(op_count(&m, "DequantizeLinear"), 1);
    assert_eq!(op_count(&m, "Gather"), 2);
    let s = x_set(4, seeded_f32(&[4, 64], 5));
    compare::assert_outputs_match(
        &outputs(&proto, &s),
        &outputs(&m.to_proto(), &s),
        0.0,
        "clustered int8 vs original",
    );
}

/// Many distinct uint8 values, a per-channel zero point that differs by column, and about a
/// third of each column at its zero point (pruned): an identity input makes y the dequantized
/// weight itself, so the zeros are checked exactly.
#[test]
fn uint8_zero_points_stay_exactly_zero_per_channel() {
    let zeros: Vec<u8> = (0..48).map(|c| 100 + (c as u8 % 7) * 5).collect();
    let p = picks(256 * 48, 1000, 7);
    let q: Vec<u8> = (0..256 * 48)
        .map(|i| {
            if p[i] < 333 {
                zeros[i % 48]
            } else {
                (p[i] % 256) as u8
            }
        })
        .collect();
    let scales: Vec<u8> = (0..48)
        .flat_map(|c| (0.004f32 + c as f32 * 1e-4).to_le_bytes())
        .collect();
    let proto = qmlp(
        raw("Q", &[256, 48], DataType::Uint8, q.clone()),
        raw("scale", &[48], DataType::Float, scales),
        raw("zero", &[48], DataType::Uint8, zeros.clone()),
        256,
    );
    let (m, report) = cluster(&proto, ClusterConfig::default());
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 1, "{lines:?} {:?}", skips(&report));
    assert!(
        lines[0].contains("per channel (axis 1)")
            && lines[0].contains("the zero points differ by channel")
            && lines[0].contains("uint8 codebook"),
        "{}",
        lines[0]
    );
    let eye = ArrayD::from_shape_fn(IxDyn(&[256, 256]), |i| (i[0] == i[1]) as u8 as f32);
    let s = x_set(256, eye);
    let before = outputs(&proto, &s);
    let after = outputs(&m.to_proto(), &s);
    let a = before[0].1.to_plain_array_view::<f32>().unwrap();
    let b = after[0].1.to_plain_array_view::<f32>().unwrap();
    let (mut zero, mut moved) = (0, 0);
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(!y.is_nan(), "NaN at {i}");
        if q[i] == zeros[i % 48] {
            zero += 1;
            assert_eq!(
                y.to_bits(),
                0f32.to_bits(),
                "element {i}: {y} not exactly 0"
            );
        } else if x != y {
            moved += 1;
        }
    }
    assert!(zero > 3500, "{zero} zeros compared");
    // Lossy elsewhere: 16 levels for ~170 distinct values per column.
    assert!(moved > 4000, "{moved} values moved");
}

#[test]
fn int8_weights_are_left_where_codes_are_not_smaller_saying_why() {
    let q = raw("Q", &[64, 48], DataType::Int8, sixteen_levels_int8());
    let zero = raw("zero", &[], DataType::Int8, vec![0]);
    let proto = qmlp(q, scale_per_tensor(), zero, 4);
    let (m, report) = cluster(
        &proto,
        ClusterConfig {
            bits: 6,
            granularity: ClusterGranularity::Tensor,
        },
    );
    assert!(rewrites(&report).is_empty());
    let s = skips(&report);
    assert!(
        s.iter().any(|r| r.contains("quantized weight `Q`")
            && r.contains("not fewer than its 3072")
            && r.contains("packed two per byte only at 4 bits")),
        "{s:?}"
    );
    assert_eq!(op_count(&m, "Gather"), 0);
}

/// With its default optimizations onnxruntime fuses `DequantizeLinear` + `MatMul` (as for any
/// quantized weight, clustered or not) and computes differently: `quantize`'s tolerance there;
/// with basic optimizations the outputs tract computed, to 1e-4.
const ORT_DEFAULT_VS_TRACT: f32 = onnx_slim::rules::quantize::VERIFY_TOLERANCE;

#[test]
fn onnxruntime_runs_a_clustered_int8_model_with_the_outputs_tract_saw() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let q: Vec<u8> = picks(256 * 48, 255, 3)
        .into_iter()
        .map(|v| (v as i64 - 127) as i8 as u8)
        .collect();
    let scales: Vec<u8> = (0..48)
        .flat_map(|c| (0.01f32 + c as f32 * 1e-4).to_le_bytes())
        .collect();
    let proto = qmlp(
        raw("Q", &[256, 48], DataType::Int8, q),
        raw("scale", &[48], DataType::Float, scales),
        raw("zero", &[48], DataType::Int8, vec![0; 48]),
        4,
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for g in [ClusterGranularity::Tensor, ClusterGranularity::Channel] {
        let (m, report) = cluster(
            &proto,
            ClusterConfig {
                bits: 4,
                granularity: g,
            },
        );
        assert_eq!(rewrites(&report).len(), 1, "{:?}", skips(&report));
        let orig = d.path().join("q.onnx");
        let out = d.path().join(format!("{g:?}.onnx"));
        std::fs::write(&orig, encode_model(&proto)).unwrap();
        let c = m.to_proto();
        std::fs::write(&out, encode_model(&c)).unwrap();
        let sets = [x_set(4, seeded_f32(&[4, 256], 9))];
        let dirs = common::ort::tract_test_sets(&d.path().join(format!("{g:?}")), &c, &sets)
            .expect("tract runs");
        let mut args = vec!["--expected".to_string(), ORT_DEFAULT_VS_TRACT.to_string()];
        args.extend(dirs.iter().map(|d| d.to_string_lossy().to_string()));
        if let Err(e) = common::ort::ort_check(&py, &orig, &out, 1e-4, &args) {
            failures.push(format!("{g:?}: {e}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 2);
}

/// The rewrite as the text form shows it: the integer codes, the nibble unpacking, the int8
/// codebook `Gather` under the weight's name, and the `DequantizeLinear` as it was.
#[test]
fn the_quantized_rewrite_snapshot() {
    let q = raw("Q", &[64, 48], DataType::Int8, sixteen_levels_int8());
    let zero = raw("zero", &[], DataType::Int8, vec![0]);
    let proto = qmlp(q, scale_per_tensor(), zero, 4);
    let before = text::to_text(&Model::from_proto(proto.clone()).unwrap());
    let (m, report) = cluster(&proto, ClusterConfig::default());
    insta::assert_snapshot!(
        "qmlp_before_after",
        format!(
            "--- before\n{before}\n--- after\n{}\n--- report\n{}",
            text::to_text(&m),
            rewrites(&report).join("\n")
        )
    );
}

/// Per channel asked, but 16 elements per channel: the codebooks would cost more than the codes,
/// so one codebook for the tensor, saying why, as for float weights.
#[test]
fn small_channels_share_one_codebook_saying_why() {
    let q: Vec<u8> = picks(16 * 256, 255, 5)
        .into_iter()
        .map(|v| (v as i64 - 127) as i8 as u8)
        .collect();
    let scales: Vec<u8> = (0..256).flat_map(|_| 0.01f32.to_le_bytes()).collect();
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 16])
        .initializer(raw("Q", &[16, 256], DataType::Int8, q))
        .initializer(raw("scale", &[256], DataType::Float, scales))
        .initializer(raw("zero", &[256], DataType::Int8, vec![0; 256]))
        .node_named(
            "dq",
            "DequantizeLinear",
            &["Q", "scale", "zero"],
            &["W"],
            vec![attr_i("axis", 1)],
        )
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 256]);
    let (_, report) = cluster(
        &b.build(),
        ClusterConfig {
            bits: 4,
            granularity: ClusterGranularity::Channel,
        },
    );
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 1, "{:?}", skips(&report));
    assert!(
        lines[0].contains("4-bit per tensor, 16 centroids")
            && lines[0].contains("per tensor: 16 elements per channel, too few to pay"),
        "{}",
        lines[0]
    );
}
