//! Progress bars on stderr for long work.
//!
//! A [`Progress`] counts bytes of input read. It draws only when stderr is
//! a terminal and `--quiet` was not given, so scripts and tests see nothing
//! of it; the commands' output on stdout never depends on it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting progress bar, or nothing.
#[derive(Debug, Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// No progress shown.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// A bar over `total` bytes labelled `what`, unless `quiet`.
    pub fn bytes(total: u64, what: &str, quiet: bool) -> Progress {
        if quiet {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    /// Sets the bytes done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
