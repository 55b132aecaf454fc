//! `onnx-slim bench`: runs presets of the main job on model folders and measures, for each, the
//! original against the rewritten model: file size, parameters, MACs, tract latency, the output
//! error on the test sets and the task metric. The results are a Markdown table
//! ([`table::render`]) and an SVG chart of size against error ([`chart::render`]).
//!
//! A model folder is in ONNX model-zoo layout: `model.onnx`, `test_data_set_*` folders of
//! `input_K.pb` (and `output_K.pb`, not used here), optionally `calibration/` and `meta.json`.
//! Each preset is a string of main-job arguments (`--rules quantize`, `--rules lowrank
//! --calibration {dir}/calibration`), split at whitespace, with `{dir}` in any argument replaced
//! by the model folder. It runs as a child process of the running binary
//! (`onnx-slim MODEL_DIR/model.onnx TMP/model.onnx ARGS... --report-json TMP/report.json`), so a
//! preset that fails (exit ≠ 0) becomes a row that says why instead of stopping the bench.
//!
//! What is measured, original and rewritten in the same run:
//! - **size**: the `.onnx` file plus the bytes of its tensors stored as external data;
//! - **parameters** and **MACs**: as `onnx-slim inspect` counts them;
//! - **latency**: the median of `runs` timed runs of each model's compiled tract plan on
//!   `test_data_set_0` (the compile is not timed), the two models taking turns, run after run,
//!   and going first in turn;
//! - **output error**: the rewritten model's outputs against the original's, both run in tract on
//!   every test set, by [`crate::verify::compare_outputs`] and
//!   [`crate::verify::relative_l2_error`]: the worst cosine, the worst relative L2 error, and the
//!   argmax agreement pooled over the test sets (the worst output's);
//! - **task metric**: when `meta.json` has `labels` (per test set, one integer class per row of
//!   the first output), the accuracy of the argmax of the first output along its last axis.
//!   Labels of another kind (text) are reported as n/a.

pub mod chart;
pub mod stack;
pub mod table;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::onnx::decode_file;
use crate::onnx::proto::ModelProto;
use crate::verify::runner::{run_many, Plan};
use crate::verify::{compare_outputs, load_test_data_sets, relative_l2_error, InputSet, Outputs};

/// The presets run when none is given.
pub const DEFAULT_PRESETS: [&str; 2] = ["--rules clean", "--rules quantize"];

/// What `bench` is asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Model folders (each holds `model.onnx` and `test_data_set_*`).
    pub dirs: Vec<PathBuf>,
    /// Main-job argument strings; empty means [`DEFAULT_PRESETS`].
    pub presets: Vec<String>,
    /// Timed runs per model and row (at least 1); the latency is their median.
    pub runs: usize,
    /// The binary that runs a preset's main job: normally `std::env::current_exe()`.
    pub exe: PathBuf,
}

/// A model folder checked before any work starts.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The folder as given.
    pub dir: PathBuf,
    /// Its name, as the table shows it.
    pub name: String,
    /// `labels` of its `meta.json`, if any.
    pub labels: Labels,
}

/// The `labels` of a `meta.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// No `meta.json`, or it has no `labels`.
    None,
    /// One integer class per row of the first output, per test set name.
    Classes(Vec<(String, Vec<i64>)>),
    /// Labels this bench cannot score (text, say), with what they are.
    Unusable(String),
}

/// One row of the results: a model and a preset.
#[derive(Debug, Clone)]
pub struct Row {
    /// The model folder's name.
    pub model: String,
    /// The preset as given (before `{dir}` is replaced).
    pub preset: String,
    /// What came of it.
    pub outcome: Outcome,
}

/// What came of one preset on one model.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The main job exited with `code` ≠ 0 and said `message` (its last line on stderr), or the
    /// bench could not read its output.
    Failed { code: Option<i32>, message: String },
    /// The main job wrote a model, measured against the original.
    Measured(Box<Measure>),
}

/// A pair of values: the original's and the rewritten model's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair<T> {
    /// The original model's value.
    pub original: T,
    /// The rewritten model's value.
    pub rewritten: T,
}

