//! The main job (rewrite, verify, write, report), `verify` and `--list-rules`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;

use super::args::{RunArgs, VerifyInputArgs};
use super::summary;
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::onnx::{
    decode_file, encode_model, prepare_small_file, prepare_write, prepare_write_bytes,
    resolve_output, SaveOptions,
};
use crate::rewrite::{self, registry, Config, DriverOptions};

/// The rule table as text.
pub fn list_rules() -> String {
    let rows: Vec<[String; 5]> = registry::all()
        .iter()
        .map(|r| {
            let m = r.meta();
            let kind = match m.exactness {
                rewrite::Exactness::Exact { tolerance } => format!("exact (tolerance {tolerance})"),
                rewrite::Exactness::Lossy { tolerance } => format!("lossy (tolerance {tolerance})"),
            };
            [
                m.code.to_string(),
                m.name.to_string(),
                m.group.to_string(),
                kind,
                m.summary.to_string(),
            ]
        })
        .collect();
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let w = [width(0), width(1), width(2), width(3)];
    let mut s = String::new();
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    }
    s
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// `onnx-slim IN OUT`: rewrite, verify the encoded bytes against IN, write atomically, report.
pub fn main_job(args: &RunArgs) -> Result<i32> {
    main_job_with_rules(args, &[])
}

