//! `distkv`: run a node, talk to one, or load-test one.

mod bench;
mod client;
mod compare;
mod dump;
mod eval;
mod msgfile;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use distkv_node::config::Config;

/// mimalloc, tuned for a server's state (`distkv_alloc::tune`).
#[global_allocator]
static GLOBAL: distkv_alloc::MiMalloc = distkv_alloc::MiMalloc;

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
    /// Debug speed-ups: a 16-bit key exchange for password logins instead
    /// of 1024 bits (insecure; for tests).
    #[arg(short = 'D', long = "debug", action = ArgAction::Count)]
    debug: u8,
    /// Log level of one logger, `-l LOGGER=LEVEL` (repeatable): LOGGER is
    /// a tracing target, a crate or module (`distkv_node::cluster`, also
    /// written with dots), LEVEL one of DEBUG, INFO, WARNING, ERROR,
    /// CRITICAL (or trace, off).
    #[arg(short = 'l', long = "log", value_name = "LOGGER=LEVEL", value_parser = log_directive)]
    log: Vec<String>,
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
    ///
    /// The `set` test writes up to `-r` keys below `--prefix` (`bench.0`,
    /// `bench.1`, …) into the node's tree, which replicates them and keeps
    /// them in its history like any other change.
    Bench(bench::BenchArgs),
    /// Talk to a DistKV server.
    Client(client::ClientArgs),
    /// Low-level tools: config values, msgpack files, bus messages.
    Dump(dump::DumpArgs),
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
    for key in cfg.unknown_keys()? {
        tracing::warn!(%key, "unknown config key, ignored");
    }
    Ok(cfg)
}

/// `-l LOGGER=LEVEL` as a tracing filter directive `target=level`:
/// Python's level names are mapped (`WARNING` → `warn`, `CRITICAL` →
/// `error`), and dotted logger names become module paths.
fn log_directive(s: &str) -> Result<String, String> {
    let (logger, level) = s
        .split_once('=')
        .ok_or_else(|| format!("expected LOGGER=LEVEL, not {s:?}"))?;
    let lower = level.to_ascii_lowercase();
    let level = match lower.as_str() {
        "critical" | "fatal" | "error" => "error",
        "warning" | "warn" => "warn",
        l @ ("info" | "debug" | "trace" | "off") => l,
        _ => return Err(format!("unknown log level {level:?}")),
    };
    let logger = logger.trim().replace('.', "::");
    if logger.is_empty() {
        return Ok(level.to_string());
    }
    Ok(format!("{logger}={level}"))
}

fn init_logging(verbose: u8, quiet: u8, directives: &[String]) {
    let level = match 1 + verbose as i32 - quiet as i32 {
        i32::MIN..=0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    };
    // The embedded broker narrates every connection at INFO and every
    // dropped peer connection at ERROR; our bus logs links itself. Keep
    // rumqtt quiet unless asked for (RUST_LOG).
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},rumqttd=off,rumqttc=warn"))
    });
    for d in directives {
        // Checked by `log_directive`; a directive that still does not parse
        // is left out rather than aborting the command.
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| explain_usage_error(e).exit());
    // A server tells what it does (INFO) by default; tools only warn.
    let base = matches!(cli.cmd, Command::Server(_)) as u8;
    if matches!(cli.cmd, Command::Server(_)) {
        distkv_alloc::tune();
    }
    init_logging(cli.verbose + base, cli.quiet, &cli.log);
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
            Command::Bench(a) => bench::run(a, cfg).await,
            Command::Client(a) => {
                // DistKV's `obj.debug`: max(0, 1 + verbose - quiet).
                let debug = (1 + i32::from(cli.verbose) - i32::from(cli.quiet)).clamp(0, 255);
                client::run(a, cfg, debug as u8, cli.debug > 0).await
            }
            Command::Dump(a) => {
                let debug = (1 + i32::from(cli.verbose) - i32::from(cli.quiet)).clamp(0, 255);
                dump::run(a, cfg, debug as u8).await
            }
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// Adds a tip to clap's error where its own message misleads: `-h` is the
/// host in `client` and `bench` (as in DistKV's client), so a bare `-h`
/// asks for a host name instead of printing the help.
fn explain_usage_error(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let host = matches!(
        e.get(ContextKind::InvalidArg),
        Some(ContextValue::String(arg)) if arg.starts_with("--host")
    );
    if e.kind() == ErrorKind::InvalidValue && host {
        let tip = "`-h` is the host here, as in DistKV; `--help` prints the help";
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

/// An error and its causes on one line, `outer: inner: …`, each said once:
/// many errors already quote their source in their own message.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_error_quoting_its_source_is_not_repeated() {
        /// As the library errors do it: the message quotes the source.
        #[derive(Debug)]
        struct Listen {
            addr: &'static str,
            source: std::io::Error,
        }
        impl std::fmt::Display for Listen {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot listen on {}: {}", self.addr, self.source)
            }
        }
        impl std::error::Error for Listen {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(Listen {
            addr: "h:1",
            source: io,
        })
        .context("cannot start the bus");
        assert_eq!(
            error_text(&e),
            "cannot start the bus: cannot listen on h:1: Address already in use"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
