//! `distkv client log …`: files written by the server.

use clap::{Args, Subcommand};
use distkv_model::Value;

use super::{api, Help, Session};

/// Manage the server's log and snapshot files.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: LogCommand,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Log changes to a file on the server (DistKV's format).
    ///
    /// Any previously open log is closed as soon as the new one is ready.
    Dest {
        #[command(flatten)]
        help: Help,
        /// Don't write the initial state.
        #[arg(short = 'i', long)]
        incremental: bool,
        /// Replace the file if it exists.
        #[arg(long)]
        overwrite: bool,
        /// The file, relative to the server's export directory
        /// (`server.export.dir`, by default `export/` in its data directory).
        path: String,
    },
    /// Write the server's current state to a file on the server (DistKV's
    /// format for names ending in `.dkv`, else a distkv snapshot).
    Save {
        #[command(flatten)]
        help: Help,
        /// Also dump internal state.
        #[arg(short = 'f', long)]
        full: bool,
        /// Replace the file if it exists.
        #[arg(long)]
        overwrite: bool,
        /// The file, relative to the server's export directory
        /// (`server.export.dir`, by default `export/` in its data directory).
        path: String,
    },
    /// Stop logging changes.
    Stop {
        #[command(flatten)]
        help: Help,
    },
}

/// Runs `distkv client log …`.
pub(crate) async fn run(s: &mut Session, a: LogArgs) -> anyhow::Result<()> {
    let (action, fields) = match a.cmd {
        LogCommand::Dest {
            incremental,
            overwrite,
            path,
            ..
        } => (
            "log",
            vec![
                ("path", Value::str(&path)),
                ("fetch", Value::Bool(!incremental)),
                ("overwrite", Value::Bool(overwrite)),
            ],
        ),
        LogCommand::Save {
            full,
            overwrite,
            path,
            ..
        } => (
            "save",
            vec![
                ("path", Value::str(&path)),
                ("full", Value::Bool(full)),
                ("overwrite", Value::Bool(overwrite)),
            ],
        ),
        LogCommand::Stop { .. } => ("log", vec![]),
    };
    let res = s.client.request(action, fields).await.map_err(api)?;
    if s.meta {
        s.out.yprint(&res)?;
    }
    Ok(())
}
