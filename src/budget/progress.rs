//! Progress of long work on stderr: a bar while candidates are measured, a spinner message
//! otherwise. Hidden when stderr is not a terminal, or with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display that draws nothing unless it is shown on a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Shown on stderr when `show` and stderr is a terminal; hidden otherwise.
    pub fn new(show: bool) -> Progress {
        let bar = if show && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// A display that never draws.
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// Starts a bar of `len` steps titled `what`.
    pub fn start(&self, what: &str, len: u64) {
        self.bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_prefix(what.to_string());
        self.bar.set_length(len);
        self.bar.set_position(0);
    }

    /// One step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// What is being done now.
    pub fn message(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// Ends the bar and clears it.
    pub fn finish(&self) {
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        self.bar.set_prefix("");
    }

    /// Removes the display.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
