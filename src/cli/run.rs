//! The main job (rewrite, verify, write, report), `verify` and `--list-rules`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;

use super::args::{RunArgs, VerifyInputArgs};
use super::summary;
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::onnx::{
    decode_file, encode_model, is_stdio, prepare_small_file, prepare_write, prepare_write_bytes,
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
    s.push_str(&groups_footer());
    s
}

/// The groups `--rules` takes, with their rules, `all`, `none` and the defaults.
fn groups_footer() -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in registry::all() {
        let m = r.meta();
        match groups.iter_mut().find(|(g, _)| *g == m.group) {
            Some((_, names)) => names.push(m.name),
            None => groups.push((m.group, vec![m.name])),
        }
    }
    let mut s = String::from("\ngroups (--rules takes rule names, codes and groups):\n");
    for (g, names) in &groups {
        let _ = writeln!(s, "  {g:<9} {}", names.join(", "));
    }
    let _ = writeln!(
        s,
        "  all       every rule above\n  none      no rule: a lossless re-encode\ndefault: {} ({} with --budget or --target-size)",
        registry::DEFAULT_SELECTION,
        SEARCH_SELECTION
    );
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
        args.prune_round,
    )?;
    let quantize = crate::rules::quantize::QuantizeConfig::from_flags(
        args.quantize_weights.as_deref(),
        args.quantize_granularity.as_deref(),
        &args.quantize_exclude,
        args.quantize_tolerance,
    )?
    .with_mode(args.quantize_mode.as_deref())?
    .with_activations(
        args.quantize_activations,
        args.quantize_outputs,
        args.quantize_calibrate.as_deref(),
        !args.calibration.is_empty(),
    )?;
    let sparsify = crate::rules::sparsify::SparsifyConfig::from_flags(
        args.sparsity,
        args.sparsity_pattern.as_deref(),
    )?;
    let cluster = crate::rules::cluster::ClusterConfig::from_flags(
        args.cluster_bits,
        args.cluster_granularity.as_deref(),
    )?;
    let plan = Plan::from_args(args, &lowrank, &quantize, &prune)?;
    super::conveniences::check_search(&args.conveniences, plan.search.is_some())?;
    let default_rules = default_selection(args, plan.search.is_some());
    let mut rules: Vec<&dyn rewrite::Rule> =
        registry::select(args.rules.as_deref().unwrap_or(&default_rules))?;
    rules.extend_from_slice(extra);
    super::conveniences::select_rules(
        &mut rules,
        &args.conveniences,
        args.rules.as_deref().unwrap_or(&default_rules),
    )?;
    check_rule_flags(args, &rules, &default_rules, plan.search.is_some())?;
    // `-` (or `/dev/stdout`) as OUT or --report-json: that stream carries it, the human report
    // goes to stderr.
    let out_stdio = is_stdio(output);
    let report_stdio = args.report_json.as_deref().is_some_and(is_stdio);
    if out_stdio && report_stdio {
        return Err(Error::Usage(
            "OUT and --report-json cannot both be standard output".into(),
        ));
    }
    if out_stdio && args.external_data.is_some() {
        return Err(Error::Usage(
            "--external-data needs OUT to be a file: standard output has no folder for `OUT.data`"
                .into(),
        ));
    }
    super::set_text_to_stderr(out_stdio || report_stdio);
    if !out_stdio && same_file(input, output) && !args.in_place {
        return Err(Error::Usage(format!(
            "refusing to overwrite the input `{}`; pass --in-place to allow it",
            input.display()
        )));
    }
    if !out_stdio {
        resolve_output(output)?;
    }
    if let Some(dir) = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !out_stdio)
    {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "cannot write `{}`: folder `{}` does not exist",
                output.display(),
                dir.display()
            )));
        }
    }
    if !out_stdio {
        // New large tensors wait for the writer in a temp file where the output goes.
        let dir = output.parent().filter(|d| !d.as_os_str().is_empty());
        crate::ir::spill::set_dir(dir.unwrap_or(Path::new(".")));
    }
    // The report's temp file is made up front: an unwritable report stops the run before any
    // work, and at the end the report and OUT land together.
    let report_file = match &args.report_json {
        Some(_) if report_stdio => None,
        Some(path) if same_file(path, output) || same_file(path, input) => {
            return Err(Error::Usage(format!(
                "--report-json `{}` would overwrite the model",
                path.display()
            )))
        }
        Some(path) => Some((path, prepare_small_file(path)?)),
        None => None,
    };
    let mut loaded = decode_file(input)?;
    let prepared_model = super::conveniences::prepare(&mut loaded.model, &args.conveniences)?;
    // The verification flags are checked even when nothing ends up verified.
    let shapes = crate::verify::inputs::parse_input_shapes(&args.verify.input_shape)?;
    super::conveniences::check_against_verification(&args.conveniences, &shapes)?;
    crate::verify::inputs::check_input_shapes(&loaded.model, &[], &shapes)?;
    if let Some(p) = args.verify.inputs.as_ref().filter(|p| !p.exists()) {
        return Err(Error::Usage(format!(
            "inputs `{}` do not exist",
            p.display()
        )));
    }
    // `--rules none` verifies nothing: a re-encode needs no inputs.
    if !args.no_verify && !rules.is_empty() {
        super::inputs::check_runnable(&loaded.model, input, &args.verify)?;
    }
    super::inputs::check_calibration(&args.calibration, &loaded.model)?;
    let original = loaded.model.clone();
    let mut model = Model::from_proto(loaded.model)?;
    let config = Config {
        calibration: args.calibration.clone(),
        prune,
        lowrank,
        quantize,
        sparsify,
        fp16: args.conveniences.fp16()?,
        cluster,
        memory_limit: args.verify.memory_limit,
    };
    if rules.iter().any(|r| r.meta().code == "Q001") {
        if let Some(note) = crate::rules::quantize::raise_opset(&mut model, &config) {
            sayln!("{note}");
        }
    }
    // --sparse-storage: what the writer stored sparse (verified like a rewrite).
    let storage: Option<crate::onnx::sparse::SparseStorage>;
    let inferred;
    let (report, proto, verification, search) = match &plan.search {
        Some(goal) => {
            let o = run_search(
                model,
                &rules,
                &config,
                goal,
                &original,
                input,
                args,
                loaded.file_len,
            )?;
            say!("{}", summary::render(&o.report, args.verbose));
            super::inputs::warn_calibration_failures(&o.report);
            say!("{}", o.search.render());
            print_verification(&o.verification);
            print_equivalent(&o.proto);
            if !o.verification.passed {
                return Err(Error::VerifyFailed(format!(
                    "{}; nothing was written",
                    over_budget(&o.verification)
                )));
            }
            let mut proto = o.proto;
            inferred = super::conveniences::finish(&mut proto, &args.conveniences)?;
            // Each conversion is checked to give back the very weights verified above.
            storage = args
                .sparse_storage
                .then(|| crate::onnx::sparse::to_sparse_storage(&mut proto));
            say!(
                "{}",
                storage.as_ref().map(|s| s.render()).unwrap_or_default()
            );
            (o.report, proto, Some(o.verification), Some(o.search))
        }
        None => {
            let report = rewrite::run(
                &mut model,
                &rules,
                &config,
                &DriverOptions {
                    max_patches: args.max_patches,
                    ..Default::default()
                },
            )?;
            let mut proto = model.to_proto();
            inferred = super::conveniences::finish(&mut proto, &args.conveniences)?;
            say!("{}", summary::render(&report, args.verbose));
            let cleans = rules.iter().any(|r| r.meta().group == "clean");
            if let Some(note) = crate::report::format::growth_note(&report, cleans) {
                sayln!("{note}");
            }
            super::inputs::warn_calibration_failures(&report);
            storage = args
                .sparse_storage
                .then(|| crate::onnx::sparse::to_sparse_storage(&mut proto));
            say!(
                "{}",
                storage.as_ref().map(|s| s.render()).unwrap_or_default()
            );
            let v = fixed_verification(
                &original,
                &proto,
                input,
                args,
                &report,
                &rules,
                &config,
                plan.budget,
                storage.as_ref().is_some_and(|s| !s.converted.is_empty()),
            )?;
            (report, proto, v, None)
        }
    };
    if !args.quiet && report.patches() > 0 {
        if let Some(line) = crate::report::format::macs_change(&original, &proto) {
            sayln!("{line}");
        }
    }
    let stored_sparse = storage.as_ref().is_some_and(|s| !s.converted.is_empty());
    if args.conveniences.infer_shapes {
        sayln!("--infer-shapes: {inferred} value_info entries written");
    }
    // --input-shapes, --outputs, --cut-inputs, --infer-shapes: the file changes without a rewrite.
    let declared = prepared_model || inferred > 0;
    let notice = if args.no_verify {
        Some("verification skipped (--no-verify)")
    } else if report.patches() == 0 && (stored_sparse || declared) {
        None
    } else if report.patches() == 0 && search.is_some() {
        Some("no option fits the budget: the output is the input")
    } else if report.patches() == 0 {
        Some(
            if args.external_data.is_none() && loaded.external.tensors == 0 {
                "no rewrite applied: the output is the input, byte for byte; nothing to verify"
            } else {
                "no rewrite applied: the output is the input re-encoded, nothing to verify"
            },
        )
    } else {
        None
    };
    let external_threshold = args
        .external_data
        .or_else(|| (loaded.external.tensors > 0).then(|| loaded.external.min_len.unwrap_or(1024)));
    if out_stdio && external_threshold.is_some() {
        return Err(Error::Usage(format!(
            "`{}` reads external data, which standard output cannot carry beside the model: write OUT to a file",
            input.display()
        )));
    }
    let existed = std::fs::symlink_metadata(output).is_ok();
    // An untouched model without external data is written back byte for byte: the encoder
    // would drop whatever this build did not decode.
    let verbatim =
        report.patches() == 0 && external_threshold.is_none() && !stored_sparse && !declared;
    if !verbatim {
        let undecoded = loaded.file_len as i64 - original.encoded_len() as i64;
        if loaded.external.tensors == 0 && undecoded != 0 {
            sayln!(
                "note: {} bytes of the input are not decoded by this build (fields of a newer ONNX, or a non-canonical encoding); the rewritten model does not keep them",
                undecoded.unsigned_abs()
            );
        }
    }
    let prepared = match (out_stdio, verbatim) {
        (true, true) => Sink::Stdout(loaded.bytes.to_vec()),
        (true, false) => Sink::Stdout(encode_model(&proto)),
        (false, true) => Sink::File(prepare_write_bytes(&loaded.bytes, output)?),
        (false, false) => Sink::File(prepare_write(
            proto,
            output,
            &SaveOptions { external_threshold },
        )?),
    };
    let written = prepared.written();
    let mut json_text = None;
    if report_file.is_some() || report_stdio {
        let json = serde_json::json!({
            "input": input,
            "output": output,
            "input_bytes": loaded.file_len,
            "output_bytes": written.model_bytes,
            "report": report,
            "calibration_failures": report.calibration_failures().len(),
            "search": search,
            "verification": verification,
            "sparse_storage": storage,
        });
        let s = serde_json::to_string_pretty(&json).unwrap_or_default();
        if let Some((path, (tmp, _))) = &report_file {
            std::io::Write::write_all(&mut tmp.as_file(), s.as_bytes())
                .map_err(|e| Error::io("write", path, e))?;
        }
        json_text = Some(s);
    }
    prepared.commit()?;
    if report_stdio {
        if let Some(s) = &json_text {
            outln!("{s}");
        }
    }
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
    if let Some(n) = notice.filter(|_| !args.quiet) {
        errln!("{n}");
    }
    sayln!(
        "{}",
        crate::report::format::wrote(
            &if out_stdio {
                "standard output".to_string()
            } else {
                format!("`{}`", output.display())
            },
            written.model_bytes,
            written.data_file.as_ref().map(|(p, n)| (p.as_path(), *n)),
            loaded.file_len,
            loaded.external.bytes,
        )
    );
    Ok(0)
}

