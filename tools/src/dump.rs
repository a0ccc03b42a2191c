//! `distkv dump …`: tools that need no running node (config values, msgpack
//! stream files), and a look at the bus (`msg`, `post`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use distkv_model::{Path, Value};
use distkv_node::client::PathLongener;
use distkv_node::config::Config;
use distkv_yaml::top_level;

use crate::msgfile::{from_yaml, read_stream, write_stream, yaml_documents};

mod bus;

/// Low-level tools that don't depend on a running DistKV server.
#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(subcommand)]
    cmd: DumpCommand,
}

#[derive(Debug, Subcommand)]
enum DumpCommand {
    /// Print a configuration value (`:` for all of it): strings as they
    /// are, anything else as YAML. An unknown key exits with status 1.
    Cfg(CfgArgs),
    /// Print a msgpack stream file (a save file, say) as YAML documents
    /// separated by `---`.
    File(FileArgs),
    /// Read YAML documents from standard input and write them to FILE as
    /// a msgpack stream.
    Yaml(YamlArgs),
    /// Write an initial data file: as if NODE had started a new cluster
    /// with the root value `Initial data`.
    ///
    /// `distkv dump init NODE FILE` followed by `distkv server -l FILE
    /// NODE` is equivalent to `distkv server -I 'Initial data' NODE`.
    Init(InitArgs),
    /// Monitor the server-to-server messages on the bus, until interrupted.
    ///
    /// PATH `:` is the `update` stream of the cluster's topic root
    /// (`server.root`), `+NAME` the NAME stream, `+` all of them; any other
    /// path is used as the topic (MQTT wildcards apply). The broker is
    /// `server.mqtt` if set, else the embedded broker of the node at
    /// `connect.host` (port `server.bus.port`), which carries that node's
    /// own messages.
    Msg(MsgArgs),
    /// Publish messages read from YAML documents on standard input to the
    /// bus topic PATH (a document's `_topic` overrides it).
    Post(MsgArgs),
}

#[derive(Debug, Args)]
struct CfgArgs {
    /// The key, in path syntax (`connect.host`; `:` for everything).
    #[arg(value_parser = crate::client::parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct FileArgs {
    /// Unwrap (re-expand) shortened paths.
    #[arg(short = 'p', long)]
    path: bool,
    /// Only emit entries below this path (repeatable).
    #[arg(short = 'f', long = "filter", value_name = "PATH", value_parser = crate::client::parse_path)]
    filter: Vec<Path>,
    /// The file (`-`: standard input).
    file: PathBuf,
}

#[derive(Debug, Args)]
struct YamlArgs {
    /// The msgpack file to write.
    msgpack: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The node the data seem to come from.
    node: String,
    /// The file to write.
    file: PathBuf,
}

#[derive(Debug, Args)]
struct MsgArgs {
    /// The topic, in path syntax (see the command's help).
    #[arg(value_parser = crate::client::parse_path)]
    path: Path,
}

/// Runs `distkv dump …`; `debug` is DistKV's verbosity.
pub async fn run(args: DumpArgs, cfg: Config, debug: u8) -> anyhow::Result<()> {
    match args.cmd {
        DumpCommand::Cfg(a) => cfg_value(&cfg, &a.path, debug),
        DumpCommand::File(a) => file(&a),
        DumpCommand::Yaml(a) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading standard input")?;
            write_stream(&a.msgpack, &yaml_documents(&text)?)
        }
        DumpCommand::Init(a) => write_stream(&a.file, &[initial_data(&a.node)]),
        DumpCommand::Msg(a) => bus::monitor(&cfg, &a.path).await,
        DumpCommand::Post(a) => bus::post(&cfg, &a.path).await,
    }
}

/// What DistKV's `dump init` writes: the first change of a new cluster.
fn initial_data(node: &str) -> Value {
    let chain = Value::map([
        ("node", Value::str(node)),
        ("tick", Value::Int(1)),
        ("prev", Value::Nil),
    ]);
    Value::map([
        ("chain", chain),
        ("depth", Value::Int(0)),
        ("path", Value::Array(Vec::new())),
        ("tock", Value::Int(1)),
        ("value", Value::str("Initial data")),
    ])
}

/// `dump cfg PATH`.
fn cfg_value(cfg: &Config, path: &Path, debug: u8) -> anyhow::Result<()> {
    let mut node = cfg.tree();
    for p in path.iter() {
        let next = match p {
            Value::Str(k) => node.get(&**k),
            Value::Int(i) => usize::try_from(*i).ok().and_then(|i| node.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => {
                if debug > 0 {
                    println!("Unknown: {}", crate::client::output::py_str(p));
                }
                std::process::exit(1);
            }
        }
    }
    let v = from_yaml(node.clone())?;
    match v {
        Value::Str(s) => println!("{s}"),
        v => print!("{}", top_level(&v)),
    }
    Ok(())
}

/// `dump file`.
fn file(a: &FileArgs) -> anyhow::Result<()> {
    let mut longener = (a.path || !a.filter.is_empty()).then(|| PathLongener::new(&Path::root()));
    let mut out = String::new();
    for mut msg in read_stream(Some(&a.file))? {
        if let Some(l) = &mut longener {
            l.apply(&mut msg);
        }
        if !a.filter.is_empty() {
            let Some(p) = msg_path(&msg) else { continue };
            if !a.filter.iter().any(|f| p.starts_with(f.elements())) {
                continue;
            }
        }
        out.push_str(&top_level(&msg));
        out.push_str("---\n");
    }
    print!("{out}");
    Ok(())
}

/// A message's `path`, a path or (as in `dump init` files) a list.
pub fn msg_path(msg: &Value) -> Option<Path> {
    match msg.get("path")? {
        Value::Path(p) => Some(p.clone()),
        Value::Array(a) => Some(Path::new(a.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_data_is_distkvs() {
        let v = initial_data("n9");
        assert_eq!(
            top_level(&v),
            "chain:\n  node: n9\n  prev: null\n  tick: 1\ndepth: 0\npath: []\ntock: 1\nvalue: Initial data\n"
        );
    }
}
