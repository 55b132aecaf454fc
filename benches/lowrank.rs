//! The `lowrank` rule on the real models: SVD timings, compression, task metric, tract latency.
//!
//! Run: `cargo bench --bench lowrank` (everything, a few minutes on 2 cores), or one part:
//!
//! - `cargo bench --bench lowrank -- factor`: time to factor every candidate layer of
//!   `captcha_crnn` (thin SVD), and thin vs randomized SVD on its Gemm at small ranks;
//! - `cargo bench --bench lowrank -- digits` / `-- captcha`: the configurations the README quotes,
//!   each as the `onnx-slim` command that makes it: MatMul/Gemm parameters and MACs, accuracy
//!   (digits_mlp, labels in meta.json) or per-timestep argmax agreement with `output_0.pb`
//!   (captcha_crnn), and tract latency of original vs rewritten (median of several runs);
//! - `cargo bench --bench lowrank -- compare`: data-aware vs plain SVD at the same ranks;
//! - `cargo bench --bench lowrank -- run MODEL FLAGS...`: any configuration, e.g.
//!   `-- run digits_mlp --lowrank-rank 96 --calibration calibration` (paths relative to the
//!   model's folder).
//!
//! The rewrite goes through the library exactly as the binary does: the flags are parsed by the
//! binary's own argument parser and turned into the same `Config`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use onnx_slim::calibrate;
use onnx_slim::cli::args::Cli;
use onnx_slim::ir::{tensor, Model, ValueRef};
use onnx_slim::linalg::{self, RankRequest};
use onnx_slim::onnx::{decode_file, encode_model, proto::ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions};
use onnx_slim::rules::lowrank::LowrankConfig;
use onnx_slim::verify::{self, InputSet};
use tract_onnx::prelude::*;

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models"))
}

/// Runs in tract: compiled plans per input shape, outputs per set.
struct Runner {
    plans: Vec<Arc<TypedRunnableModel>>,
}

impl Runner {
    fn new(proto: &ModelProto, sets: &[InputSet]) -> Runner {
        let bytes = encode_model(proto);
        let plans = sets
            .iter()
            .map(|s| calibrate::compile(&bytes, s).expect("tract compiles the model"))
            .collect();
        Runner { plans }
    }

    fn outputs(&self, sets: &[InputSet]) -> Vec<Tensor> {
        self.plans
            .iter()
            .zip(sets)
            .map(|(p, s)| {
                calibrate::run_plan(p, s)
                    .expect("tract runs the model")
                    .remove(0)
            })
            .collect()
    }

    /// Median wall time of one pass over every set, in milliseconds.
    fn latency_ms(&self, sets: &[InputSet], runs: usize) -> f64 {
        for _ in 0..2 {
            self.outputs(sets);
        }
        let mut t: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                self.outputs(sets);
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        t[runs / 2]
    }
}

fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let a = t.to_plain_array_view::<f32>().expect("f32 output");
    let last = *a.shape().last().expect("rank ≥ 1");
    let flat: Vec<f32> = a.iter().copied().collect();
    flat.chunks(last)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| {
                    if *v > bv {
                        (i, *v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

/// The task metric: accuracy against `meta.json` labels (digits_mlp), else per-timestep argmax
/// agreement with each set's `output_0.pb`.
fn metric(model: &str, sets: &[InputSet], outs: &[Tensor]) -> (String, f64) {
    let dir = models_dir().join(model);
    if model == "digits_mlp" {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
                .expect("json");
        let (mut ok, mut n) = (0, 0);
        for (s, o) in sets.iter().zip(outs) {
            let labels = meta["labels"][&s.label].as_array().expect("labels");
            for (p, l) in argmax_rows(o).iter().zip(labels) {
                n += 1;
                ok += (*p as u64 == l.as_u64().expect("label")) as usize;
            }
        }
        ("accuracy".into(), ok as f64 / n as f64)
    } else {
        let (mut ok, mut n) = (0, 0);
        for (s, o) in sets.iter().zip(outs) {
            let p = verify::read_tensor_proto(&dir.join(&s.label).join("output_0.pb"))
                .expect("output_0.pb");
            let want = argmax_rows(&verify::tensor_from_proto(&p).expect("tensor"));
            let got = argmax_rows(o);
            assert_eq!(want.len(), got.len(), "output shape");
            n += want.len();
            ok += want.iter().zip(&got).filter(|(a, b)| a == b).count();
        }
        ("argmax agreement".into(), ok as f64 / n as f64)
    }
}

/// Parameters (= MACs per row) of MatMul/Gemm 2-D constant weights, and of Conv weights.
fn dense_and_conv_params(m: &Model) -> (u64, u64) {
    let g = &m.graph;
    let (mut dense, mut conv) = (0, 0);
    for id in g.ops() {
        let op = g.node(id).op_type().to_string();
        for v in g.node_inputs(id).into_iter().flatten().take(2) {
            if let Some(t) = g.const_tensor(v) {
                let n = tensor::numel(t).unwrap_or(0);
                match op.as_str() {
                    "MatMul" | "Gemm" if t.dims.len() == 2 => dense += n,
                    "Conv" => conv += n,
                    _ => {}
                }
            }
        }
    }
    (dense, conv)
}

struct Outcome {
    command: String,
    dense: (u64, u64),
    conv: (u64, u64),
    metric: (String, f64, f64),
    /// Relative L2 error of the rewritten outputs vs the original's (tract), argmax agreement,
    /// and the smallest verification tolerance that passes: `max |a−b| / max(1, |a|)`.
    fidelity: (f64, f64, f64),
    latency: (f64, f64),
    bytes: (usize, usize),
    report: String,
}

/// Rewrites `model` with the `onnx-slim` flags `flags` (paths relative to the model folder).
fn run(model: &str, flags: &[&str], with_latency: bool) -> Outcome {
    let dir = models_dir().join(model);
    let input = dir.join("model.onnx");
    let mut argv: Vec<String> = vec![
        "onnx-slim".into(),
        input.display().to_string(),
        "/tmp/out.onnx".into(),
    ];
    let mut shown: Vec<String> = vec![];
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        argv.push(f.to_string());
        shown.push(f.to_string());
        if *f == "--calibration" {
            let p = it.next().expect("--calibration DIR");
            argv.push(dir.join(p).display().to_string());
            shown.push(format!("../shared/models/{model}/{p}"));
        }
    }
    let cli = Cli::try_parse_from(&argv).expect("flags parse");
    let a = &cli.run;
    let config = Config {
        calibration: a.calibration.clone(),
        lowrank: LowrankConfig::from_flags(
            a.lowrank_energy,
            a.lowrank_rank,
            a.lowrank_ratio,
            a.lowrank_tolerance,
            a.lowrank_min_saving,
        )
        .expect("valid flags"),
        ..Default::default()
    };
    let mut config = config;
    // Experiments only: override the whitening ridge.
    if let Some(r) = std::env::var("LOWRANK_RIDGE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.lowrank.ridge = r;
    }
    let rules = registry::select(a.rules.as_deref().unwrap_or("lowrank")).expect("rules");
    let original = decode_file(&input).expect("decode").model;
    let mut m = Model::from_proto(original.clone()).expect("ir");
    let before = dense_and_conv_params(&m);
    let t0 = Instant::now();
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("rewrite");
    let secs = t0.elapsed().as_secs_f64();
    let after = dense_and_conv_params(&m);
    let rewritten = m.to_proto();
    let sets = verify::load_test_data_sets(&dir, &original).expect("test sets");
    let r0 = Runner::new(&original, &sets);
    let r1 = Runner::new(&rewritten, &sets);
    let (o0, o1) = (r0.outputs(&sets), r1.outputs(&sets));
    let (name, m0) = metric(model, &sets, &o0);
    let (_, m1) = metric(model, &sets, &o1);
    let fidelity = {
        let (mut num, mut den, mut agree, mut n) = (0.0f64, 0.0f64, 0usize, 0usize);
        let mut worst = 0.0f64;
        for (a, b) in o0.iter().zip(&o1) {
            let (va, vb) = (
                a.to_plain_array_view::<f32>().expect("f32"),
                b.to_plain_array_view::<f32>().expect("f32"),
            );
            for (x, y) in va.iter().zip(vb.iter()) {
                num += ((x - y) as f64).powi(2);
                worst = worst.max(((x - y).abs() / x.abs().max(1.0)) as f64);
                den += (*x as f64).powi(2);
            }
            let (pa, pb) = (argmax_rows(a), argmax_rows(b));
            n += pa.len();
            agree += pa.iter().zip(&pb).filter(|(p, q)| p == q).count();
        }
        (
            (num / den.max(1e-300)).sqrt(),
            agree as f64 / n.max(1) as f64,
            worst,
        )
    };
    let latency = if with_latency {
        // Interleaved so that both see the same machine state.
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..5 {
            a.push(r0.latency_ms(&sets, 5));
            b.push(r1.latency_ms(&sets, 5));
        }
        a.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
        b.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
        (a[2], b[2])
    } else {
        (f64::NAN, f64::NAN)
    };
    let mut text = String::new();
    for r in &report.rules {
        for w in &r.rewrites {
            text += &format!("    rewrote {}\n", w.description);
        }
        for s in r
            .skips
            .iter()
            .filter(|s| !s.reason.contains("low-rank pair"))
        {
            text += &format!("    skipped {} `{}`: {}\n", s.op, s.node, s.reason);
        }
    }
    text += &format!("    rewrite took {secs:.2} s\n");
    Outcome {
        command: format!(
            "onnx-slim ../shared/models/{model}/model.onnx out.onnx {}",
            shown.join(" ")
        ),
        dense: (before.0, after.0),
        conv: (before.1, after.1),
        metric: (name, m0, m1),
        fidelity,
        latency,
        bytes: (
            encode_model(&original).len(),
            encode_model(&rewritten).len(),
        ),
        report: text,
    }
}

fn print(o: &Outcome, verbose: bool) {
    let less = |a: u64, b: u64| 100.0 * (1.0 - b as f64 / a.max(1) as f64);
    println!("$ {}", o.command);
    let mut line = format!(
        "  MatMul/Gemm weights (params = MACs per row): {} → {} ({:.1} % fewer)",
        o.dense.0,
        o.dense.1,
        less(o.dense.0, o.dense.1)
    );
    if o.conv.0 > 0 {
        line += &format!(
            "; Conv weights (params = MACs per pixel): {} → {} ({:.1} % fewer)",
            o.conv.0,
            o.conv.1,
            less(o.conv.0, o.conv.1)
        );
    }
    println!("{line}");
    println!(
        "  {}: original {:.2} % → rewritten {:.2} %; file {} → {} bytes",
        o.metric.0,
        100.0 * o.metric.1,
        100.0 * o.metric.2,
        o.bytes.0,
        o.bytes.1
    );
    println!(
        "  vs the original in tract: relative output error {:.4}, argmax agreement {:.2} %, passes verification from tolerance {:.4}",
        o.fidelity.0,
        100.0 * o.fidelity.1,
        o.fidelity.2
    );
    if o.latency.0.is_finite() {
        println!(
            "  tract latency, all test sets, median: original {:.3} ms → rewritten {:.3} ms",
            o.latency.0, o.latency.1
        );
    }
    if verbose {
        print!("{}", o.report);
    }
}

fn factor_timings() {
    println!("== time to factor every candidate layer of captcha_crnn (f64, faer, 2 cores)");
    let path = models_dir().join("captcha_crnn/model.onnx");
    let m = Model::from_proto(decode_file(&path).expect("decode").model).expect("ir");
    let g = &m.graph;
    let mut total = 0.0;
    let mut gemm = None;
    for id in g.ops() {
        let op = g.node(id).op_type();
        if !matches!(op, "MatMul" | "Gemm" | "Conv") {
            continue;
        }
        let Some(v): Option<ValueRef> = g.input(id, 1) else {
            continue;
        };
        let Some(t) = g.const_tensor(v) else { continue };
        let w = tensor::to_f32(t).expect("f32");
        let rows = t.dims[0] as usize;
        let w2 = w
            .into_shape_with_order((rows, t.dims[1..].iter().product::<i64>() as usize))
            .expect("2-D");
        // The matrix as the rule factors it: K × N.
        let wk = w2.t().as_standard_layout().to_owned();
        let (k, n) = wk.dim();
        let req = RankRequest {
            fixed: None,
            energy: Some(0.95),
            max_rank: k.min(n),
        };
        let t0 = Instant::now();
        let out = linalg::low_rank(wk.view(), None, &req);
        let dt = t0.elapsed().as_secs_f64();
        total += dt;
        let rank = match &out {
            linalg::Outcome::Factored(f) => f.rank.to_string(),
            _ => "-".into(),
        };
        println!(
            "  {op:<5} {:<8} stored {:?} → K×N = {k}×{n}: {:.1} ms (rank at energy 0.95: {rank})",
            g.node(id).label(),
            t.dims,
            dt * 1e3
        );
        if op == "Gemm" {
            gemm = Some(wk);
        }
    }
    println!("  total: {:.3} s", total);
    if let Some(wk) = gemm {
        let wf = linalg::to_faer(wk.view());
        let t0 = Instant::now();
        let thin = linalg::thin_svd(wf.as_ref());
        let thin_s = t0.elapsed().as_secs_f64();
        println!(
            "  Gemm {}×{}: thin SVD {:.3} s",
            wk.nrows(),
            wk.ncols(),
            thin_s
        );
        for r in [32, 64, 128, 256] {
            let t0 = Instant::now();
            let rnd =
                linalg::randomized_svd(wf.as_ref(), r + (r / 4).max(10), linalg::POWER_ITERS, 1);
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "    rank {r:>3}: randomized ({} cols, {} power its) {:.3} s, error {:.5} vs optimal {:.5}",
                r + (r / 4).max(10),
                linalg::POWER_ITERS,
                dt,
                rnd.rel_error(r),
                thin.rel_error(r)
            );
        }
    }
}

/// The configurations quoted in the README.
const DIGITS: &[&[&str]] = &[
    &["--rules", "lowrank"],
    &["--rules", "lowrank", "--lowrank-rank", "128"],
    &["--rules", "lowrank", "--calibration", "calibration"],
    &[
        "--rules",
        "lowrank",
        "--lowrank-tolerance",
        "0.05",
        "--calibration",
        "calibration",
    ],
];
const CAPTCHA: &[&[&str]] = &[
    &["--rules", "lowrank"],
    &["--rules", "lowrank", "--calibration", "calibration"],
    &[
        "--rules",
        "lowrank",
        "--lowrank-rank",
        "400",
        "--calibration",
        "calibration",
    ],
];
/// Plain vs data-aware at the same fixed ranks (on captcha_crnn, ranks ≥ 178 touch only the
/// Gemm: no conv saves anything there).
const COMPARE: &[(&str, &[&str])] = &[
    (
        "digits_mlp",
        &["--lowrank-rank", "6", "--lowrank-min-saving", "0"],
    ),
    (
        "digits_mlp",
        &["--lowrank-rank", "8", "--lowrank-min-saving", "0"],
    ),
    (
        "digits_mlp",
        &["--lowrank-rank", "12", "--lowrank-min-saving", "0"],
    ),
    ("captcha_crnn", &["--lowrank-rank", "200"]),
    ("captcha_crnn", &["--lowrank-rank", "300"]),
];

fn compare() {
    println!("== plain SVD vs data-aware at the same rank");
    for (model, flags) in COMPARE {
        let mut f: Vec<&str> = vec!["--rules", "lowrank"];
        f.extend_from_slice(flags);
        let plain = run(model, &f, false);
        f.extend_from_slice(&["--calibration", "calibration"]);
        let aware = run(model, &f, false);
        println!(
            "  {model} {}: {} {:.2} % (plain) vs {:.2} % (data-aware); output error vs original {:.4} vs {:.4}",
            flags.join(" "),
            plain.metric.0,
            100.0 * plain.metric.2,
            100.0 * aware.metric.2,
            plain.fidelity.0,
            aware.fidelity.0
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !models_dir().is_dir() {
        eprintln!("SKIPPED: ../shared/models not found; nothing to benchmark");
        return;
    }
    let what = args.first().map(String::as_str).unwrap_or("all");
    if what == "run" {
        let model = args.get(1).expect("run MODEL FLAGS...");
        let flags: Vec<&str> = args[2..].iter().map(String::as_str).collect();
        print(&run(model, &flags, false), true);
        return;
    }
    if matches!(what, "all" | "factor") {
        factor_timings();
    }
    if matches!(what, "all" | "digits") {
        println!("== digits_mlp");
        for f in DIGITS {
            print(&run("digits_mlp", f, true), true);
        }
    }
    if matches!(what, "all" | "captcha") {
        println!("== captcha_crnn");
        for f in CAPTCHA {
            print(&run("captcha_crnn", f, true), true);
        }
    }
    if matches!(what, "all" | "compare") {
        compare();
    }
}