/// Where the model goes: a prepared file (renamed into place on commit), or standard output.
enum Sink {
    File(crate::onnx::PreparedWrite),
    Stdout(Vec<u8>),
}

impl Sink {
    fn written(&self) -> crate::onnx::io::Written {
        match self {
            Sink::File(p) => p.written().clone(),
            Sink::Stdout(b) => crate::onnx::io::Written {
                model_bytes: b.len() as u64,
                data_file: None,
            },
        }
    }

    fn commit(self) -> Result<()> {
        match self {
            Sink::File(p) => p.commit().map(|_| ()),
            Sink::Stdout(b) => {
                let mut out = std::io::stdout().lock();
                std::io::Write::write_all(&mut out, &b)
                    .and_then(|()| std::io::Write::flush(&mut out))
                    .map_err(|e| Error::io("write", Path::new("-"), e))
            }
        }
    }
}

/// Refuses option flags of rules the selection does not run, and calibration inputs that do not
/// exist or that nothing would read: a flag that would be ignored is a mistake the user must
/// hear about.
fn check_rule_flags(
    args: &RunArgs,
    rules: &[&dyn rewrite::Rule],
    default_rules: &str,
    search: bool,
) -> Result<()> {
    let selected = |name: &str| rules.iter().any(|r| r.meta().name == name);
    let selection = args.rules.as_deref().unwrap_or(default_rules);
    let flags: &[(&str, bool, &str)] = &[
        ("--lowrank-energy", args.lowrank_energy.is_some(), "lowrank"),
        ("--lowrank-rank", args.lowrank_rank.is_some(), "lowrank"),
        ("--lowrank-ratio", args.lowrank_ratio.is_some(), "lowrank"),
        (
            "--lowrank-tolerance",
            args.lowrank_tolerance.is_some(),
            "lowrank",
        ),
        (
            "--lowrank-min-saving",
            args.lowrank_min_saving.is_some(),
            "lowrank",
        ),
        (
            "--quantize-weights",
            args.quantize_weights.is_some(),
            "quantize",
        ),
        (
            "--quantize-granularity",
            args.quantize_granularity.is_some(),
            "quantize",
        ),
        (
            "--quantize-exclude",
            !args.quantize_exclude.is_empty(),
            "quantize",
        ),
        (
            "--quantize-tolerance",
            args.quantize_tolerance.is_some(),
            "quantize",
        ),
        ("--quantize-mode", args.quantize_mode.is_some(), "quantize"),
        (
            "--quantize-activations",
            args.quantize_activations,
            "quantize",
        ),
        (
            "--quantize-calibrate",
            args.quantize_calibrate.is_some(),
            "quantize",
        ),
        ("--quantize-outputs", args.quantize_outputs, "quantize"),
        ("--cluster-bits", args.cluster_bits.is_some(), "cluster"),
        (
            "--cluster-granularity",
            args.cluster_granularity.is_some(),
            "cluster",
        ),
        ("--prune-zero", args.prune_zero, "prune"),
        ("--prune-ratio", args.prune_ratio.is_some(), "prune"),
        (
            "--prune-importance",
            args.prune_importance.is_some(),
            "prune",
        ),
        ("--prune-exclude", !args.prune_exclude.is_empty(), "prune"),
        ("--prune-round", args.prune_round.is_some(), "prune"),
        ("--sparsity", args.sparsity.is_some(), "sparsify"),
        (
            "--sparsity-pattern",
            args.sparsity_pattern.is_some(),
            "sparsify",
        ),
    ];
    for &(flag, given, rule) in flags {
        if given && !selected(rule) {
            return Err(Error::Usage(format!(
                "{flag} is an option of `{rule}`, which `--rules {selection}` does not run"
            )));
        }
    }
    for p in &args.calibration {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "calibration inputs `{}` do not exist",
                p.display()
            )));
        }
    }
    let reads_calibration = search
        || selected("lowrank")
        || selected("cluster")
        || (selected("quantize") && args.quantize_tolerance.is_some())
        || (selected("quantize") && args.quantize_activations)
        || (selected("prune") && args.prune_ratio.is_some());
    if !args.calibration.is_empty() && !reads_calibration {
        return Err(Error::Usage(format!(
            "--calibration is read by `lowrank`, `cluster`, `quantize --quantize-tolerance`, \
             `quantize --quantize-activations`, `prune --prune-ratio` and --budget, and `--rules {selection}` uses none of them"
        )));
    }
    Ok(())
}