/// Measurements of one rewritten model against its original.
#[derive(Debug, Clone)]
pub struct Measure {
    /// File bytes, external data included.
    pub size: Pair<u64>,
    /// Parameter elements.
    pub params: Pair<u64>,
    /// Multiply-accumulates (symbolic dimensions counted as 1) of the nodes whose shapes are
    /// known.
    pub macs: Pair<u64>,
    /// Nodes whose MACs are unknown (shapes not inferred): `macs` is then a lower bound.
    pub macs_unknown_nodes: Pair<u64>,
    /// Median latency in milliseconds, when tract ran both models.
    pub latency_ms: Option<Pair<f64>>,
    /// Worst cosine over outputs and test sets (None when no output is numeric or tract failed).
    pub worst_cosine: Option<f64>,
    /// Worst relative L2 error over the test sets.
    pub worst_rel_l2: Option<f64>,
    /// Argmax agreement over all test sets, of the output that agrees least.
    pub argmax_agreement: Option<f64>,
    /// The task metric of both models.
    pub task: Task,
    /// Patches the main job applied (from its `--report-json`), if it said.
    pub patches: Option<u64>,
    /// Why some measurement is missing (tract could not run a model, ...).
    pub note: Option<String>,
}

/// The task metric of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// The model folder has no labels.
    None,
    /// Labels exist but cannot be scored here; why.
    NotApplicable(String),
    /// Accuracy as (correct, total) rows.
    Accuracy(Pair<(usize, usize)>),
}

/// The original model of a folder, measured once for all its presets.
struct Original {
    size: u64,
    params: u64,
    macs: (u64, u64),
    sets: Vec<InputSet>,
    /// Outputs on every test set, or why tract could not run it.
    outputs: std::result::Result<Vec<Outputs>, String>,
    /// The compiled plan for the timing set, or why tract could not compile it.
    plan: std::result::Result<Plan, String>,
    /// Index of the timing set (`test_data_set_0`, else the first).
    timing_set: usize,
}

/// Checks every folder (a `model.onnx`, at least one `test_data_set_*`, a readable `meta.json`)
/// before any work: a bad folder is an [`Error::Usage`].
pub fn check_dirs(dirs: &[PathBuf]) -> Result<Vec<ModelDir>> {
    if dirs.is_empty() {
        return Err(Error::Usage("bench needs at least one model folder".into()));
    }
    dirs.iter().map(|d| check_dir(d)).collect()
}

fn check_dir(dir: &Path) -> Result<ModelDir> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "`{}` is not a folder (expected a model folder: model.onnx + test_data_set_*)",
            dir.display()
        )));
    }
    if !dir.join("model.onnx").is_file() {
        return Err(Error::Usage(format!(
            "`{}` has no `model.onnx` (expected a model folder: model.onnx + test_data_set_*)",
            dir.display()
        )));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let has_sets = rd.filter_map(|e| e.ok()).any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("test_data_set_")
            && e.path().is_dir()
    });
    if !has_sets {
        return Err(Error::Usage(format!(
            "`{}` has no `test_data_set_*` folder to measure on",
            dir.display()
        )));
    }
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let meta = dir.join("meta.json");
    let labels = if meta.is_file() {
        let text = std::fs::read_to_string(&meta).map_err(|e| Error::io("read", &meta, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("`{}` is not valid json: {e}", meta.display())))?;
        parse_labels(&v)
    } else {
        Labels::None
    };
    Ok(ModelDir {
        dir: dir.to_path_buf(),
        name,
        labels,
    })
}

/// The `labels` of a parsed `meta.json`: an object of test set name → list of integer classes.
pub fn parse_labels(meta: &serde_json::Value) -> Labels {
    let Some(labels) = meta.get("labels") else {
        return Labels::None;
    };
    let Some(obj) = labels.as_object() else {
        return Labels::Unusable("labels are not an object of test sets".into());
    };
    let mut out = Vec::new();
    for (set, v) in obj {
        match v.as_array() {
            Some(a) => {
                let classes: Option<Vec<i64>> = a.iter().map(|x| x.as_i64()).collect();
                match classes {
                    Some(c) => out.push((set.clone(), c)),
                    None => return Labels::Unusable("labels are not integer classes".into()),
                }
            }
            None if v.is_string() => return Labels::Unusable("labels are text".into()),
            None => return Labels::Unusable("labels are not lists of classes".into()),
        }
    }
    out.sort();
    Labels::Classes(out)
}