/// [`main_job`] with `extra` rules run after the ones `--rules` selects (in every round of the
/// driver, verified and reported like the others). Nothing is written unless verification
/// passes; a failure is [`Error::VerifyFailed`] naming the outputs that disagree.
pub fn main_job_with_rules(args: &RunArgs, extra: &[&dyn rewrite::Rule]) -> Result<i32> {
    let (Some(input), Some(output)) = (&args.input, &args.output) else {
        return Err(Error::Usage("expected IN and OUT".into()));
    };
    let mut rules: Vec<&dyn rewrite::Rule> =
        registry::select(args.rules.as_deref().unwrap_or(registry::DEFAULT_SELECTION))?;
    rules.extend_from_slice(extra);
    let lowrank = crate::rules::lowrank::LowrankConfig::from_flags(
        args.lowrank_energy,
        args.lowrank_rank,
        args.lowrank_ratio,
        args.lowrank_tolerance,
        args.lowrank_min_saving,
    )?;
    let prune = crate::rules::prune::PruneConfig::from_flags(
        args.prune_zero,
        args.prune_ratio,
        args.prune_importance.as_deref(),
        &args.prune_exclude,
    )?;
    let quantize = crate::rules::quantize::QuantizeConfig::from_flags(
        args.quantize_weights.as_deref(),
        args.quantize_granularity.as_deref(),
        &args.quantize_exclude,
        args.quantize_tolerance,
    )?;
    if same_file(input, output) && !args.in_place {
        return Err(Error::Usage(format!(
            "refusing to overwrite the input `{}`; pass --in-place to allow it",
            input.display()
        )));
    }
    resolve_output(output)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "cannot write `{}`: folder `{}` does not exist",
                output.display(),
                dir.display()
            )));
        }
    }
    // The report's temp file is made up front: an unwritable report stops the run before any
    // work, and at the end the report and OUT land together.
    let report_file = match &args.report_json {
        Some(path) if same_file(path, output) || same_file(path, input) => {
            return Err(Error::Usage(format!(
                "--report-json `{}` would overwrite the model",
                path.display()
            )))
        }
        Some(path) => Some((path, prepare_small_file(path)?)),
        None => None,
    };
    let loaded = decode_file(input)?;
    // The verification flags are checked even when nothing ends up verified.
    let shapes = crate::verify::inputs::parse_input_shapes(&args.verify.input_shape)?;
    crate::verify::inputs::check_input_shapes(&loaded.model, &[], &shapes)?;
    if let Some(p) = args.verify.inputs.as_ref().filter(|p| !p.exists()) {
        return Err(Error::Usage(format!(
            "inputs `{}` do not exist",
            p.display()
        )));
    }
    let original = loaded.model.clone();
    let mut model = Model::from_proto(loaded.model)?;
    let config = Config {
        calibration: args.calibration.clone(),
        prune,
        lowrank,
        quantize,
    };
    let report = rewrite::run(
        &mut model,
        &rules,
        &config,
        &DriverOptions {
            max_patches: args.max_patches,
        },
    )?;
    let proto = model.to_proto();
    let text = summary::render(&report);
    let mut verification = None;
    // Printed once the output is written, so that a failed write leaves one line on stderr.
    let mut notice = None;
    print!("{text}");
    if args.no_verify {
        notice = Some("verification skipped (--no-verify)");
    } else if report.patches() == 0 {
        notice = Some(
            if args.external_data.is_none() && loaded.external.tensors == 0 {
                "no rewrite applied: the output is the input, byte for byte; nothing to verify"
            } else {
                "no rewrite applied: the output is the input re-encoded, nothing to verify"
            },
        );
    } else {
        let tolerance = args
            .verify
            .tolerance
            .unwrap_or_else(|| report.tolerance(&rules, &config).max(1e-5));
        // Verify exactly the bytes that will be written (before external data is split off).
        let bytes = encode_model(&proto);
        let written = crate::onnx::decode_bytes(bytes.into(), output)?;
        let v = super::run::verify_models(&original, &written, input, &args.verify, tolerance)?;
        println!("verification in tract (tolerance {tolerance}):\n{}", v.0);
        if !v.1 {
            return Err(Error::VerifyFailed(format!(
                "{} beyond tolerance {tolerance}; nothing was written (use --max-patches to bisect, --no-verify to write anyway)",
                disagreeing(&v.0)
            )));
        }
        verification = Some(v.0);
    }
    let external_threshold = args
        .external_data
        .or_else(|| (loaded.external.tensors > 0).then(|| loaded.external.min_len.unwrap_or(1024)));
    let existed = std::fs::symlink_metadata(output).is_ok();
    // An untouched model without external data is written back byte for byte: the encoder
    // would drop whatever this build did not decode.
    let verbatim = report.patches() == 0 && external_threshold.is_none();
    let prepared = if verbatim {
        prepare_write_bytes(&loaded.bytes, output)?
    } else {
        let undecoded = loaded.file_len as i64 - original.encoded_len() as i64;
        if loaded.external.tensors == 0 && undecoded != 0 {
            println!(
                "note: {} bytes of the input are not decoded by this build (fields of a newer ONNX, or a non-canonical encoding); the rewritten model does not keep them",
                undecoded.unsigned_abs()
            );
        }
        prepare_write(proto, output, &SaveOptions { external_threshold })?
    };
    let written = prepared.written().clone();
    if let Some((path, (tmp, _))) = &report_file {
        let json = serde_json::json!({
            "input": input,
            "output": output,
            "input_bytes": loaded.file_len,
            "output_bytes": written.model_bytes,
            "report": report,
            "verification": verification,
        });
        let s = serde_json::to_string_pretty(&json).unwrap_or_default();
        std::io::Write::write_all(&mut tmp.as_file(), s.as_bytes())
            .map_err(|e| Error::io("write", path, e))?;
    }
    prepared.commit()?;
    if let Some((path, (tmp, real))) = report_file {
        if let Err(e) = tmp.persist(&real) {
            // Both land or neither: take back an OUT this run created.
            if !existed {
                let _ = std::fs::remove_file(output);
                if let Some((p, _)) = &written.data_file {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(Error::io("write", path, e.error));
        }
    }
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    println!(
        "wrote `{}`: {} bytes (input {} bytes){}",
        output.display(),
        written.model_bytes,
        loaded.file_len,
        written
            .data_file
            .as_ref()
            .map(|(p, n)| format!(", external data `{}`: {n} bytes", p.display()))
            .unwrap_or_default()
    );
    Ok(0)
}

/// "output `y` differs" or "outputs `a`, `b` differ": the outputs that failed in any input set.
fn disagreeing(report: &crate::verify::VerifyReport) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, c) in report.failures() {
        if !names.contains(&c.output.as_str()) {
            names.push(&c.output);
        }
    }
    let list = names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        0 => "the outputs differ".into(),
        1 => format!("output {list} differs"),
        _ => format!("outputs {list} differ"),
    }
}

