//! `distkv client error dump|resolve`: the error records (see
//! `distkv_node::errors`), shown and resolved as DistKV's CLI does.

use anyhow::anyhow;
use clap::{ArgAction, Args, Subcommand};
use distkv_model::{Path, Value};
use distkv_node::client::{StreamItem, TreeOptions};
use distkv_node::errors::{is_missing, ErrorRecord, ErrorRoot};

use super::get::Nested;
use super::output::{add_dates, get_mut, now, set, take};
use super::{api, parse_path, Help, Session};

/// Manage error records in DistKV.
#[derive(Debug, Args)]
pub struct ErrorArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: ErrorCommand,
}

#[derive(Debug, Subcommand)]
enum ErrorCommand {
    /// Dump error entries (unresolved ones unless `-r` or `-a`).
    Dump(DumpArgs),
    /// Mark an error as resolved.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    help: Help,
    /// Add details from this node.
    #[arg(short = 'n', long, value_name = "NODE")]
    node: Option<String>,
    /// Only show errors from this subsystem.
    #[arg(short = 's', long = "subsystem", value_name = "SUBSYS")]
    subsys: Option<String>,
    /// Only resolved errors.
    #[arg(short = 'r', long)]
    resolved: bool,
    /// Add per-node details (`-vv` for traces).
    #[arg(short = 'v', long, action = ArgAction::Count)]
    verbose: u8,
    /// Resolved and unresolved errors.
    #[arg(short = 'a', long = "all-errors")]
    all_errors: bool,
    /// Nest the records by subsystem and path, each under KEY.
    #[arg(short = 'd', long = "as-dict", value_name = "KEY")]
    as_dict: Option<String>,
    /// Only show errors below this path (`NODE.TOCK`, e.g. `n1:42`,
    /// selects one record).
    #[arg(short = 'p', long, value_name = "PATH", default_value = ":", value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    #[command(flatten)]
    help: Help,
    /// The subsystem: PATH is then the offending entry's path.
    #[arg(short = 's', long = "subsys", value_name = "SUBSYS")]
    subsys: Option<String>,
    /// The record, `NODE.TOCK` (e.g. `n1:42`), or with `-s` the path of
    /// the offending entry.
    #[arg(value_parser = parse_path)]
    path: Path,
}

pub async fn run(s: &mut Session, args: ErrorArgs) -> anyhow::Result<()> {
    match args.cmd {
        ErrorCommand::Dump(a) => dump(s, a).await,
        ErrorCommand::Resolve(a) => resolve(s, a).await,
    }
}

/// The name the command line reports errors under (DistKV: the host name).
fn client_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn resolve(s: &mut Session, a: ResolveArgs) -> anyhow::Result<()> {
    let name = client_name();
    let root = ErrorRoot::new(&s.client, &name);
    let rec = match &a.subsys {
        Some(sub) => root.find(sub, &a.path).await.map_err(api)?,
        None => match a.path.elements() {
            [node, tock] => root.get(node, tock).await.map_err(api)?,
            _ => return Err(super::usage("PATH must be NODE.TOCK (or use -s SUBSYS)")),
        },
    };
    let Some(mut rec) = rec else {
        return Err(anyhow!("No error at {}", a.path));
    };
    if rec.resolved() {
        eprintln!("Already resolved.");
        return Ok(());
    }
    root.resolve(&mut rec).await.map_err(api)
}

/// One record to show: its place below the prefix and the item as read
/// (`path`, `value`, with `-m` also `chain` and `tock`).
struct Found {
    at: Path,
    item: Value,
}

async fn dump(s: &mut Session, a: DumpArgs) -> anyhow::Result<()> {
    let name = client_name();
    let root = ErrorRoot::new(&s.client, &name);
    let prefix = root.prefix().clone();
    let mut filter = a.path.clone();
    let single =
        a.node.is_none() && matches!(filter.elements(), [_, Value::Int(_) | Value::UInt(_)]);
    let found = if single {
        let mut item = s
            .client
            .get_value(&prefix.join(filter.elements()), s.nchain())
            .await
            .map_err(api)?;
        if item.get("value").is_none() {
            return Err(anyhow!("No error at {filter}"));
        }
        take(&mut item, "seq");
        let at = std::mem::replace(&mut filter, Path::root());
        set_path(&mut item, at.clone());
        vec![Found { at, item }]
    } else {
        records(s, &prefix).await?
    };
    let mut tree = Nested::default();
    for f in found {
        show(s, &a, &prefix, &filter, f, &mut tree).await?;
    }
    if a.as_dict.is_some() {
        s.out.yprint(&tree.into_value())?;
    }
    Ok(())
}

/// Every record below `prefix`.
async fn records(s: &Session, prefix: &Path) -> anyhow::Result<Vec<Found>> {
    let opts = TreeOptions {
        nchain: s.nchain(),
        min_depth: Some(2),
        max_depth: Some(2),
        ..TreeOptions::default()
    };
    let mut stream = match s.client.get_tree(prefix, &opts).await {
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        st => st.map_err(api)?,
    };
    let mut out = Vec::new();
    loop {
        let item = match stream.next().await {
            Err(e) if is_missing(&e) && out.is_empty() => return Ok(out),
            Ok(None) => break,
            item => item.map_err(api)?,
        };
        let Some(StreamItem::Data(mut item)) = item else {
            continue;
        };
        take(&mut item, "seq");
        if let Some(Value::Path(at)) = item.get("path") {
            let at = at.clone();
            out.push(Found { at, item });
        }
    }
    Ok(out)
}

