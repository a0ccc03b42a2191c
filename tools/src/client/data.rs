//! `distkv client data PATH [COMMAND]`: the user data.
//!
//! PATH comes before the command, so the command line after PATH is parsed
//! separately ([`DataCli`]): that way a path named like a command
//! (`data list get`) is still a path.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use distkv_model::{Path, Value};
use distkv_node::client::{StreamItem, UpdateOptions};

use super::attrs::{self, Attr};
use super::get::{data_get, GetOptions};
use super::monitor::{monitor, MonitorArgs};
use super::{api, parse_path, Session};
use crate::eval::parse_value;

/// `data PATH [COMMAND]`; PATH is parsed here, the rest by [`DataCli`].
#[derive(Debug, Args)]
#[command(override_usage = "distkv client data <PATH> [COMMAND] [OPTIONS]")]
pub struct DataArgs {
    /// Print help (also `distkv client data PATH COMMAND --help`).
    #[arg(short = 'h', long, action = ArgAction::SetTrue)]
    help: bool,
    /// The entry (DistKV path syntax: `a.b.c`, `:` is the root).
    #[arg(value_parser = parse_path, required_unless_present = "help")]
    path: Option<Path>,
    /// get, list, set, delete, monitor or update, with its options.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<OsString>,
}

/// Access the user data stored in the DistKV tree at PATH.
///
/// Without a command, prints the value at PATH.
#[derive(Debug, Parser)]
#[command(
    name = "data",
    bin_name = "distkv client data PATH",
    disable_version_flag = true
)]
struct DataCli {
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Read a DistKV value (the default command).
    ///
    /// A recursive read gets the whole subtree before printing anything;
    /// use `monitor --state` for incremental output.
    Get(GetArgs),
    /// List DistKV values: `get --recursive --empty` below PATH, one level
    /// deep, printing paths only.
    List(ListArgs),
    /// Add or update an entry.
    ///
    /// NAME `:` sets the whole value; any other NAME sets that key inside
    /// the (map) value. Use `--last` to make sure nobody changed the entry
    /// in between.
    Set(SetArgs),
    /// Delete an entry, or a whole subtree.
    ///
    /// Deleting an entry with children leaves the children alone. The root
    /// entry cannot be deleted.
    Delete(DeleteArgs),
    /// Monitor a DistKV subtree, until interrupted.
    Monitor(MonitorArgs),
    /// Send a list of updates to a DistKV subtree: each message of the
    /// msgpack stream sets PATH + its `path` to its `value`.
    Update(UpdateArgs),
}

#[derive(Debug, PartialEq, Args)]
struct UpdateArgs {
    /// File to read (msgpack stream). Default: standard input.
    #[arg(short = 'i', long = "infile", value_name = "FILE")]
    infile: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Args)]
struct GetArgs {
    /// Structure as dictionary; KEY is the key to use for values.
    /// Default: a list.
    #[arg(short = 'd', long = "as-dict", value_name = "KEY")]
    as_dict: Option<String>,
    /// Limit recursion depth. Default: whole tree.
    #[arg(short = 'm', long, value_name = "N", allow_negative_numbers = true)]
    maxdepth: Option<i64>,
    /// Starting depth. Default: whole tree.
    #[arg(short = 'M', long, value_name = "N", allow_negative_numbers = true)]
    mindepth: Option<i64>,
    /// Read a complete subtree.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Include empty nodes.
    #[arg(short = 'e', long)]
    empty: bool,
    /// Print string values without quotes etc.
    #[arg(short = 'R', long)]
    raw: bool,
    /// Add `_KEY` timestamps next to numbers that look like recent times.
    #[arg(short = 'D', long = "add-date")]
    add_date: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Structure as dictionary; KEY is the key to use for values.
    /// Default: a list.
    #[arg(short = 'd', long = "as-dict", value_name = "KEY")]
    as_dict: Option<String>,
    /// Limit recursion depth.
    #[arg(
        short = 'm',
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    maxdepth: i64,
    /// Starting depth.
    #[arg(
        short = 'M',
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    mindepth: i64,
}