/// Runs every preset on every folder (checked first with [`check_dirs`]) and measures the
/// results; `progress` is told what starts (the CLI prints it when stderr is a terminal).
pub fn run(opts: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<Vec<Row>> {
    if opts.runs == 0 {
        return Err(Error::Usage("`--runs` must be at least 1".into()));
    }
    let dirs = check_dirs(&opts.dirs)?;
    let presets: Vec<String> = if opts.presets.is_empty() {
        DEFAULT_PRESETS.iter().map(|s| s.to_string()).collect()
    } else {
        opts.presets.clone()
    };
    let mut rows = Vec::new();
    for d in &dirs {
        progress(&format!("bench: `{}`: measuring the original", d.name));
        let original = measure_original(d)?;
        for preset in &presets {
            progress(&format!("bench: `{}`: `{preset}`", d.name));
            let outcome = run_preset(opts, d, &original, preset)?;
            rows.push(Row {
                model: d.name.clone(),
                preset: preset.clone(),
                outcome,
            });
        }
    }
    Ok(rows)
}

/// Size of a loaded model: its file plus its external tensor payloads.
fn size_of(loaded: &crate::onnx::io::LoadedModel) -> u64 {
    loaded.file_len + loaded.external.bytes
}

/// Parameters, and MACs with the number of nodes whose MACs are unknown.
fn counts(proto: &ModelProto) -> Result<(u64, (u64, u64))> {
    let m = Model::from_proto(proto.clone())?;
    let i = crate::report::inspect::inspect(&m, 0);
    Ok((i.params.elements, (i.macs.total, i.macs.unknown_nodes)))
}

fn measure_original(d: &ModelDir) -> Result<Original> {
    let path = d.dir.join("model.onnx");
    let loaded = decode_file(&path)?;
    let size = size_of(&loaded);
    let proto = loaded.model;
    let (params, macs) = counts(&proto)?;
    let sets = load_test_data_sets(&d.dir, &proto)?;
    let timing_set = sets
        .iter()
        .position(|s| s.label == "test_data_set_0")
        .unwrap_or(0);
    let outputs = run_many(&proto, &sets, "original").map_err(|e| e.to_string());
    let plan = match &outputs {
        Ok(_) => Plan::compile(&proto, &sets[timing_set], "original")
            .map(|(p, _)| p)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    Ok(Original {
        size,
        params,
        macs,
        sets,
        outputs,
        plan,
        timing_set,
    })
}

/// The preset's arguments: split at whitespace, `{dir}` in any of them replaced by the model
/// folder (kept as the OS gave it, not only when it is UTF-8).
pub fn preset_args(preset: &str, dir: &Path) -> Vec<OsString> {
    preset
        .split_whitespace()
        .map(|a| {
            let mut arg = OsString::new();
            for (k, part) in a.split("{dir}").enumerate() {
                if k > 0 {
                    arg.push(dir.as_os_str());
                }
                arg.push(part);
            }
            arg
        })
        .collect()
}

/// The last non-empty line of a child's stderr, preferring the last `error:` line.
fn why(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no message".into())
}

fn failed(code: Option<i32>, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        code,
        message: message.into(),
    }
}

fn run_preset(opts: &BenchOptions, d: &ModelDir, orig: &Original, preset: &str) -> Result<Outcome> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("create a temp folder", "", e))?;
    let out = tmp.path().join("model.onnx");
    let report = tmp.path().join("report.json");
    let child = Command::new(&opts.exe)
        .arg(d.dir.join("model.onnx"))
        .arg(&out)
        .args(preset_args(preset, &d.dir))
        .arg("--report-json")
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("run", &opts.exe, e))?;
    if !child.status.success() {
        return Ok(failed(child.status.code(), why(&child.stderr)));
    }
    let loaded = match decode_file(&out) {
        Ok(l) => l,
        Err(e) => return Ok(failed(Some(0), format!("cannot read the output: {e}"))),
    };
    let patches = std::fs::read_to_string(&report)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| count_patches(&v));
    let size = size_of(&loaded);
    let proto = loaded.model;
    let (params, macs) = match counts(&proto) {
        Ok(c) => c,
        Err(e) => return Ok(failed(Some(0), format!("cannot read the output: {e}"))),
    };
    let mut m = Measure {
        size: Pair {
            original: orig.size,
            rewritten: size,
        },
        params: Pair {
            original: orig.params,
            rewritten: params,
        },
        macs: Pair {
            original: orig.macs.0,
            rewritten: macs.0,
        },
        macs_unknown_nodes: Pair {
            original: orig.macs.1,
            rewritten: macs.1,
        },
        latency_ms: None,
        worst_cosine: None,
        worst_rel_l2: None,
        argmax_agreement: None,
        task: Task::None,
        patches,
        note: None,
    };
    let orig_outputs = match &orig.outputs {
        Ok(o) => o,
        Err(e) => {
            m.note = Some(e.clone());
            m.task = task_metric(&d.labels, &orig.sets, None, None);
            return Ok(Outcome::Measured(Box::new(m)));
        }
    };
    let new_outputs = match run_many(&proto, &orig.sets, "rewritten") {
        Ok(o) => o,
        Err(e) => {
            m.note = Some(e.to_string());
            m.task = task_metric(&d.labels, &orig.sets, Some(orig_outputs), None);
            return Ok(Outcome::Measured(Box::new(m)));
        }
    };
    errors(&mut m, orig_outputs, &new_outputs);
    m.task = task_metric(
        &d.labels,
        &orig.sets,
        Some(orig_outputs),
        Some(&new_outputs),
    );
    match timing(opts.runs, orig, &proto) {
        Ok(l) => m.latency_ms = Some(l),
        Err(e) => m.note = Some(e.to_string()),
    }
    Ok(Outcome::Measured(Box::new(m)))
}

