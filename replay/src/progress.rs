//! Progress on stderr for long work.
//!
//! Every command that reads much (`audit`, `history`, `restore`, `diff`)
//! shows each phase as it works: a bar over the bytes or records to read
//! with the time left, or, where the amount is not known beforehand, a
//! spinner with what was done so far. A [`Progress`] draws only when stderr
//! is a terminal and `--quiet` was not given, so scripts and tests see
//! nothing of it, and the commands' output on stdout never depends on it.
//! A hidden one costs nothing; a shown one redraws at most a few times a
//! second however often it is updated.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One phase's progress bar or spinner, or nothing.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// No progress shown.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// A bar over `total` bytes labelled `what`.
    pub fn bytes(total: u64, what: &str, quiet: bool) -> Progress {
        Progress::new(
            Some(total),
            what,
            quiet,
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
    }

    /// A bar over `total` records (or entries) labelled `what`; with no
    /// total, a spinner counting them.
    pub fn items(total: Option<u64>, what: &str, quiet: bool) -> Progress {
        let template = match total {
            Some(_) => "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} {eta}",
            None => "{msg} {spinner} {human_pos} {per_sec} {elapsed}",
        };
        Progress::new(total, what, quiet, template)
    }

    /// A spinner for work that reports no progress of its own.
    pub fn busy(what: &str, quiet: bool) -> Progress {
        Progress::new(None, what, quiet, "{msg} {spinner} {elapsed}")
    }

    fn new(total: Option<u64>, what: &str, quiet: bool, template: &str) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        if total.is_none() {
            // Spinners turn even while the work reports nothing.
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Progress(Some(bar))
    }

    /// Whether anything is drawn.
    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    /// Sets the amount done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    /// Removes the bar or spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A short label for work on a file: `verb` and the file's name (the
/// whole path would often not fit on the line).
pub fn on_file(verb: &str, path: &Path) -> String {
    let name = path.file_name().map_or(path.as_os_str(), |n| n);
    format!("{verb} {}", name.to_string_lossy())
}

impl Drop for Progress {
    /// A phase ended early (by an error) leaves no bar behind either.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_only_on_a_terminal_and_never_when_quiet() {
        let tty = std::io::stderr().is_terminal();
        for quiet in [false, true] {
            for p in [
                Progress::bytes(100, "x", quiet),
                Progress::items(Some(100), "x", quiet),
                Progress::items(None, "x", quiet),
                Progress::busy("x", quiet),
            ] {
                assert_eq!(p.is_shown(), tty && !quiet);
                p.set(50);
                p.finish();
            }
        }
        assert!(!Progress::hidden().is_shown());
    }
}
