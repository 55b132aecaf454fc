//! The ONNX node suite as an oracle for our encoder: every case goes decode → IR → encode, and
//! both the original file and our bytes run in tract against the expected `output_N.pb`.
//!
//! Prints `N passed, N failed, N skipped (tract cannot run: …)`. A case tract runs and matches
//! on the original must also run and match on our bytes, with bit-identical outputs; anything
//! else fails the test.

mod common;

use common::compare;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_file, encode_model};
use tract_onnx::prelude::*;

/// Tolerance against `output_N.pb`, as in ../shared/README.md: max abs error ≤ 1e-3, except
/// fp16 outputs at 2e-3 (NaN, infinities, dtypes, shapes and output counts as in
/// [`common::compare`]).
fn close(got: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    let (got, want) = (
        compare::positional(got.iter().cloned()),
        compare::positional(want.iter().cloned()),
    );
    compare::outputs_within_abs(&want, &got, |c| if c.dtype == "F16" { 2e-3 } else { 1e-3 })
        .map(|_| ())
        .map_err(|table| {
            // The first output that differs, on one line.
            let row = table.lines().find(|l| l.contains("FAIL")).unwrap_or(&table);
            row.split_whitespace().collect::<Vec<_>>().join(" ")
        })
}

fn load_pb(path: &Path) -> TractResult<Tensor> {
    let f = std::fs::File::open(path)?;
    let proto = tract_onnx::tensor::proto_from_reader(f)?;
    let t = tract_onnx::tensor::load_tensor(&*tract_onnx::data_resolver::default(), &proto, None)?;
    Ok(t)
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

/// Runs `bytes` in tract on every test set of `case`; returns the outputs per set, or why not.
fn run(bytes: &[u8], case: &Path) -> Result<Vec<Vec<Tensor>>, String> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    let mut all = Vec::new();
    for set in sets {
        let inputs: Vec<Tensor> = numbered(&set, "input")
            .iter()
            .map(|p| load_pb(p))
            .collect::<TractResult<_>>()
            .map_err(|e| {
                format!(
                    "loading an input: {}",
                    first_line(&e.root_cause().to_string())
                )
            })?;
        let result = catch_unwind(AssertUnwindSafe(|| -> TractResult<Vec<Tensor>> {
            let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
            for (i, t) in inputs.iter().enumerate() {
                model.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))?;
            }
            for i in 0..model.outputs.len() {
                model.set_output_fact(i, InferenceFact::default())?;
            }
            let plan = model.into_optimized()?.into_runnable()?;
            let out = plan.run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect())?;
            Ok(out.into_iter().map(|v| v.into_tensor()).collect())
        }));
        match result {
            Ok(Ok(out)) => all.push(out),
            Ok(Err(e)) => {
                // The outermost context names the node, the root cause names the op or dtype.
                let outer = first_line(&e.to_string());
                let root = first_line(&e.root_cause().to_string());
                return Err(if outer == root {
                    outer
                } else {
                    format!("{outer}: {root}")
                });
            }
            Err(_) => return Err("tract panicked".into()),
        }
    }
    Ok(all)
}

fn first_line(s: &str) -> String {
    let s = s.lines().next().unwrap_or("").trim();
    s.chars().take(160).collect()
}

/// The expected outputs of every test set of `case`, or why one cannot be read.
fn expected(case: &Path) -> Result<Vec<Vec<Tensor>>, String> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    sets.iter()
        .map(|s| {
            numbered(s, "output")
                .iter()
                .map(|p| load_pb(p))
                .collect::<TractResult<Vec<_>>>()
                .map_err(|e| {
                    format!(
                        "loading an expected output: {}",
                        first_line(&e.root_cause().to_string())
                    )
                })
        })
        .collect()
}

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

