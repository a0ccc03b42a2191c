//! The crate's one error type.
//!
//! [`Error`] is for what stops a command: files that cannot be read,
//! arguments that make no sense, a live node that cannot be reached. Damage
//! *found* in history files is not an error here: the commands report it as
//! a finding and go on (see [`crate::source::Damage`]). Only where a
//! command cannot go on without the damaged part (e.g. a data directory
//! whose recovery fails) does damage become an error, and
//! [`Error::is_damage`] tells the CLI to say "damage found" (exit 1)
//! rather than "usage or I/O error" (exit 2).

use std::io;
use std::path::PathBuf;

use distkv_client::client::ClientError;
use distkv_core::persist::meta::MetaError;
use distkv_log::LogError;
use distkv_snapshot::SnapshotError;

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file or directory concerned.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The command line asks for something impossible (unknown file format,
    /// bad path syntax, contradictory options, an event that no input has).
    #[error("{0}")]
    InvalidInput(String),
    /// Event-log segments could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A snapshot could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A data directory's metadata could not be read.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A live node could not be asked.
    #[error("{addr}: {source}")]
    Client {
        /// The node's address.
        addr: String,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
    /// Writing the command's output failed (e.g. a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[source] io::Error),
}

impl Error {
    /// Whether the error is damage in the files (exit status 1) rather than
    /// a usage or I/O problem (exit status 2).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Log(LogError::Corrupt { .. } | LogError::Gap { .. })
                | Error::Snapshot(SnapshotError::Corrupt { .. } | SnapshotError::Truncated { .. })
        )
    }
}

/// Wraps an I/O error with the file it concerns.
pub(crate) fn io_err(file: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let file = file.into();
    move |source| Error::Io { file, source }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
