//! The command line run in-process by a host program (the Python package `onnx_slim`): what the
//! command prints can be collected instead of printed, a panic becomes an exit code and a message
//! instead of unwinding into the host, and `bench` can be told which program runs its main job
//! (in a host, the running executable is the host's interpreter, not onnx-slim).
//!
//! Every line the commands print goes through [`out`] and [`err`] (the `out!`, `outln!` and
//! `errln!` macros of `cli`), which print as `print!`/`eprint!` do unless [`run`] is collecting.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

thread_local! {
    /// What [`run`] has collected on this thread so far, while it collects.
    static CAPTURE: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Appends `args` to the collected stdout (`false`) or stderr (`true`); `false` when nothing is
/// being collected on this thread.
fn collect(stderr: bool, args: fmt::Arguments<'_>) -> bool {
    CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some((out, err)) => {
            let s = if stderr { err } else { out };
            let _ = fmt::Write::write_fmt(s, args);
            true
        }
        None => false,
    })
}

/// Prints `args` on stdout, or collects them when [`run`] collects on this thread. A closed
/// stdout (`onnx-slim show m.onnx | head`: a broken pipe) is not an error: what follows is
/// dropped, as a reader that stopped reading wants (`print!` would panic).
pub(crate) fn out(args: fmt::Arguments<'_>) {
    if !collect(false, args) {
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), args);
    }
}

/// Prints `args` on stderr, or collects them when [`run`] collects on this thread (a closed
/// stderr drops them, as [`out`] does).
pub(crate) fn err(args: fmt::Arguments<'_>) {
    if !collect(true, args) {
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), args);
    }
}

/// Whether [`run`] collects what is printed on this thread.
pub(crate) fn collecting() -> bool {
    CAPTURE.with(|c| c.borrow().is_some())
}

/// How [`run`] runs a command line.
#[derive(Debug, Clone, Default)]
pub struct Embed {
    /// Collect what the command prints into [`Outcome::stdout`] and [`Outcome::stderr`] instead
    /// of printing it.
    pub capture: bool,
    /// The program `bench` starts as its main job (it is given `IN OUT ARGS...`, as the binary
    /// is). Default: the running executable.
    pub exe: Option<PathBuf>,
}

/// What [`run`] did: what the binary would have exited with and printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The binary's exit code: 0, 1 (verification or internal failure), 2 (bad input or usage),
    /// 101 (a panic, a bug of onnx-slim).
    pub code: i32,
    /// The message of the error line (`error: MESSAGE` on stderr) when the command failed with
    /// one; for a panic, `internal error: ` and the panic's message.
    pub error: Option<String>,
    /// Everything printed on stdout (empty unless [`Embed::capture`]).
    pub stdout: String,
    /// Everything printed on stderr, the error line included (empty unless
    /// [`Embed::capture`]; a panic's message goes to the panic hook, not here).
    pub stderr: String,
}

/// Runs the command line `argv` (the program name first) as the binary does, in this process
/// and on this thread, as `how` says. Never panics: a panic of the command is caught and
/// reported as [`Outcome::code`] 101.
pub fn run<I, T>(argv: I, how: &Embed) -> Outcome
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    if how.capture {
        CAPTURE.with(|c| *c.borrow_mut() = Some(Default::default()));
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        super::execute(argv, &[], how.exe.as_deref())
    }));
    let (stdout, stderr) = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let (code, error) = match result {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            (
                101,
                Some(format!("internal error: {}", super::one_line(&what))),
            )
        }
    };
    Outcome {
        code,
        error,
        stdout,
        stderr,
    }
}
