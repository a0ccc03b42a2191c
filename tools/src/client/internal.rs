//! `distkv client internal …`: the server's internal state.

use clap::{Args, Subcommand};
use distkv_model::Value;
use distkv_node::cluster::core::{deleter_names, DELETER_GROUP};

use anyhow::anyhow;
use distkv_model::Path;
use distkv_node::client::{StreamItem, TreeOptions, UpdateOptions};

use super::get::Nested;
use super::output::{set, take};
use super::{api, parse_path, Help, Session};

/// Query the server's internal state.
#[derive(Debug, Args)]
pub struct InternalArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: InternalCommand,
}

#[derive(Debug, Subcommand)]
enum InternalCommand {
    /// Dump the server's state.
    State(StateArgs),
    /// Show or change the deleter group: the nodes that agree when
    /// tombstones of deleted entries may be purged.
    Deleter(DeleterArgs),
    /// Forget a node that left the cluster for good (refused while it
    /// still heads some entry).
    Kill(KillArgs),
    /// Dump internal state: the meta tree below PATH, as a nested map with
    /// each value under `_`.
    Dump(DumpArgs),
    /// Fetch data by node+tick: the entry whose last change was NODE's
    /// TICK.
    Get(GetArgs),
    /// List the ticks of NODE's changes that are still live data.
    ///
    /// Can be used to determine whether a node still has live data,
    /// otherwise it can be killed. With `--current` only the entries last
    /// changed by NODE are shown; `--copy` rewrites these entries (so that
    /// this node heads them). With `-v` the paths are shown too.
    Enum(EnumArgs),
    /// Fix internal state: take NODE's TICKs as superseded (or, with `-d`,
    /// deleted). Without TICKs, the ticks this node misses are taken (all
    /// nodes' if NODE is empty: `''`). This is a dangerous command.
    Mark(MarkArgs),
}