/// DistKV's `one(r)`: filters one record, decorates it, and prints it
/// (list mode) or files it into `tree` (dict mode).
async fn show(
    s: &mut Session,
    a: &DumpArgs,
    prefix: &Path,
    filter: &Path,
    mut f: Found,
    tree: &mut Nested,
) -> anyhow::Result<()> {
    let Some(val) = get_mut(&mut f.item, "value") else {
        return Ok(());
    };
    let rec = ErrorRecord {
        node: Value::Nil,
        tock: Value::Nil,
        value: val.clone(),
        chain: Value::Nil,
    };
    if a.subsys
        .as_deref()
        .is_some_and(|x| rec.subsystem() != Some(x))
    {
        return Ok(());
    }
    if !a.all_errors && rec.resolved() != a.resolved {
        return Ok(());
    }
    let rp = match rec.path() {
        Some(p) => p.clone(),
        None => {
            // DistKV files a record without a path as `incomplete.NODE.TOCK`.
            let mut e = vec![Value::str("incomplete")];
            e.extend(f.at.elements().iter().cloned());
            Path::new(e)
        }
    };
    if !rp.starts_with(filter.elements()) {
        return Ok(());
    }
    add_dates(val, now());
    let Value::Map(pairs) = val else {
        return Ok(());
    };
    if a.as_dict.is_some() {
        pairs.retain(|(k, _)| k.as_str() != Some("path"));
    } else if rec.path().is_none() {
        set(pairs, Value::str("path"), Value::Path(rp.clone()));
    }
    let syspath = match &a.node {
        None => f.at.clone(),
        Some(n) => {
            let mut e = vec![Value::str(n)];
            e.extend(f.at.elements().iter().cloned());
            Path::new(e)
        }
    };
    set(pairs, Value::str("syspath"), Value::Path(syspath));
    let details = details(s, a, prefix, &f.at).await?;
    if !details.is_empty() {
        set(pairs, Value::str("nodes"), Value::Map(details));
    }
    let rest = Path::new(rp.elements()[filter.elements().len()..].to_vec());
    let shown = if s.meta {
        f.item
    } else {
        take(&mut f.item, "value").unwrap_or(Value::Nil)
    };
    match &a.as_dict {
        Some(key) => {
            let mut at = Vec::new();
            if a.subsys.is_none() {
                let sub = rec.subsystem().unwrap_or("unknown");
                at.push(Value::str(sub));
            }
            at.extend(rest.elements().iter().cloned());
            tree.at(&Path::new(at)).set(Value::str(key), shown);
        }
        None => {
            s.out.yprint(&Value::Array(vec![shown]))?;
            s.out.write(b"---\n")?;
        }
    }
    Ok(())
}

/// The per-node details of the record at `at` that `-v`/`-n` ask for,
/// reporter name → detail (the whole item with `-m`).
async fn details(
    s: &Session,
    a: &DumpArgs,
    prefix: &Path,
    at: &Path,
) -> anyhow::Result<Vec<(Value, Value)>> {
    let base = prefix.join(at.elements());
    let mut items = Vec::new();
    if a.verbose > 0 {
        let opts = TreeOptions {
            nchain: s.nchain(),
            min_depth: Some(1),
            max_depth: Some(1),
            ..TreeOptions::default()
        };
        let mut stream = s.client.get_tree(&base, &opts).await.map_err(api)?;
        while let Some(item) = stream.next().await.map_err(api)? {
            if let StreamItem::Data(item) = item {
                items.push(item);
            }
        }
    } else if let Some(n) = &a.node {
        let mut item = s
            .client
            .get_value(&base.child(Value::str(n)), s.nchain())
            .await
            .map_err(api)?;
        if item.get("value").is_some() {
            set_path(&mut item, Path::new(vec![Value::str(n)]));
            items.push(item);
        }
    }
    let mut out = Vec::new();
    for mut item in items {
        take(&mut item, "seq");
        let Some(Value::Path(p)) = take(&mut item, "path") else {
            continue;
        };
        let Some(reporter) = p.elements().last().cloned() else {
            continue;
        };
        if a.node
            .as_deref()
            .is_some_and(|n| reporter.as_str() != Some(n))
        {
            continue;
        }
        if let Some(v) = get_mut(&mut item, "value") {
            add_dates(v, now());
            if a.verbose < 2 {
                take(v, "trace");
            }
        }
        let shown = if s.meta {
            item
        } else {
            take(&mut item, "value").unwrap_or(Value::Nil)
        };
        out.push((reporter, shown));
    }
    Ok(out)
}

fn set_path(item: &mut Value, p: Path) {
    if let Value::Map(pairs) = item {
        set(pairs, Value::str("path"), Value::Path(p));
    }
}