/// The input sets for verification: `--inputs` (whose tensors must have the shapes any
/// `--input-shape` gives), else one set of seeded random values when `--input-shape` is given
/// (at those shapes), else the `test_data_set_*` folders beside the model, else seeded random
/// values.
pub fn input_sets(
    model: &crate::onnx::proto::ModelProto,
    model_path: &Path,
    args: &VerifyInputArgs,
) -> Result<Vec<crate::verify::InputSet>> {
    use crate::verify::inputs;
    let shapes = inputs::parse_input_shapes(&args.input_shape)?;
    if let Some(p) = &args.inputs {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "inputs `{}` do not exist",
                p.display()
            )));
        }
        let sets = inputs::load_inputs(p, model)?;
        inputs::check_input_shapes(model, &sets, &shapes)?;
        return Ok(sets);
    }
    if !shapes.is_empty() {
        // An explicit shape wins over the folders found beside the model.
        return Ok(vec![inputs::random_inputs(model, &shapes, args.seed)?]);
    }
    let dir = model_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let has_sets = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("test_data_set_")
                    && e.path().is_dir()
            })
        })
        .unwrap_or(false);
    if has_sets {
        return inputs::load_test_data_sets(dir, model);
    }
    Ok(vec![inputs::random_inputs(model, &shapes, args.seed)?])
}

/// Runs both models in tract and compares; returns the report and whether it passed.
pub fn verify_models(
    a: &crate::onnx::proto::ModelProto,
    b: &crate::onnx::proto::ModelProto,
    model_path: &Path,
    inputs: &VerifyInputArgs,
    tolerance: f32,
) -> Result<(crate::verify::VerifyReport, bool)> {
    let sets = input_sets(a, model_path, inputs)?;
    let report = crate::verify::compare::verify(a, b, &sets, tolerance)?;
    let passed = report.passed;
    Ok((report, passed))
}

/// `onnx-slim verify A B`.
pub fn verify_command(
    a: &Path,
    b: &Path,
    inputs: &VerifyInputArgs,
    report_json: Option<&Path>,
) -> Result<i32> {
    let ma = decode_file(a)?.model;
    let mb = decode_file(b)?.model;
    let tol = inputs.tolerance.unwrap_or(1e-4);
    let (report, ok) = verify_models(&ma, &mb, a, inputs, tol)?;
    println!("{report}");
    if let Some(p) = report_json {
        let (tmp, real) = prepare_small_file(p)?;
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::io::Write::write_all(&mut tmp.as_file(), json.as_bytes())
            .map_err(|e| Error::io("write", p, e))?;
        tmp.persist(&real)
            .map_err(|e| Error::io("write", p, e.error))?;
    }
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::disagreeing;
    use crate::verify::{Comparison, SetReport, VerifyReport};

    fn comparison(output: &str, passed: bool) -> Comparison {
        Comparison {
            output: output.into(),
            dtype: "F32".into(),
            shape: vec![1],
            other_shape: vec![1],
            shape_equal: true,
            elements: 1,
            max_abs_error: Some(if passed { 0.0 } else { 1.0 }),
            max_rel_error: Some(if passed { 0.0 } else { 1.0 }),
            cosine: Some(1.0),
            argmax_agreement: None,
            mismatched: usize::from(!passed),
            passed,
            note: None,
        }
    }

    fn report(sets: &[&[(&str, bool)]]) -> VerifyReport {
        let sets: Vec<SetReport> = sets
            .iter()
            .enumerate()
            .map(|(i, outs)| SetReport {
                label: format!("set {i}"),
                outputs: outs.iter().map(|(n, p)| comparison(n, *p)).collect(),
                passed: outs.iter().all(|(_, p)| *p),
            })
            .collect();
        let passed = sets.iter().all(|s| s.passed);
        VerifyReport {
            tolerance: 1e-5,
            sets,
            passed,
        }
    }

    #[test]
    fn the_failure_names_each_disagreeing_output_once_in_order() {
        let r = report(&[&[("a", true), ("b", false)]]);
        assert_eq!(disagreeing(&r), "output `b` differs");
        let r = report(&[
            &[("a", true), ("c", false), ("b", false)],
            &[("a", false), ("c", false), ("b", true)],
        ]);
        assert_eq!(disagreeing(&r), "outputs `c`, `b`, `a` differ");
    }
}