#[derive(Debug, Args)]
struct MarkArgs {
    #[command(flatten)]
    help: Help,
    /// Mark as deleted. Default: superseded.
    #[arg(short = 'd', long)]
    deleted: bool,
    /// The node this message is faked as being from (ignored by our node).
    #[arg(short = 'n', long = "node", value_name = "SOURCE", default_value = "?")]
    source: String,
    /// Also send to all servers.
    #[arg(short = 'b', long)]
    broadcast: bool,
    /// The node whose ticks to mark.
    node: String,
    /// The ticks.
    items: Vec<u64>,
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    help: Help,
    /// The subtree of the meta tree (`:` for all of it).
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct GetArgs {
    #[command(flatten)]
    help: Help,
    /// The node that made the change.
    node: String,
    /// Its tick.
    tick: u64,
}

#[derive(Debug, Args)]
struct EnumArgs {
    #[command(flatten)]
    help: Help,
    /// Return at most this many IDs.
    #[arg(short = 'n', long = "num", value_name = "N")]
    num: Option<u64>,
    /// Return only IDs with current data.
    #[arg(short = 'c', long)]
    current: bool,
    /// Create a no-op change.
    #[arg(short = 'C', long)]
    copy: bool,
    /// The node.
    node: String,
}

#[derive(Debug, Args)]
struct DeleterArgs {
    #[command(flatten)]
    help: Help,
    /// Remove the nodes (all of them if none are named).
    #[arg(short = 'd', long)]
    delete: bool,
    /// Nodes to add (or remove).
    nodes: Vec<String>,
}

#[derive(Debug, Args)]
struct KillArgs {
    #[command(flatten)]
    help: Help,
    /// The node to forget.
    node: String,
}

#[derive(Debug, Default, Args)]
struct StateArgs {
    #[command(flatten)]
    help: Help,
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
    match args.cmd {
        InternalCommand::State(a) => state(s, a).await,
        InternalCommand::Deleter(a) => deleter(s, a).await,
        InternalCommand::Kill(a) => {
            let node = vec![("node", Value::str(&a.node))];
            let res = s.client.request("kill_node", node).await.map_err(api)?;
            if s.meta {
                s.out.yprint(&res)?;
            }
            Ok(())
        }
        InternalCommand::Dump(a) => dump(s, a).await,
        InternalCommand::Get(a) => get(s, a).await,
        InternalCommand::Enum(a) => enumerate(s, a).await,
        InternalCommand::Mark(a) => mark(s, a).await,
    }
}

/// As DistKV's `internal mark`: `fake_info` (and with `-b`
/// `fake_info_send`), then prints the state of what was marked (the
/// server's `known` for superseded ticks, not renamed, as in DistKV).
async fn mark(s: &mut Session, a: MarkArgs) -> anyhow::Result<()> {
    let key = if a.deleted { "deleted" } else { "superseded" };
    let ranges = if a.items.is_empty() {
        let state = s.client.get_state(&["missing"]).await.map_err(api)?;
        let missing = state
            .get("missing")
            .cloned()
            .unwrap_or(Value::Map(Vec::new()));
        if a.node.is_empty() {
            missing
        } else {
            let mine = missing
                .get(&a.node)
                .cloned()
                .ok_or_else(|| anyhow!("Nothing is missing of {}", a.node))?;
            Value::Map(vec![(Value::str(&a.node), mine)])
        }
    } else if a.node.is_empty() {
        return Err(super::usage("You can't do that with an empty node"));
    } else {
        let mut r = distkv_model::RangeSet::new();
        a.items.iter().for_each(|t| r.insert(*t));
        Value::Map(vec![(Value::str(&a.node), r.to_value())])
    };
    let fields = || vec![(key, ranges.clone()), ("node", Value::str(&a.source))];
    s.client.request("fake_info", fields()).await.map_err(api)?;
    if a.broadcast {
        s.client
            .request("fake_info_send", fields())
            .await
            .map_err(api)?;
    }
    let res = s.client.get_state(&[key]).await.map_err(api)?;
    s.out.yprint(&res)?;
    Ok(())
}

/// As DistKV's `internal dump`: the meta tree below PATH nested by path
/// elements, each value under `_`.
async fn dump(s: &mut Session, a: DumpArgs) -> anyhow::Result<()> {
    dump_meta(s, &a.path).await
}

/// The meta subtree at `path` as nested maps, values under `_` (also
/// `type list` and `type match` of a pattern subtree).
pub(crate) async fn dump_meta(s: &mut Session, path: &Path) -> anyhow::Result<()> {
    let opts = TreeOptions::default();
    let mut stream = s.client.get_tree_internal(path, &opts).await.map_err(api)?;
    let mut tree = Nested::default();
    while let Some(item) = stream.next().await.map_err(api)? {
        let StreamItem::Data(mut r) = item else {
            continue;
        };
        let Some(Value::Path(p)) = take(&mut r, "path") else {
            continue;
        };
        let at = tree.at(&p);
        if let Some(v) = take(&mut r, "value") {
            at.set(Value::str("_"), v);
        }
    }
    s.out.yprint(&tree.into_value())?;
    Ok(())
}

/// The entry changed last by NODE at TICK (`get_value` by node and tick).
async fn get_by_tick(s: &Session, node: &str, tick: u64, nchain: i64) -> anyhow::Result<Value> {
    let fields = vec![
        ("node", Value::str(node)),
        ("tick", Value::uint(tick)),
        ("nchain", Value::Int(nchain)),
    ];
    s.client.request("get_value", fields).await.map_err(api)
}

async fn get(s: &mut Session, a: GetArgs) -> anyhow::Result<()> {
    let mut res = get_by_tick(s, &a.node, a.tick, 99).await?;
    if !s.meta {
        res = take(&mut res, "value").ok_or_else(|| anyhow!("No data at {} {}", a.node, a.tick))?;
    }
    s.out.yprint(&res)?;
    Ok(())
}

/// As DistKV's `internal enum`: with `-m` (and neither `-C` nor `-v`) the
/// reply; else one tick per line, with `-v` followed by the path, and
/// `-C` rewrites each entry NODE still heads.
async fn enumerate(s: &mut Session, a: EnumArgs) -> anyhow::Result<()> {
    let mut fields = vec![
        ("node", Value::str(&a.node)),
        ("current", Value::Bool(a.current)),
    ];
    if let Some(n) = a.num {
        fields.push(("max", Value::uint(n)));
    }
    let res = s.client.request("enum_node", fields).await.map_err(api)?;
    if s.meta && !a.copy && s.debug <= 1 {
        s.out.yprint(&res)?;
        return Ok(());
    }
    let ticks: Vec<u64> = res
        .get("result")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    for k in ticks {
        if !a.copy && s.debug <= 1 {
            s.out.write(format!("{k}\n").as_bytes())?;
            continue;
        }
        let r = get_by_tick(s, &a.node, k, 3).await?;
        let path = match r.get("path") {
            Some(Value::Path(p)) => p.clone(),
            _ => Path::root(),
        };
        if s.debug > 1 {
            s.out.write(format!("{k} {path}\n").as_bytes())?;
        } else {
            s.out.write(format!("{k}\n").as_bytes())?;
        }
        let chain = r.get("chain").cloned().unwrap_or(Value::Nil);
        if a.copy && chain.get("node").and_then(Value::as_str) == Some(a.node.as_str()) {
            let opts = UpdateOptions {
                chain: Some(chain),
                ..UpdateOptions::default()
            };
            let value = r.get("value").cloned().unwrap_or(Value::Nil);
            s.client.set_value(&path, value, &opts).await.map_err(api)?;
        }
    }
    Ok(())
}

/// `(None, "actor", "del")`, relative to the meta root.
fn deleter_path() -> Value {
    Value::Path(distkv_model::Path::new(
        DELETER_GROUP.iter().map(|e| Value::str(e)).collect(),
    ))
}

/// As DistKV's CLI: without arguments prints the group entry; otherwise
/// stores the changed group (even if unchanged) and prints the reply with
/// the new `value`.
async fn deleter(s: &mut Session, a: DeleterArgs) -> anyhow::Result<()> {
    let change = a.delete || !a.nodes.is_empty();
    let nchain = Value::Int(if change { 3 } else { 2 });
    let fields = vec![("path", deleter_path()), ("nchain", nchain)];
    let cur = s
        .client
        .request("get_internal", fields)
        .await
        .map_err(api)?;
    if !change {
        s.out.yprint(&cur)?;
        return Ok(());
    }
    let mut nodes: std::collections::BTreeSet<String> = deleter_names(cur.get("value"))
        .map(str::to_string)
        .collect();
    match (a.delete, a.nodes.is_empty()) {
        (true, true) => nodes.clear(),
        (true, false) => nodes.retain(|n| !a.nodes.contains(n)),
        (false, _) => nodes.extend(a.nodes),
    }
    let list = Value::Array(nodes.iter().map(|n| Value::str(n)).collect());
    let value = Value::map([("nodes", list)]);
    let mut fields = vec![("path", deleter_path()), ("value", value.clone())];
    fields.push(("chain", cur.get("chain").cloned().unwrap_or(Value::Nil)));
    let mut res = s
        .client
        .request("set_internal", fields)
        .await
        .map_err(api)?;
    if let Value::Map(pairs) = &mut res {
        set(pairs, Value::str("value"), value);
    }
    s.out.yprint(&res)?;
    Ok(())
}

async fn state(s: &mut Session, a: StateArgs) -> anyhow::Result<()> {
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
    use distkv_yaml::top_level;

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