fn check(case: &Path) -> Outcome {
    let model_path = case.join("model.onnx");
    let Ok(original) = std::fs::read(&model_path) else {
        return Outcome::Failed("cannot read model.onnx".into());
    };
    let ours = match decode_file(&model_path).and_then(|l| Model::from_proto(l.model)) {
        Ok(m) => encode_model(&m.to_proto()),
        Err(e) => return Outcome::Failed(format!("onnx-slim cannot decode: {e}")),
    };
    let got = match run(&original, case) {
        Ok(g) => g,
        Err(e) => return Outcome::Skipped(format!("tract cannot run: {e}")),
    };
    let want = match expected(case) {
        Ok(w) => w,
        Err(e) => return Outcome::Skipped(e),
    };
    if got.len() != want.len() {
        return Outcome::Failed(format!("{} sets run, {} expected", got.len(), want.len()));
    }
    if let Some(m) = got.iter().zip(&want).find_map(|(g, w)| close(g, w).err()) {
        return Outcome::Skipped(format!("tract disagrees with the expected output: {m}"));
    }
    match run(&ours, case) {
        Err(e) => Outcome::Failed(format!("tract runs the original but not our bytes: {e}")),
        Ok(ours_out) => {
            // Equal at tolerance 0 (NaN where NaN), and bit for bit: `Tensor`'s equality
            // compares dtype, shape and bytes.
            let exact = ours_out.len() == got.len()
                && ours_out.iter().zip(&got).all(|(o, g)| {
                    compare::outputs_match(
                        &compare::positional(g.iter().cloned()),
                        &compare::positional(o.iter().cloned()),
                        0.0,
                    )
                    .is_ok()
                });
            if exact && ours_out == got {
                Outcome::Passed
            } else {
                Outcome::Failed("our bytes give different outputs from the original's".into())
            }
        }
    }
}

/// Buckets a skip reason for the summary: the op or dtype named, else the first words.
fn bucket(reason: &str) -> String {
    let reason = reason.trim_start_matches("tract cannot run: ");
    // Node names and numbers vary per case; keep the part after the last `: ` that says why.
    let why = reason.rsplit(": ").next().unwrap_or(reason);
    let op = reason
        .split_whitespace()
        .find(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && !w.starts_with("Translating")
                && !w.starts_with("Failed")
        })
        .unwrap_or("");
    let why: String = why.chars().take(70).collect();
    if reason.starts_with("Translating node") {
        format!("{op}: {why}")
    } else {
        why
    }
}

#[test]
fn node_suite_runs_the_same_in_tract_after_our_round_trip() {
    let Some(cases) = common::node_test_cases() else {
        return;
    };
    let results: Mutex<Vec<(PathBuf, Outcome)>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let outcome = check(case);
                results.lock().unwrap().push((case.clone(), outcome));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let listed = common::node_suite_skips();
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), Vec::new());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (case, o) in &results {
        let name = common::case_name(case);
        match o {
            Outcome::Passed if listed.contains_key(&name) => failed.push(format!(
                "{name}: passes now; remove it from {}",
                common::NODE_SUITE_SKIPS
            )),
            Outcome::Passed => passed += 1,
            Outcome::Failed(e) => failed.push(format!("{name}: {e}")),
            Outcome::Skipped(r) => {
                if !listed.contains_key(&name)
                    && std::env::var_os("ONNX_SLIM_WRITE_SKIPS").is_none()
                {
                    failed.push(format!(
                        "{name}: not compared ({r}) and not in {}",
                        common::NODE_SUITE_SKIPS
                    ));
                }
                skipped.push((name, bucket(r)));
            }
        }
    }
    for (_, why) in &skipped {
        *reasons.entry(why.clone()).or_default() += 1;
    }
    // The README's largest skip reasons.
    let readme_reasons = [
        ("Reduce13: expected axes as a constant", 101),
        ("Wrong number of outputs. Op says 1, node says 2.", 58),
        (
            "Unimplemented(NegativeLogLikelihoodLoss): Operator can not be made a TypedOp.",
            52,
        ),
        ("Resize: None", 39),
    ];
    let reason_counts: Vec<(&str, usize)> = readme_reasons
        .iter()
        .map(|(r, _)| (*r, reasons.get(*r).copied().unwrap_or(0)))
        .collect();
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1));
    let top: Vec<String> = top
        .iter()
        .take(15)
        .map(|(r, n)| format!("{n}× {r}"))
        .collect();
    common::skip_loudly(&format!(
        "node suite: {passed} passed, {} failed, {} skipped (tract cannot run: {})",
        failed.len(),
        skipped.len(),
        top.join("; ")
    ));
    if std::env::var_os("ONNX_SLIM_WRITE_SKIPS").is_some() {
        skipped.sort();
        common::write_node_suite_skips(&skipped);
    }
    assert_eq!(passed + failed.len() + skipped.len(), cases.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The README's numbers (Results, "Lossless round trip and the node suite").
    assert_eq!(cases.len(), 1765, "cases in ../shared/onnx-node-tests");
    assert_eq!(
        skipped.len(),
        listed.len(),
        "listed skips that did not occur"
    );
    assert_eq!(
        (passed, skipped.len()),
        (998, 767),
        "README: 998 passed, 767 skipped"
    );
    assert_eq!(
        reason_counts, readme_reasons,
        "README: the largest skip reasons"
    );
}