/// The rules run when `--rules` is not given: [`search_selection`] for a search; for a fixed
/// recipe held to `--budget` (option flags of lossy rules given), `clean` and the rules whose
/// option flags are given; else [`registry::DEFAULT_SELECTION`].
fn default_selection(args: &RunArgs, search: bool) -> String {
    if search {
        return search_selection(args).to_string();
    }
    if args.budget.is_none() {
        return registry::DEFAULT_SELECTION.to_string();
    }
    let mut rules = vec![registry::DEFAULT_SELECTION];
    let lowrank = args.lowrank_energy.is_some()
        || args.lowrank_rank.is_some()
        || args.lowrank_ratio.is_some()
        || args.lowrank_tolerance.is_some()
        || args.lowrank_min_saving.is_some();
    let quantize = args.quantize_weights.is_some()
        || args.quantize_granularity.is_some()
        || !args.quantize_exclude.is_empty()
        || args.quantize_tolerance.is_some()
        || args.quantize_mode.is_some()
        || args.quantize_activations
        || args.quantize_outputs
        || args.quantize_calibrate.is_some();
    let cluster = args.cluster_bits.is_some() || args.cluster_granularity.is_some();
    let prune = args.prune_zero
        || args.prune_ratio.is_some()
        || args.prune_importance.is_some()
        || args.prune_round.is_some()
        || !args.prune_exclude.is_empty();
    let sparsify = args.sparsity.is_some() || args.sparsity_pattern.is_some();
    for (on, name) in [
        (prune, "prune"),
        (lowrank, "lowrank"),
        (quantize, "quantize"),
        (sparsify, "sparsify"),
        (cluster, "cluster"),
    ] {
        if on {
            rules.push(name);
        }
    }
    rules.join(",")
}

