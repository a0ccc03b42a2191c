//! The command line: arguments, output and exit status.
//!
//! Exit status: 0 = fine, 1 = differences or damage found, 2 = usage or
//! I/O error. Reports go to stdout in the `--format` chosen; progress bars
//! go to stderr (terminals only, never with `--quiet`), and so do notes.
//!
//! Data directories given are locked shared while they are read (a node
//! cannot start on them meanwhile); one that a node runs on is read anyway,
//! with a note.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use distkv_core::persist::lock::{data_dir_of, DirLock, ReadAccess};
use distkv_model::Path as KvPath;

use crate::engine::Target;
use crate::error::{Error, Result};
use crate::output::{Format, Out};

/// Offline tools over distkv history files: event-log segments, snapshots,
/// data directories and DistKV-py save/log files. Inputs are recognised by
/// their layout and magic bytes. Nothing is ever written to an input.
///
/// Exit status: 0 = fine, 1 = differences or damage found, 2 = usage or
/// I/O error.
#[derive(Debug, Parser)]
#[command(name = "distkv-replay", version)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// No progress bars (for scripts).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the records of history files as they are.
    Dump(DumpArgs),
    /// Check files for damage, tick gaps, duplicates, bad chains, and list
    /// every conflict resolved when replaying them (exit 1 if any).
    Audit(AuditArgs),
    /// Rebuild the state at a point in the past and write it as a snapshot
    /// (`distkv server -l SNAPSHOT` loads it).
    Restore(RestoreArgs),
    /// Compare two states: snapshots, data directories or live nodes
    /// (HOST:PORT); exit 1 if they differ.
    Diff(DiffArgs),
    /// List every change to a key (and below it, with -r) across the files.
    History(HistoryArgs),
}

/// `dump` arguments.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Data directories, segment directories, segments, snapshots or
    /// DistKV-py files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only events and entries at or below this path (DistKV path syntax,
    /// e.g. `a.b:1`).
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
}

/// `audit` arguments.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Data directories, segment directories, segments, snapshots or
    /// DistKV-py files (of one node or several).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The files of one node or several (events are merged by tock and
    /// deduplicated by node:tick).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The snapshot to write.
    #[arg(long, value_name = "SNAPSHOT")]
    pub out: PathBuf,
    /// Stop before each log's first event with a tock above T.
    #[arg(long, value_name = "T", group = "target")]
    pub until_tock: Option<u64>,
    /// Stop right after this event (e.g. `n1:42`).
    #[arg(long, value_name = "NODE:TICK", group = "target")]
    pub until: Option<String>,
    /// Use only events written at or before this time (RFC 3339, e.g.
    /// `2024-05-06T07:08:09Z`).
    #[arg(long, value_name = "RFC3339", group = "target")]
    pub until_time: Option<String>,
    /// The node name written into the snapshot (default: the first input's
    /// node).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first side: a snapshot, a data directory, other history files,
    /// or a live node HOST:PORT.
    #[arg(value_name = "A")]
    pub a: String,
    /// The second side.
    #[arg(value_name = "B")]
    pub b: String,
}

/// `history` arguments.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The files of one node or several.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The key (DistKV path syntax, e.g. `a.b:1`).
    #[arg(long, value_name = "KEYPATH")]
    pub key: String,
    /// Also changes below the key.
    #[arg(short, long)]
    pub recursive: bool,
    /// Build the data directory's history index if it has none, and answer
    /// from it. Without this flag an index that is there (a node keeps one
    /// by default) is used: checked against the segments and caught up or
    /// rebuilt first; the whole log is replayed when it cannot be used.
    #[arg(long, conflicts_with = "no_index")]
    pub index: bool,
    /// Replay the whole log; do not use or build the history index.
    #[arg(long)]
    pub no_index: bool,
}

/// How a command ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing to report.
    Clean,
    /// Differences or damage found.
    Findings,
}

fn parse_path(s: &str) -> Result<KvPath> {
    KvPath::parse(s).map_err(|e| Error::InvalidInput(format!("bad path {s:?}: {e}")))
}

fn status(findings: bool) -> Status {
    if findings {
        Status::Findings
    } else {
        Status::Clean
    }
}

impl Command {
    /// The input paths on the command line (a `diff` side that is no
    /// existing path is a live node).
    pub fn inputs(&self) -> Vec<PathBuf> {
        match self {
            Command::Dump(a) => a.files.clone(),
            Command::Audit(a) => a.paths.clone(),
            Command::Restore(a) => a.paths.clone(),
            Command::History(a) => a.paths.clone(),
            Command::Diff(a) => [&a.a, &a.b]
                .into_iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
        }
    }
}