#[derive(Debug, Args)]
struct SetArgs {
    /// Set NAME to the string VALUE (repeatable).
    #[arg(short = 'v', long = "var", num_args = 2, value_names = ["NAME", "VALUE"])]
    vars: Vec<String>,
    /// Set NAME to the evaluated EXPR (`-` deletes NAME; repeatable).
    #[arg(short = 'e', long = "eval", num_args = 2, value_names = ["NAME", "EXPR"])]
    evals: Vec<String>,
    /// Set NAME to the path PATH (repeatable).
    #[arg(short = 'p', long = "path", num_args = 2, value_names = ["NAME", "PATH"])]
    paths: Vec<String>,
    /// The change the entry must currently be at.
    #[arg(short = 'l', long, num_args = 2, value_names = ["NODE", "TICK"])]
    last: Option<Vec<String>>,
    /// This is a new entry.
    #[arg(short = 'n', long, conflicts_with = "last")]
    new: bool,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The value the entry must currently have. Deprecated; use `--last`.
    #[arg(short = 'p', long, value_name = "VALUE")]
    prev: Option<String>,
    /// The change the entry must currently be at.
    #[arg(short = 'l', long, num_args = 2, value_names = ["NODE", "TICK"])]
    last: Option<Vec<String>>,
    /// Delete a complete subtree.
    #[arg(short = 'r', long, conflicts_with_all = ["prev", "last"])]
    recursive: bool,
    /// Evaluate the previous value.
    #[arg(short = 'e', long = "eval", requires = "prev")]
    eval: bool,
}

/// A checked `data` command, ready to run.
#[derive(Debug, PartialEq)]
pub struct DataCommand {
    path: Path,
    action: Action,
}

#[derive(Debug, PartialEq)]
enum Action {
    Get(GetOptions),
    Set {
        attrs: Vec<(Path, Attr)>,
        chain: Option<Value>,
    },
    Delete {
        recursive: bool,
        prev: Option<Value>,
        chain: Option<Value>,
    },
    Monitor(MonitorArgs),
    Update(UpdateArgs),
}

impl DataArgs {
    /// Parses and checks the command after PATH.
    pub fn check(self) -> Result<DataCommand, clap::Error> {
        // `--help` before the command is the help of the commands.
        let help = self.help.then(|| OsString::from("--help"));
        let argv = std::iter::once(OsString::from("data"))
            .chain(self.rest)
            .chain(help);
        let cli = DataCli::try_parse_from(argv)?;
        let invalid = |msg: String| DataCli::command().error(ErrorKind::ValueValidation, msg);
        let action = match cli.cmd.unwrap_or(Sub::Get(GetArgs::default())) {
            Sub::Get(a) => Action::Get(GetOptions {
                recursive: a.recursive,
                as_dict: a.as_dict,
                maxdepth: a.maxdepth,
                mindepth: a.mindepth,
                empty: a.empty,
                raw: a.raw,
                add_date: a.add_date,
            }),
            Sub::List(a) => Action::Get(GetOptions {
                recursive: true,
                as_dict: a.as_dict,
                maxdepth: Some(a.maxdepth),
                mindepth: Some(a.mindepth),
                empty: true,
                raw: true,
                add_date: false,
            }),
            Sub::Set(a) => Action::Set {
                attrs: attrs::collect(&a.vars, &a.evals, &a.paths).map_err(invalid)?,
                chain: chain(a.last.as_deref()).map_err(invalid)?,
            },
            Sub::Delete(a) => Action::Delete {
                recursive: a.recursive,
                prev: match (a.prev, a.eval) {
                    (None, _) => None,
                    (Some(p), false) => Some(Value::str(&p)),
                    (Some(p), true) => {
                        Some(parse_value(&p).map_err(|e| invalid(format!("{e:#}")))?)
                    }
                },
                chain: chain(a.last.as_deref()).map_err(invalid)?,
            },
            Sub::Monitor(a) => Action::Monitor(a),
            Sub::Update(a) => Action::Update(a),
        };
        Ok(DataCommand {
            path: self.path.expect("clap requires PATH without --help"),
            action,
        })
    }
}

