//! `prune` with `--prune-round N`: the channels `--prune-ratio` keeps in each group are rounded to
//! the nearest multiple of `N` (never to 0, never above the group's count), exactly; the rule
//! reaches a fixed point; bad values are one line and exit 2. And the README's rounded rows on
//! the shared models, with the order of `prune` and `fuse-batchnorm`.

mod common;

use common::compare::assert_outputs_match;
use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis};
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::prune::{rounded_keep, PruneConfig};
use onnx_slim::verify::{self, InputSet};

const F32: DataType = DataType::Float;

fn run(proto: &ModelProto, rules: &str, prune: PruneConfig) -> (ModelProto, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        prune,
        ..Default::default()
    };
    let rules = registry::select(rules).expect("registered rules");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m.to_proto(), report)
}

fn ratio_round(r: f64, round: Option<usize>) -> PruneConfig {
    PruneConfig {
        ratio: Some(r),
        round,
        ..Default::default()
    }
}

fn init(m: &ModelProto, name: &str) -> ArrayD<f32> {
    let t = m
        .graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    tensor::to_f32(t).expect("f32")
}

/// `x[1,8,3,3]` → Conv `wa[32,8,1,1]`+`ba` → Relu → Conv `wb[12,32,1,1]`+`bb` → Relu → Conv
/// `wc[4,12,1,1]` → `y`: two groups, of 32 and 12 channels (the last Conv's feed the output).
fn chain(wa: ArrayD<f32>, wb: ArrayD<f32>) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 8, 3, 3])
        .initializer_f32("wa", wa)
        .initializer_f32("ba", seeded_f32(&[32], 2))
        .initializer_f32("wb", wb)
        .initializer_f32("bb", seeded_f32(&[12], 4))
        .initializer_f32("wc", seeded_f32(&[4, 12, 1, 1], 5))
        .node_named("a", "Conv", &["x", "wa", "ba"], &["ha"], vec![])
        .node("Relu", &["ha"], &["ra"], vec![])
        .node_named("b", "Conv", &["ra", "wb", "bb"], &["hb"], vec![])
        .node("Relu", &["hb"], &["rb"], vec![])
        .node_named("c", "Conv", &["rb", "wc"], &["y"], vec![])
        .output("y", F32, &[1, 4, 3, 3]);
    b.build()
}

/// The output channels of `w` (axis 0) outside the `n` of lowest L1 norm, ascending.
fn kept_by_l1(w: &ArrayD<f32>, n: usize) -> Vec<usize> {
    let l1 = |c: usize| -> f64 {
        w.index_axis(Axis(0), c)
            .iter()
            .map(|x| f64::from(x.abs()))
            .sum()
    };
    let mut order: Vec<usize> = (0..w.shape()[0]).collect();
    order.sort_by(|a, b| l1(*a).total_cmp(&l1(*b)));
    let mut kept = order[n..].to_vec();
    kept.sort();
    kept
}

/// `w` with the output channels (axis 0) not in `kept` set to 0.
fn zero_all_but(mut w: ArrayD<f32>, kept: &[usize]) -> ArrayD<f32> {
    for c in 0..w.shape()[0] {
        if !kept.contains(&c) {
            w.index_axis_mut(Axis(0), c).fill(0.0);
        }
    }
    w
}

#[test]
fn rounded_keep_is_the_nearest_multiple_never_0_never_above_the_count() {
    let cases: &[(usize, f64, Option<usize>, usize)] = &[
        (32, 0.3, None, 23),
        (32, 0.3, Some(1), 23),
        (32, 0.3, Some(8), 24),
        (32, 0.3, Some(16), 16),
        // 12 of 16: a tie between 8 and 16 keeps more.
        (16, 0.25, Some(8), 16),
        (12, 0.3, Some(8), 8),
        // The nearest multiple would be 0: the count stays unrounded.
        (5, 0.9, Some(16), 1),
        (12, 0.3, Some(32), 9),
        // The nearest multiple (32) is above the 30 channels: all stay.
        (30, 0.05, Some(16), 30),
        (256, 0.3, Some(16), 176),
        (1280, 0.3, Some(16), 896),
    ];
    for &(c, r, n, want) in cases {
        assert_eq!(
            rounded_keep(c, r, n),
            want,
            "{c} channels, ratio {r}, {n:?}"
        );
    }
    assert_eq!(cases.len(), 11);
}