/// Patches applied, from the main job's report JSON (the sum of each rule's `rewrites`).
fn count_patches(v: &serde_json::Value) -> Option<u64> {
    let rules = v.get("report")?.get("rules")?.as_array()?;
    Some(
        rules
            .iter()
            .filter_map(|r| r.get("rewrites").and_then(|w| w.as_array()))
            .map(|w| w.len() as u64)
            .sum(),
    )
}

/// Fills the output error of `m`: worst cosine and relative L2 over the sets, and the pooled
/// argmax agreement of the output that agrees least.
fn errors(m: &mut Measure, a: &[Outputs], b: &[Outputs]) {
    let mut cosine: Option<f64> = None;
    let mut rel = 0f64;
    // Per output name: (agreeing rows, rows).
    let mut agree: Vec<(String, f64, f64)> = Vec::new();
    for (oa, ob) in a.iter().zip(b) {
        rel = rel.max(relative_l2_error(oa, ob));
        for c in compare_outputs(oa, ob, 0.0) {
            if let Some(x) = c.cosine {
                cosine = Some(cosine.map_or(x, |w: f64| w.min(x)));
            } else if c.note.is_some() {
                // A missing output or one of another shape is as wrong as it gets.
                cosine = Some(cosine.map_or(0.0, |w: f64| w.min(0.0)));
            }
            if let Some(frac) = c.argmax_agreement {
                let rows = c
                    .shape
                    .last()
                    .map_or(0.0, |&l| (c.elements / l.max(1)) as f64);
                match agree.iter_mut().find(|(n, _, _)| *n == c.output) {
                    Some(e) => {
                        e.1 += frac * rows;
                        e.2 += rows;
                    }
                    None => agree.push((c.output.clone(), frac * rows, rows)),
                }
            }
        }
    }
    m.worst_cosine = cosine;
    m.worst_rel_l2 = Some(rel);
    m.argmax_agreement = agree
        .iter()
        .filter(|(_, _, n)| *n > 0.0)
        .map(|(_, k, n)| k / n)
        .fold(None, |w: Option<f64>, x| Some(w.map_or(x, |w| w.min(x))));
}