/// `-l NODE TICK` as a change chain `{node, tick}`.
fn chain(last: Option<&[String]>) -> Result<Option<Value>, String> {
    let Some(last) = last else { return Ok(None) };
    let [node, tick] = last else {
        return Err("--last needs a NODE and a TICK".into());
    };
    let tick: u64 = tick
        .parse()
        .map_err(|_| format!("invalid tick {tick:?}: not a number"))?;
    Ok(Some(Value::map([
        ("node", Value::str(node)),
        ("tick", Value::uint(tick)),
    ])))
}

pub async fn run(s: &mut Session, cmd: DataCommand) -> anyhow::Result<()> {
    let path = &cmd.path;
    match cmd.action {
        Action::Get(o) => data_get(s, path, &o).await,
        Action::Set { attrs, chain } => set(s, path, &attrs, chain).await,
        Action::Delete {
            recursive: true, ..
        } => delete_tree(s, path).await,
        Action::Delete { prev, chain, .. } => {
            let opts = UpdateOptions {
                chain,
                prev,
                nchain: s.nchain(),
                idem: None,
            };
            let res = s.client.delete_value(path, &opts).await.map_err(api)?;
            print_meta(s, &res)
        }
        Action::Monitor(a) => monitor(s, path, &a).await,
        Action::Update(a) => update(s, path, &a).await,
    }
}

/// `update`: sets PATH + `msg.path` to `msg.value` for each message of the
/// input; messages without a path are skipped, as in DistKV, and so are
/// messages without a value (DistKV fails on them).
async fn update(s: &mut Session, path: &Path, a: &UpdateArgs) -> anyhow::Result<()> {
    let msgs = crate::msgfile::read_stream(a.infile.as_deref())?;
    for msg in msgs {
        let (Some(sub), Some(value)) = (crate::dump::msg_path(&msg), msg.get("value")) else {
            continue;
        };
        let target = path.join(sub.elements());
        s.client
            .set_value(&target, value.clone(), &UpdateOptions::default())
            .await
            .map_err(api)?;
    }
    Ok(())
}

/// DistKV's `node_attr`: reads the entry (with its chain), applies the
/// edits and writes the result back under that chain (or `chain`, from
/// `--last`). An entry that does not exist must still not exist (chain
/// `None`); no value and no edits deletes the entry. `--new` changes
/// nothing here, as in DistKV.
async fn set(
    s: &mut Session,
    path: &Path,
    attrs: &[(Path, Attr)],
    chain: Option<Value>,
) -> anyhow::Result<()> {
    let nchain = if s.meta { 3 } else { 2 };
    let res = s.client.get_value(path, nchain).await.map_err(api)?;
    let old = res.get("value").cloned();
    let chain = match old {
        None => Value::Nil,
        Some(_) => chain
            .or_else(|| res.get("chain").cloned())
            .unwrap_or(Value::Nil),
    };
    let opts = UpdateOptions {
        chain: Some(chain),
        prev: None,
        nchain: s.nchain(),
        idem: None,
    };
    let res = match attrs::apply(old, attrs) {
        Some(v) => s.client.set_value(path, v, &opts).await,
        None => s.client.delete_value(path, &opts).await,
    }
    .map_err(api)?;
    print_meta(s, &res)
}

/// `delete --recursive`: one reply with the count, or with `-m` the
/// deleted entries as the server sends them (paths shortened, with
/// `depth`), as YAML documents separated by `---`. (DistKV prints a single
/// entry the same way and fails on several.)
async fn delete_tree(s: &mut Session, path: &Path) -> anyhow::Result<()> {
    if !s.meta {
        s.client.delete_tree(path).await.map_err(api)?;
        return Ok(());
    }
    let fields = vec![
        ("path", Value::Path(path.clone())),
        ("nchain", Value::uint(s.nchain())),
    ];
    let mut stream = s.client.stream("delete_tree", fields).await.map_err(api)?;
    let mut first = true;
    while let Some(item) = stream.next().await.map_err(api)? {
        if let StreamItem::Data(r) = item {
            if !std::mem::take(&mut first) {
                s.out.write(b"---\n")?;
            }
            s.out.yprint(&r)?;
        }
    }
    Ok(())
}