/// Takes a shared lock on every data directory among (or holding)
/// `paths`, so that no node starts on one while it is read; returns the
/// locks to hold. A directory a node runs on is read all the same (that
/// is harmless: see `distkv_core::persist::lock`), and a note on stderr
/// says so.
pub fn lock_inputs(paths: &[PathBuf]) -> Vec<DirLock> {
    let mut dirs: Vec<PathBuf> = paths.iter().filter_map(|p| data_dir_of(p)).collect();
    dirs.sort();
    dirs.dedup();
    let mut held = Vec::new();
    for dir in dirs {
        match DirLock::shared(&dir) {
            Ok(ReadAccess::Shared(lock)) => held.push(lock),
            Ok(ReadAccess::Unlocked) => {}
            Ok(ReadAccess::NodeRunning(pid)) => {
                let pid = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
                eprintln!(
                    "note: {}: node is running ({pid}); reading its files read-only",
                    dir.display()
                );
            }
            Err(e) => eprintln!(
                "note: {}: cannot take the shared lock ({e}); reading its files read-only",
                dir.display()
            ),
        }
    }
    held
}

/// Runs a parsed command line, writing the report to `w`.
pub fn run(cli: Cli, w: impl Write) -> Result<Status> {
    let _locks = lock_inputs(&cli.command.inputs());
    let mut out = Out::new(cli.format, w);
    let quiet = cli.quiet;
    let st = match cli.command {
        Command::Dump(a) => {
            let prefix = a.prefix.as_deref().map(parse_path).transpose()?;
            out.begin_list().map_err(Error::Output)?;
            let sum = crate::dump::dump(&a.files, prefix.as_ref(), &mut |item| {
                out.item(&item.value, || item.text.clone())
                    .map_err(Error::Output)
            })?;
            out.end_list().map_err(Error::Output)?;
            status(sum.damage > 0)
        }
        Command::Audit(a) => {
            let r = crate::audit::audit(&a.paths, quiet)?;
            out.doc(&r.to_value(), &r.to_text())
                .map_err(Error::Output)?;
            status(!r.is_clean())
        }
        Command::Restore(a) => {
            let target = if let Some(t) = a.until_tock {
                Target::Tock(t)
            } else if let Some(e) = &a.until {
                Target::parse_event(e)?
            } else if let Some(t) = &a.until_time {
                Target::TimeMs(crate::time::parse_rfc3339(t).map_err(Error::InvalidInput)?)
            } else {
                Target::All
            };
            // The process ends once the report is out.
            let r = crate::restore::restore_with(
                &a.paths,
                &a.out,
                target,
                a.node.as_deref(),
                quiet,
                crate::restore::Leftover::Exit,
            )?;
            out.doc(&r.to_value(), &r.to_text())
                .map_err(Error::Output)?;
            status(r.has_findings())
        }
        Command::Diff(a) => {
            let (sa, sb) = crate::diff::load_sides(&a.a, &a.b, quiet)?;
            out.begin_list().map_err(Error::Output)?;
            let summary = crate::diff::sides_value(&sa, &sb);
            let text = crate::diff::sides_text(&sa, &sb);
            out.item(&summary, || text).map_err(Error::Output)?;
            let mut differences = 0u64;
            crate::diff::diff_walk(&sa.built.tree, &sb.built.tree, &mut |d| {
                differences += 1;
                out.item(&d.to_value(), || d.to_text())
                    .map_err(Error::Output)
            })?;
            for n in crate::diff::node_diffs(&sa.built, &sb.built) {
                differences += 1;
                out.item(&n.to_value(), || n.to_text())
                    .map_err(Error::Output)?;
            }
            if out.format() == Format::Text && differences == 0 {
                out.item(&distkv_model::Value::Nil, || "no differences".into())
                    .map_err(Error::Output)?;
            }
            out.end_list().map_err(Error::Output)?;
            status(differences > 0)
        }
        Command::History(a) => {
            let key = parse_path(&a.key)?;
            let use_index = if a.no_index {
                crate::history::UseIndex::Never
            } else if a.index {
                crate::history::UseIndex::Build
            } else {
                crate::history::UseIndex::IfPresent
            };
            let r = crate::history::history_with(&a.paths, &key, a.recursive, quiet, use_index)?;
            out.begin_list().map_err(Error::Output)?;
            for c in &r.changes {
                out.item(&c.to_value(), || c.to_text())
                    .map_err(Error::Output)?;
            }
            if out.format() == Format::Text && r.changes.is_empty() {
                out.item(&distkv_model::Value::Nil, || "no changes".into())
                    .map_err(Error::Output)?;
            }
            out.end_list().map_err(Error::Output)?;
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            for d in &r.damage {
                eprintln!("damage: {}", d.to_text());
            }
            status(
                r.damage
                    .iter()
                    .any(|d| d.kind != crate::source::DamageKind::TornTail),
            )
        }
    };
    out.flush().map_err(Error::Output)?;
    Ok(st)
}

/// The whole program: runs `cli` on stdout and turns the result into the
/// exit status.
pub fn main(cli: Cli) -> ExitCode {
    let stdout = io::stdout();
    match run(cli, BufWriter::new(stdout.lock())) {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        Ok(Status::Findings) => ExitCode::from(1),
        // A closed pipe (`| head`): the reader has what it wanted.
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distkv-replay: {e}");
            ExitCode::from(if e.is_damage() { 1 } else { 2 })
        }
    }
}