/// The rules a `--budget` or `--target-size` run selects when `--rules` is not given.
pub const SEARCH_SELECTION: &str = "clean,prune,lowrank,quantize";

/// [`SEARCH_SELECTION`], with `sparsify` when `--sparse-storage` makes its zeros save bytes
/// (without it they save nothing the search can count: not bytes, not MACs, not tract time).
fn search_selection(args: &RunArgs) -> &'static str {
    if args.sparse_storage {
        "clean,prune,lowrank,quantize,sparsify"
    } else {
        SEARCH_SELECTION
    }
}

/// How the run is judged: a search (`--budget`/`--target-size` without an option flag of a lossy
/// rule), and the budget any lossy result is held to.
struct Plan {
    search: Option<crate::budget::Goal>,
    budget: crate::verify::Budget,
}

impl Plan {
    fn from_args(
        args: &RunArgs,
        lowrank: &crate::rules::lowrank::LowrankConfig,
        quantize: &crate::rules::quantize::QuantizeConfig,
        prune: &crate::rules::prune::PruneConfig,
    ) -> Result<Plan> {
        let budget = crate::verify::Budget::from_flags(args.budget, args.budget_metric.as_deref())?;
        if let Some(r) = args.target_size {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::Usage(format!(
                    "--target-size must be a number > 0, got `{r}`"
                )));
            }
        }
        let pinned = *lowrank != Default::default()
            || !quantize.is_default()
            || prune.ratio.is_some()
            || args.cluster_bits.is_some()
            || args.cluster_granularity.is_some()
            || args.sparsity.is_some()
            || args.sparsity_pattern.is_some();
        if args.target_size.is_some() && pinned {
            return Err(Error::Usage(
                "--target-size chooses per layer how to apply the lossy rules; drop the --lowrank-*/--quantize-*/--prune-ratio option flags"
                    .into(),
            ));
        }
        let search = args.target_size.is_some() || (args.budget.is_some() && !pinned);
        let objective = match &args.objective {
            Some(_) if !search => {
                return Err(Error::Usage(
                    "--objective applies to a --budget search (without --lowrank-*/--quantize-*/--prune-ratio flags)"
                        .into(),
                ))
            }
            Some(o) => o.parse()?,
            None => crate::budget::Objective::Size,
        };
        if search && args.no_verify {
            return Err(Error::Usage(
                "--budget and --target-size measure the model in tract; they cannot be combined with --no-verify"
                    .into(),
            ));
        }
        if search && args.max_patches.is_some() {
            return Err(Error::Usage(
                "--max-patches bisects a fixed run; it cannot be combined with a --budget search"
                    .into(),
            ));
        }
        Ok(Plan {
            search: search.then_some(crate::budget::Goal {
                budget,
                target_size: args.target_size,
                objective,
                sparse_storage: args.sparse_storage,
            }),
            budget,
        })
    }
}

