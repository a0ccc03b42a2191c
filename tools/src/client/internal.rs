//! `distkv client internal …`: the server's internal state.

use clap::{Args, Subcommand};
use distkv_model::Value;

use super::output::{set, take};
use super::{api, LongHelp, Session};

/// Query the server's internal state.
#[derive(Debug, Args)]
pub struct InternalArgs {
    #[command(flatten)]
    help: LongHelp,
    #[command(subcommand)]
    cmd: InternalCommand,
}

#[derive(Debug, Subcommand)]
enum InternalCommand {
    /// Dump the server's state.
    State(StateArgs),
}

#[derive(Debug, Default, Args)]
struct StateArgs {
    #[command(flatten)]
    help: LongHelp,
    /// Get node status.
    #[arg(short = 'n', long)]
    nodes: bool,
    /// Get deletion status.
    #[arg(short = 'd', long)]
    deleted: bool,
    /// Get missing-node status.
    #[arg(short = 'm', long)]
    missing: bool,
    /// Get remote-missing-node status.
    #[arg(short = 'r', long = "remote-missing")]
    remote_missing: bool,
    /// Get known-data status.
    #[arg(short = 'p', long)]
    present: bool,
    /// Get superseded-data status.
    #[arg(short = 's', long)]
    superseded: bool,
    /// Get superseded-data status.
    #[arg(short = 'k', long, hide = true)]
    known: bool,
    /// Get internal verbosity.
    #[arg(short = 'D', long)]
    debug: bool,
    /// All available data.
    #[arg(short = 'a', long)]
    all: bool,
}

impl StateArgs {
    /// The `get_state` flags to send.
    fn flags(&self) -> Vec<&'static str> {
        let a = self.all;
        [
            (self.nodes || a, "nodes"),
            (self.deleted || a, "deleted"),
            (self.missing || a, "missing"),
            (self.remote_missing || a, "remote_missing"),
            (self.present || a, "present"),
            (self.superseded || self.known || a, "superseded"),
            (self.debug, "debug"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

pub async fn run(s: &mut Session, args: InternalArgs) -> anyhow::Result<()> {
    let InternalCommand::State(a) = args.cmd;
    let mut res = s.client.get_state(&a.flags()).await.map_err(api)?;
    rename_known(&mut res);
    s.out.yprint(&res)?;
    Ok(())
}

/// The server's `known` is printed as `superseded`.
fn rename_known(res: &mut Value) {
    if let Some(k) = take(res, "known") {
        if let Value::Map(pairs) = res {
            set(pairs, Value::str("superseded"), k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::yaml::top_level;

    #[test]
    fn flags_and_all() {
        let a = StateArgs {
            nodes: true,
            known: true,
            ..StateArgs::default()
        };
        assert_eq!(a.flags(), ["nodes", "superseded"]);
        let a = StateArgs {
            all: true,
            ..StateArgs::default()
        };
        assert_eq!(
            a.flags(),
            [
                "nodes",
                "deleted",
                "missing",
                "remote_missing",
                "present",
                "superseded"
            ]
        );
    }

    #[test]
    fn known_is_shown_as_superseded() {
        let ranges = Value::map([(
            "n1",
            Value::Array(vec![
                Value::Int(4),
                Value::Array(vec![Value::Int(6), Value::Int(8)]),
            ]),
        )]);
        let mut res = Value::map([
            ("known", ranges),
            ("node", Value::str("n2")),
            ("seq", Value::Int(2)),
            ("tock", Value::Int(349)),
        ]);
        rename_known(&mut res);
        assert_eq!(
            top_level(&res),
            "node: n2\nseq: 2\nsuperseded:\n  n1:\n  - 4\n  - - 6\n    - 8\ntock: 349\n"
        );
    }
}