#[test]
fn prune_round_keeps_exact_multiples_of_the_lowest_l1_channels_and_matches_the_zeroed_model() {
    // Oracle: the pruned model keeps exactly the `keep` channels of highest L1 norm, and computes
    // what the original does with the other channels' filters at 0 (their constant Relu(bias)
    // is folded into the next Conv's bias: 1×1 Convs without padding).
    let (wa, wb) = (
        seeded_f32(&[32, 8, 1, 1], 1),
        seeded_f32(&[12, 32, 1, 1], 3),
    );
    let original = chain(wa.clone(), wb.clone());
    let mut compared = 0;
    // (round, kept of a's 32, kept of b's 12 (None: b is skipped, keeping all 12))
    for (round, ka, kb) in [
        (None, 23, Some(9)),
        (Some(8), 24, Some(8)),
        (Some(16), 16, None),
    ] {
        let (pruned, report) = run(&original, "prune", ratio_round(0.3, round));
        let what = format!("--prune-round {round:?}: {:?}", skips(&report));
        let kb_dims = kb.unwrap_or(12) as i64;
        assert_eq!(dims(&pruned, "wa"), [ka as i64, 8, 1, 1], "{what}");
        assert_eq!(dims(&pruned, "wb"), [kb_dims, ka as i64, 1, 1], "{what}");
        assert_eq!(dims(&pruned, "wc"), [4, kb_dims, 1, 1], "{what}");
        if kb.is_none() {
            assert_eq!(report.patches(), 1, "{what}");
            assert!(
                skips(&report).iter().any(|s| s
                    == "Conv `b`: --prune-round 16 keeps all 12 channels (the nearest multiple of 16 to the 9 the ratio keeps is above or at 12)"),
                "{what}"
            );
        }
        // The oracle on `a`'s group alone (`wc` is cut only by `b`'s group, which it excludes):
        // with both, `b`'s removed channels would be valued with `a`'s constants in its bias.
        let mut cfg = ratio_round(0.3, round);
        cfg.exclude = vec!["wc".into()];
        let (pruned, _) = run(&original, "prune", cfg);
        let kept_a = kept_by_l1(&wa, 32 - ka);
        assert_eq!(init(&pruned, "wa"), wa.select(Axis(0), &kept_a), "{what}");
        assert_eq!(dims(&pruned, "wb"), [12, ka as i64, 1, 1], "{what}");
        let zeroed = chain(zero_all_but(wa.clone(), &kept_a), wb.clone());
        let sets: Vec<InputSet> = (0..2)
            .map(|seed| verify::inputs::random_inputs(&original, &[], seed).expect("inputs"))
            .collect();
        let oz = verify::run_many(&zeroed, &sets, "zeroed").expect("runs");
        let op = verify::run_many(&pruned, &sets, "pruned").expect("runs");
        for (x, y) in oz.iter().zip(&op) {
            assert_outputs_match(x, y, 1e-5, "pruned against zeroed");
        }
        compared += 1;
    }
    assert_eq!(compared, 3);
}

#[test]
fn prune_round_reaches_a_fixed_point() {
    let original = chain(
        seeded_f32(&[32, 8, 1, 1], 1),
        seeded_f32(&[12, 32, 1, 1], 3),
    );
    let mut compared = 0;
    for round in [8, 16] {
        let cfg = ratio_round(0.3, Some(round));
        let (once, report) = run(&original, "prune", cfg.clone());
        assert!(report.patches() > 0);
        let (twice, again) = run(&once, "prune", cfg);
        assert_eq!(again.patches(), 0, "{:?}", skips(&again));
        assert_eq!(twice, once, "--prune-round {round}");
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn bad_prune_round_values_are_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--prune-ratio", "0.3", "--prune-round", "0"],
            "--prune-round must be a whole number of channels, at least 1, got `0`",
        ),
        (
            &["--prune-ratio", "0.3", "--prune-round", "-8"],
            "--prune-round must be a whole number of channels, at least 1, got `-8`",
        ),
        (
            &["--prune-ratio", "0.3", "--prune-round", "2.5"],
            "invalid value '2.5' for '--prune-round <N>'",
        ),
        (
            &["--prune-round", "8"],
            "--prune-round rounds the channels --prune-ratio keeps; give --prune-ratio too",
        ),
    ];
    for (args, want) in cases {
        let d = tempfile::tempdir().expect("temp dir");
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prune.onnx");
        let out = d.path().join("out.onnx");
        let o = std::process::Command::new(common::bin())
            .arg(&input)
            .arg(&out)
            .args(["--rules", "prune"])
            .args(*args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?}: nothing is written");
    }
    assert_eq!(cases.len(), 4);
}