/// Times the original's and the rewritten model's compiled plans on the timing set, in turns.
fn timing(runs: usize, orig: &Original, rewritten: &ModelProto) -> Result<Pair<f64>> {
    let plan_a = orig.plan.as_ref().map_err(|e| Error::Tract {
        model: "original".into(),
        reason: e.clone(),
    })?;
    let set = &orig.sets[orig.timing_set];
    let (plan_b, _) = Plan::compile(rewritten, set, "rewritten")?;
    let mut ta = Vec::with_capacity(runs);
    let mut tb = Vec::with_capacity(runs);
    let time = |plan: &Plan| -> Result<f64> {
        let t = Instant::now();
        plan.run(set)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    // Turns alternate which model goes first, so neither always runs on a warmer cache.
    for k in 0..runs {
        if k % 2 == 0 {
            ta.push(time(plan_a)?);
            tb.push(time(&plan_b)?);
        } else {
            tb.push(time(&plan_b)?);
            ta.push(time(plan_a)?);
        }
    }
    Ok(Pair {
        original: median(&mut ta),
        rewritten: median(&mut tb),
    })
}

/// The median of `v` (the mean of the two middle values for an even count); 0 when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The task metric: accuracy of the first output's argmax against the labels, per test set.
fn task_metric(
    labels: &Labels,
    sets: &[InputSet],
    a: Option<&Vec<Outputs>>,
    b: Option<&Vec<Outputs>>,
) -> Task {
    let classes = match labels {
        Labels::None => return Task::None,
        Labels::Unusable(why) => return Task::NotApplicable(why.clone()),
        Labels::Classes(c) => c,
    };
    let (Some(a), Some(b)) = (a, b) else {
        return Task::NotApplicable("tract did not run both models".into());
    };
    let score = |outs: &Vec<Outputs>| -> std::result::Result<(usize, usize), String> {
        let (mut right, mut total) = (0usize, 0usize);
        for (set, o) in sets.iter().zip(outs) {
            let Some((_, want)) = classes.iter().find(|(n, _)| *n == set.label) else {
                return Err(format!("no labels for `{}`", set.label));
            };
            let Some((_, first)) = o.first() else {
                return Err("no output".into());
            };
            let got = argmax_rows(first).ok_or("the first output is not numeric")?;
            if got.len() != want.len() {
                return Err(format!(
                    "`{}` has {} labels for {} rows",
                    set.label,
                    want.len(),
                    got.len()
                ));
            }
            right += got
                .iter()
                .zip(want)
                .filter(|(g, w)| i64::try_from(**g).is_ok_and(|g| g == **w))
                .count();
            total += got.len();
        }
        Ok((right, total))
    };
    match (score(a), score(b)) {
        (Ok(original), Ok(rewritten)) => Task::Accuracy(Pair {
            original,
            rewritten,
        }),
        (Err(e), _) | (_, Err(e)) => Task::NotApplicable(e),
    }
}

/// Index of the largest value of each row along the last axis (the first on ties; NaN never
/// wins); `None` for a non-numeric tensor.
fn argmax_rows(t: &Tensor) -> Option<Vec<usize>> {
    let c = t.cast_to::<f64>().ok()?;
    let v = c.to_plain_array_view::<f64>().ok()?;
    let last = t.shape().last().copied().unwrap_or(1).max(1);
    let flat: Vec<f64> = v.iter().copied().collect();
    Some(
        flat.chunks(last)
            .map(|row| {
                let mut best: Option<(usize, f64)> = None;
                for (i, &x) in row.iter().enumerate() {
                    if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
                        best = Some((i, x));
                    }
                }
                best.map_or(0, |(i, _)| i)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn presets_split_and_name_the_folder() {
        let a = preset_args(
            "--rules lowrank  --calibration {dir}/calibration",
            Path::new("m"),
        );
        assert_eq!(a, ["--rules", "lowrank", "--calibration", "m/calibration"]);
    }

    #[test]
    fn labels_integer_text_and_absent() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"labels": {"test_data_set_1": [2], "test_data_set_0": [1, 0]}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            parse_labels(&v),
            Labels::Classes(vec![
                ("test_data_set_0".into(), vec![1, 0]),
                ("test_data_set_1".into(), vec![2])
            ])
        );
        let v: serde_json::Value =
            serde_json::from_str(r#"{"labels": {"test_data_set_0": "KbtDE"}}"#).unwrap_or_default();
        assert_eq!(parse_labels(&v), Labels::Unusable("labels are text".into()));
        assert_eq!(parse_labels(&serde_json::json!({})), Labels::None);
    }

    #[test]
    fn the_error_line_is_the_last_error() {
        assert_eq!(why(b"note: x\nerror: bad thing\n\n"), "error: bad thing");
        assert_eq!(why(b"something\nlast\n"), "last");
        assert_eq!(why(b""), "no message");
    }
}
