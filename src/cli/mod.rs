//! The command-line interface: argument parsing and one function per command. The binary only
//! calls [`main`]; [`main_with_rules`] is the same command line with extra rules, for tests;
//! [`embed::run`] is the same command line for a host program (the Python package).

/// `print!`, through [`embed::out`] (collected when a host collects).
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::embed::out(format_args!($($t)*)) };
}

/// `println!`, through [`embed::out`] (collected when a host collects).
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::embed::out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `eprintln!`, through [`embed::err`] (collected when a host collects).
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::embed::err(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` of the human report: to stderr when stdout carries the model or the JSON report;
/// nowhere with `--quiet`.
macro_rules! say {
    ($($t:tt)*) => {
        if $crate::cli::quiet() {
        } else if $crate::cli::text_to_stderr() {
            $crate::cli::embed::err(format_args!($($t)*))
        } else {
            $crate::cli::embed::out(format_args!($($t)*))
        }
    };
}

/// `println!` of the human report (see [`say`]).
macro_rules! sayln {
    ($($t:tt)*) => {
        say!("{}\n", format_args!($($t)*))
    };
}

pub mod args;
mod bench;
pub mod conveniences;
pub mod embed;
mod inputs;
mod run;
mod summary;

thread_local! {
    /// Set by a main job whose OUT or `--report-json` is standard output.
    static TEXT_TO_STDERR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by a main job run with `--quiet`: no human report.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the human report is silenced (`--quiet`).
pub(crate) fn quiet() -> bool {
    QUIET.with(std::cell::Cell::get)
}

fn set_quiet(on: bool) {
    QUIET.with(|c| c.set(on));
}

/// Whether the human report goes to stderr (stdout carries a model or a JSON report).
pub(crate) fn text_to_stderr() -> bool {
    TEXT_TO_STDERR.with(std::cell::Cell::get)
}

fn set_text_to_stderr(on: bool) {
    TEXT_TO_STDERR.with(|c| c.set(on));
}

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;

use crate::error::Result;
use crate::ir::Model;
use crate::onnx::decode_file;
use crate::rewrite::Rule;
use args::{Cli, Command};

pub use run::{main_job, main_job_with_rules};

/// Runs the command line; returns the process exit code. Errors are printed as one line.
pub fn main() -> i32 {
    main_with_rules(std::env::args_os(), &[])
}

/// [`main`] on the arguments `argv` (the program name first), with `extra` rules run after the
/// ones `--rules` selects in the main job. The binary passes none; a test passes a rule the
/// registry does not have (one that breaks its rewrite, to see verification refuse the result).
pub fn main_with_rules<I, T>(argv: I, extra: &[&dyn Rule]) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    execute(argv, extra, None).0
}

/// The command line on `argv`, with `bench` running `exe` as its main job (default: the running
/// executable): the exit code, and the error line's message when it failed with one.
fn execute<I, T>(argv: I, extra: &[&dyn Rule], exe: Option<&Path>) -> (i32, Option<String>)
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap's own text, on stdout.
            if embed::collecting() {
                out!("{e}");
            } else {
                let _ = e.print();
            }
            return (0, None);
        }
        Err(e) => {
            let msg = one_line(&usage_error(&e));
            errln!("error: {msg}");
            return (2, Some(msg));
        }
    };
    set_text_to_stderr(false);
    set_quiet(cli.command.is_none() && cli.run.quiet);
    match dispatch(cli, extra, exe) {
        Ok(code) => (code, None),
        Err(e) => {
            let msg = one_line(&e.to_string());
            errln!("error: {msg}");
            (e.exit_code(), Some(msg))
        }
    }
}

/// A command-line error as one line: clap's message without its usage block and tips, which
/// follow on the next lines (`--help` lists the flags).
fn usage_error(e: &clap::Error) -> String {
    let text = e.to_string();
    // The message is the first paragraph (a list of missing arguments follows its colon).
    let para: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let joined = para.join(" ");
    let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
    let msg = if msg.is_empty() {
        "invalid arguments"
    } else {
        msg
    };
    format!("{msg} (see --help)")
}

/// `s` with control characters escaped (`\n` → `\\n`): names from a model file may hold
/// newlines, and an error must stay on one line.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn dispatch(cli: Cli, extra: &[&dyn Rule], exe: Option<&Path>) -> Result<i32> {
    match cli.command {
        Some(Command::Inspect {
            model,
            json,
            input_shape,
        }) => {
            let mut loaded = decode_file(&model)?;
            let file_len = loaded.file_len;
            inputs::bind_declared_shapes(&mut loaded.model, &input_shape)?;
            let m = Model::from_proto(loaded.model)?;
            let report = crate::report::inspect::inspect(&m, file_len);
            if json {
                outln!("{}", report.to_json());
            } else {
                out!("{report}");
            }
            Ok(0)
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf: Vec<u8> = Vec::new();
            clap_complete::generate(shell, &mut cmd, "onnx-slim", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            Ok(0)
        }
        Some(Command::Show { model }) => {
            out!("{}", crate::ir::text::to_text(&load(&model)?));
            Ok(0)
        }
        Some(Command::Diff { a, b }) => {
            let (a, b) = (load(&a)?, load(&b)?);
            out!("{}", crate::report::diff::diff(&a, &b));
            Ok(0)
        }
        Some(Command::Verify {
            a,
            b,
            inputs,
            budget,
            budget_metric,
            report_json,
        }) => {
            let budget = (budget.is_some() || budget_metric.is_some())
                .then(|| crate::verify::Budget::from_flags(budget, budget_metric.as_deref()))
                .transpose()?;
            run::verify_command(&a, &b, &inputs, budget, report_json.as_deref())
        }
        Some(Command::Bench {
            dirs,
            preset,
            runs,
            out,
            svg,
        }) => bench::command(dirs, preset, runs, out.as_deref(), svg.as_deref(), exe),
        Some(Command::Pack { model, packed }) => {
            let s = crate::pack::pack(&model, &packed)?;
            outln!(
                "packed `{}` ({}): {} bytes into `{}`: {} bytes, {:.3}×",
                model.display(),
                files_phrase(&s),
                s.original_len(),
                packed.display(),
                s.packed_len,
                s.packed_len as f64 / s.original_len().max(1) as f64
            );
            Ok(0)
        }
        Some(Command::Unpack { packed, model }) => {
            let s = crate::pack::unpack(&packed, &model)?;
            outln!(
                "unpacked `{}` into `{}` ({}): {} bytes, checksums match",
                packed.display(),
                model.display(),
                files_phrase(&s),
                s.original_len()
            );
            Ok(0)
        }
        None => {
            if cli.run.list_rules {
                out!("{}", run::list_rules());
                return Ok(0);
            }
            run::main_job_with_rules(&cli.run, extra)
        }
    }
}

/// "model only" or "model + N external data files".
fn files_phrase(s: &crate::pack::PackSummary) -> String {
    match s.files.len() {
        0 | 1 => "model only".into(),
        2 => "model + 1 external data file".into(),
        n => format!("model + {} external data files", n - 1),
    }
}

/// Decodes a model file into the IR.
pub(crate) fn load(path: &std::path::Path) -> Result<Model> {
    Model::from_proto(decode_file(path)?.model)
}
