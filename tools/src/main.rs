//! `distkv`: run a node, talk to one, or load-test one.

mod bench;
mod client;
mod eval;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// mimalloc: the tree is millions of small allocations, where glibc's
/// allocator spent a quarter of the time of loading and merging.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use distkv_node::config::Config;

/// DistKV: a master-less, fully replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "distkv", version, propagate_version = true)]
struct Cli {
    /// More log output (repeatable).
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
    /// Less log output (repeatable).
    #[arg(short, long, action = ArgAction::Count)]
    quiet: u8,
    /// Configuration file (YAML, DistKV's keys). Default: the first of
    /// ~/config/distkv.cfg, ~/.config/distkv.cfg, ~/.distkv.cfg,
    /// /etc/distkv/distkv.cfg, /etc/distkv.cfg.
    #[arg(short = 'c', long = "cfg", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a configuration value: `-C server.bind_default.port=27590`;
    /// without `=VALUE` the key is removed.
    #[arg(short = 'C', long = "conf", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Server(server::ServerArgs),
    /// Load-test a running node.
    Bench(bench::BenchArgs),
    /// Talk to a DistKV server.
    Client(client::ClientArgs),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = Config::default();
    match &cli.config {
        Some(f) if f.as_os_str() == "/dev/null" => {}
        Some(f) => cfg.merge_file(f)?,
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(h) = &home {
                for rel in ["config/distkv.cfg", ".config/distkv.cfg", ".distkv.cfg"] {
                    candidates.push(h.join(rel));
                }
            }
            candidates.push("/etc/distkv/distkv.cfg".into());
            candidates.push("/etc/distkv.cfg".into());
            if let Some(f) = candidates.iter().find(|f| f.is_file()) {
                cfg.merge_file(f)?;
            }
        }
    }
    for s in &cli.set {
        cfg.set_override(s)?;
    }
    Ok(cfg)
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match 1 + verbose as i32 - quiet as i32 {
        i32::MIN..=0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    };
    // The embedded broker narrates every connection at INFO and every
    // dropped peer connection at ERROR; our bus logs links itself. Keep
    // rumqtt quiet unless asked for (RUST_LOG).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},rumqttd=off,rumqttc=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server tells what it does (INFO) by default; tools only warn.
    let base = matches!(cli.cmd, Command::Server(_)) as u8;
    init_logging(cli.verbose + base, cli.quiet);
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The load generator runs on one thread, like redis-benchmark, leaving
    // the other cores to the node it measures.
    let rt = match &cli.cmd {
        Command::Bench(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Server(a) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            match server::threads(a, &cfg) {
                Ok(0) => {}
                Ok(n) => {
                    b.worker_threads(n);
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
            b.enable_all().build()
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.cmd {
            Command::Server(a) => server::run(a, cfg).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Client(a) => client::run(a, cfg).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