/// With `-m`, prints a reply.
fn print_meta(s: &mut Session, res: &Value) -> anyhow::Result<()> {
    if s.meta {
        s.out.yprint(res)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientCommand;
    use crate::{Cli, Command};

    fn data(args: &[&str]) -> Result<DataCommand, clap::Error> {
        let argv = ["distkv", "client", "data"].iter().chain(args);
        let cli = Cli::try_parse_from(argv)?;
        let Command::Client(c) = cli.cmd else {
            panic!("not a client command")
        };
        let ClientCommand::Data(d) = c.cmd else {
            panic!("not a data command")
        };
        d.check()
    }

    fn get(args: &[&str]) -> GetOptions {
        match data(args).unwrap().action {
            Action::Get(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn get_is_the_default_and_options_combine() {
        assert_eq!(get(&[":"]), GetOptions::default());
        let o = get(&["one", "get", "-rd_"]);
        assert!(o.recursive);
        assert_eq!(o.as_dict.as_deref(), Some("_"));
        let o = get(&[":", "get", "-r", "-m", "3", "-M", "2", "-eRD"]);
        assert_eq!((o.maxdepth, o.mindepth), (Some(3), Some(2)));
        assert!(o.empty && o.raw && o.add_date);
    }

    #[test]
    fn list_is_a_shallow_raw_recursive_get() {
        let o = get(&["one", "list"]);
        assert_eq!(
            o,
            GetOptions {
                recursive: true,
                as_dict: None,
                maxdepth: Some(1),
                mindepth: Some(1),
                empty: true,
                raw: true,
                add_date: false,
            }
        );
        assert_eq!(get(&["one", "list", "-m", "2", "-d_"]).maxdepth, Some(2));
        assert!(data(&["one", "list", "-e"]).is_err());
    }

    #[test]
    fn paths_named_like_commands_stay_paths() {
        let c = data(&["list", "get"]).unwrap();
        assert_eq!(c.path, Path::parse("list").unwrap());
        let c = data(&["get"]).unwrap();
        assert_eq!(c.path, Path::parse("get").unwrap());
        assert_eq!(c.action, Action::Get(GetOptions::default()));
    }

    #[test]
    fn set_collects_edits_and_chain() {
        let c = data(&[
            "a.b", "set", "-v", "one", "XXX", "-e", "two", "2", "-l", "n1", "7",
        ])
        .unwrap();
        let Action::Set { attrs, chain } = c.action else {
            panic!()
        };
        assert_eq!(
            attrs,
            vec![
                (Path::parse("one").unwrap(), Attr::Set(Value::str("XXX"))),
                (Path::parse("two").unwrap(), Attr::Set(Value::Int(2))),
            ]
        );
        let want = Value::map([("node", Value::str("n1")), ("tick", Value::Int(7))]);
        assert_eq!(chain, Some(want));
        let c = data(&["hello", "set", "-v", ":", "world2", "-n"]).unwrap();
        assert!(matches!(c.action, Action::Set { chain: None, .. }));
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["a..b"][..],
            &["a", "set", "-n", "-l", "n1", "3"],
            &["a", "set", "-l", "n1", "x"],
            &["a", "set", "-e", "x", "/"],
            &["a", "set", "-v", "x"],
            &["a", "delete", "-r", "-p", "x"],
            &["a", "delete", "-e"],
            &["a", "frob"],
        ] {
            let e = data(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn delete_options() {
        let c = data(&["a", "delete", "-p", "12", "-e"]).unwrap();
        assert!(matches!(
            c.action,
            Action::Delete {
                recursive: false,
                prev: Some(Value::Int(12)),
                chain: None
            }
        ));
        let c = data(&["a", "delete", "-p", "12"]).unwrap();
        assert!(matches!(
            c.action,
            Action::Delete {
                prev: Some(Value::Str(_)),
                ..
            }
        ));
        let c = data(&["a", "delete", "-r"]).unwrap();
        assert!(matches!(
            c.action,
            Action::Delete {
                recursive: true,
                ..
            }
        ));
    }
}