/// The search: the lossless rules of the selection run first, then the lossy ones are chosen
/// per layer (see [`crate::budget`]).
#[allow(clippy::too_many_arguments)]
fn run_search(
    mut model: Model,
    rules: &[&dyn rewrite::Rule],
    config: &Config,
    goal: &crate::budget::Goal,
    original: &crate::onnx::proto::ModelProto,
    input: &Path,
    args: &RunArgs,
    input_bytes: u64,
) -> Result<crate::budget::Outcome> {
    // A rule may be both: prune without `--prune-ratio` runs its exact criterion first and
    // offers ratios to the search.
    let exact: Vec<&dyn rewrite::Rule> =
        rules.iter().copied().filter(|r| !r.lossy(config)).collect();
    let lossy: Vec<&dyn rewrite::Rule> = rules
        .iter()
        .copied()
        .filter(|r| !r.search_variants(config).is_empty())
        .collect();
    if lossy.is_empty() {
        return Err(Error::Usage(format!(
            "--budget and --target-size choose how to apply lossy rules, and `--rules {}` has none (the lossy rules: {})",
            args.rules.as_deref().unwrap_or(registry::DEFAULT_SELECTION),
            registry::all()
                .iter()
                .filter(|r| !r.search_variants(config).is_empty())
                .map(|r| r.meta().name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let lossless = rewrite::run(&mut model, &exact, config, &DriverOptions::default())?;
    let verify_sets = super::inputs::input_sets(original, input, &args.verify)?;
    let (calibration, measured_on) = if config.calibration.is_empty() {
        let n = verify_sets.len();
        (
            None,
            format!("the verification inputs ({n} set{})", plural(n)),
        )
    } else {
        let sets = crate::calibrate::load_sets(&config.calibration, original)?;
        let n = sets.len();
        (
            Some(sets),
            format!("the calibration inputs ({n} set{})", plural(n)),
        )
    };
    let progress = crate::budget::Progress::new(!args.quiet);
    let out = crate::budget::search(
        model,
        lossless,
        &lossy,
        config,
        goal,
        original,
        (calibration.as_deref(), &measured_on),
        &verify_sets,
        input_bytes,
        &progress,
    );
    progress.clear();
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Verifies a fixed run: element-wise at the rules' tolerance when every rule that rewrote is
/// exact, else by `budget` on the model-level metric. `None` when nothing is verified.
#[allow(clippy::too_many_arguments)]
fn fixed_verification(
    original: &crate::onnx::proto::ModelProto,
    proto: &crate::onnx::proto::ModelProto,
    input: &Path,
    args: &RunArgs,
    report: &rewrite::RunReport,
    rules: &[&dyn rewrite::Rule],
    config: &Config,
    budget: crate::verify::Budget,
    stored_sparse: bool,
) -> Result<Option<crate::verify::VerifyReport>> {
    if args.no_verify || (report.patches() == 0 && !stored_sparse) {
        return Ok(None);
    }
    let lossy = report.lossy(rules, config);
    let tolerance = args.verify.tolerance.unwrap_or_else(|| {
        report
            .tolerance(rules, config)
            .max(crate::verify::compare::DEFAULT_TOLERANCE)
    });
    // `proto` is exactly what the written bytes decode to (prost's decode(encode(m)) == m, and
    // `proto` carries no unknown fields), so it is verified as it is: encoding it here first
    // would hold a second copy of every weight.
    let written = proto;
    let per_segment = lossy.then_some(budget);
    let (mut v, _) = verify_models(
        original,
        written,
        input,
        &args.verify,
        tolerance,
        per_segment,
    )?;
    if lossy {
        crate::verify::judge(&mut v, budget);
    }
    print_verification(&v);
    print_equivalent(written);
    if !v.passed {
        let how = if lossy {
            format!(
                "{}; nothing was written (a larger --budget accepts it; --budget without --lowrank-*/--quantize-*/--prune-ratio flags lets onnx-slim choose per layer what to change; --no-verify writes anyway)",
                over_budget(&v)
            )
        } else {
            format!(
                "{} beyond tolerance {tolerance}{}; nothing was written (use --max-patches to bisect, --no-verify to write anyway)",
                disagreeing(&v),
                failing_segment(&v)
            )
        };
        return Err(Error::VerifyFailed(how));
    }
    Ok(Some(v))
}

/// The verification table, and for a lossy run every model-level metric.
fn print_verification(v: &crate::verify::VerifyReport) {
    match &v.budget {
        Some((b, _)) => sayln!("verification in tract (budget {}):\n{v}", b.describe()),
        None => sayln!("verification in tract (tolerance {}):\n{v}", v.tolerance),
    }
    if v.budget.is_some() {
        let all = crate::verify::metric::summary(v)
            .into_iter()
            .map(|(m, w)| format!("{} (`{}`, {})", m.describe(w.loss), w.output, w.set))
            .collect::<Vec<_>>()
            .join("; ");
        sayln!("model-level, worst over outputs and input sets: {all}");
    }
}

/// Says so when tract ran an equivalent graph instead of `written` as it is.
fn print_equivalent(written: &crate::onnx::proto::ModelProto) {
    let equivalent = crate::verify::prepare::equivalent_graph_nodes(written);
    if !equivalent.is_empty() {
        sayln!(
            "tract ran an equivalent graph: {} DequantizeLinear (int4 or block_size, which tract 0.23 does not run) replaced by the float weight each computes",
            equivalent.len()
        );
    }
}

/// "output `y` moved to cosine 0.93155 on `set`, over the budget (cosine ≥ 0.99)".
fn over_budget(v: &crate::verify::VerifyReport) -> String {
    match &v.budget {
        Some((b, w)) => format!(
            "output `{}` moved to {} on `{}`, over the budget ({})",
            w.output,
            b.metric.describe(w.loss),
            w.set,
            b.describe()
        ),
        None => disagreeing(v),
    }
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

/// ", first in segment 2 of 5 (nodes `a` … `b`)" when a segment-wise verification localized it.
fn failing_segment(v: &crate::verify::VerifyReport) -> String {
    v.segmented
        .as_ref()
        .and_then(|s| {
            let f = s.first_failing()?;
            Some(format!(", first in {}", f.describe(s.segments.len())))
        })
        .unwrap_or_default()
}

/// Runs both models in tract and compares, whole or segment by segment within `--memory-limit`
/// (`budget` judges the segments of a lossy run); returns the report and whether it passed.
pub fn verify_models(
    a: &crate::onnx::proto::ModelProto,
    b: &crate::onnx::proto::ModelProto,
    model_path: &Path,
    inputs: &VerifyInputArgs,
    tolerance: f32,
    budget: Option<crate::verify::Budget>,
) -> Result<(crate::verify::VerifyReport, bool)> {
    let sets = super::inputs::input_sets(a, model_path, inputs)?;
    let limit = inputs
        .memory_limit
        .unwrap_or_else(crate::verify::segment::default_memory_limit);
    let report = crate::verify::verify_within(
        a,
        "original",
        b,
        "rewritten",
        &sets,
        tolerance,
        limit,
        budget,
    )?;
    let passed = report.passed;
    Ok((report, passed))
}

/// `onnx-slim verify A B`: element by element at `--tolerance`, or by `budget` when given.
pub fn verify_command(
    a: &Path,
    b: &Path,
    inputs: &VerifyInputArgs,
    budget: Option<crate::verify::Budget>,
    report_json: Option<&Path>,
) -> Result<i32> {
    let ma = decode_file(a)?.model;
    let mb = decode_file(b)?.model;
    let tol = inputs
        .tolerance
        .unwrap_or(crate::verify::compare::DEFAULT_TOLERANCE);
    let (mut report, _) = verify_models(&ma, &mb, a, inputs, tol, budget)?;
    if let Some(budget) = budget {
        crate::verify::judge(&mut report, budget);
    }
    let ok = report.passed;
    outln!("{report}");
    if !ok && budget.is_none() {
        outln!(
            "(judged element by element; the main command judges a lossy rewrite by a model-level budget instead: `--budget 0.01` judges B as it does)"
        );
    }
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
            rel_l2: Some(if passed { 0.0 } else { 1.0 }),
            cosine: Some(1.0),
            argmax_agreement: None,
            mismatched: usize::from(!passed),
            passed,
            note: None,
            loss: None,
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
                inputs: Vec::new(),
            })
            .collect();
        let passed = sets.iter().all(|s| s.passed);
        VerifyReport {
            tolerance: 1e-5,
            budget: None,
            sets,
            passed,
            segmented: None,
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
