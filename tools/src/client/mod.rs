//! `distkv client`: talk to a running node, as DistKV's `distkv client` does.
//!
//! Every subcommand runs on a [`Session`]: one connection, opened like the
//! Python client opens it (greeting, flow control, then a watch on the
//! dynamic-config subtree, so that the first request of the command carries
//! `seq` 2 as in DistKV's `-m` output), the `-m` flag and buffered stdout.
//! Errors go to stderr through `main`: server errors as `ServerError: …`,
//! a missing entry as `No data at PATH`, both with exit status 1; usage
//! errors are clap's (exit status 2).

mod acl;
mod attrs;
mod auth;
mod data;
mod error;
mod get;
mod internal;
mod log;
mod login;
mod monitor;
pub(crate) mod output;
mod typ;

use std::mem::ManuallyDrop;

use anyhow::{anyhow, Context};
use clap::{ArgAction, Args, Subcommand};
use distkv_model::Path;
use distkv_node::addr::HostPort;
use distkv_node::auth::Credentials;
use distkv_node::client::{Client, ClientError, ConnectOptions, Stream, StreamItem, TreeOptions};
use distkv_node::config::Config;
use distkv_node::tls::Connector;

use output::Output;

/// Talk to a DistKV server.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ClientArgs {
    /// Host to use. Default: `connect.host` (localhost).
    #[arg(short = 'h', long, value_name = "HOST")]
    host: Option<String>,
    /// Port to use. Default: `connect.port` (27586).
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,
    /// Include/print metadata: whole replies, with change chains.
    #[arg(short = 'm', long)]
    metadata: bool,
    /// Log in: `METHOD KEY=VALUE…` (`KEY?` asks for the value) or
    /// `=FILE` (YAML with `type: METHOD` and the parameters). Default:
    /// `connect.auth`.
    #[arg(short = 'a', long, value_name = "AUTH")]
    auth: Option<String>,
    #[command(flatten)]
    help: LongHelp,
    #[command(subcommand)]
    cmd: ClientCommand,
}

/// `--help` without `-h`, for commands whose `-h` is the host (`client`,
/// as in DistKV, and `bench`).
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct LongHelp {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// `-h`/`--help` for the commands below `client`: clap's
/// `disable_help_flag` on `client` applies to all of them, and each gives
/// the flag back, as `-h` is the host only on `client` itself.
#[derive(Debug, Default, Args)]
pub(crate) struct Help {
    /// Print help.
    #[arg(short = 'h', long, action = ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Manage data.
    ///
    /// Without a command, prints the value at PATH. Run
    /// `distkv client data --help` for the commands.
    Data(data::DataArgs),
    /// Control internal state.
    Internal(internal::InternalArgs),
    /// Manage authorization: login methods and users.
    Auth(auth::AuthArgs),
    /// Manage ACLs.
    Acl(acl::AclArgs),
    /// Manage logging (files on the server).
    Log(log::LogArgs),
    /// Manage types and type matches.
    Type(typ::TypeArgs),
    /// Manage codecs and converters.
    Codec(typ::CodecArgs),
    /// Manage error records in DistKV.
    Error(error::ErrorArgs),
}

/// Runs `distkv client …`; `debug` is DistKV's verbosity (1, plus `-v`,
/// minus `-q`, at least 0); `short_keys` is the global `-D` (a 16-bit key
/// exchange, as DistKV's debug speed-up).
pub async fn run(args: ClientArgs, cfg: Config, debug: u8, short_keys: bool) -> anyhow::Result<()> {
    // Check the whole command line before connecting.
    let cmd = match args.cmd {
        ClientCommand::Data(d) => Checked::Data(d.check().unwrap_or_else(|e| e.exit())),
        ClientCommand::Internal(i) => Checked::Internal(i),
        ClientCommand::Log(l) => Checked::Log(l),
        ClientCommand::Auth(a) => Checked::Auth(a),
        ClientCommand::Acl(a) => Checked::Acl(a.check().unwrap_or_else(|e| e.exit())),
        ClientCommand::Type(t) => Checked::Type(t),
        ClientCommand::Codec(c) => Checked::Codec(c),
        ClientCommand::Error(e) => Checked::Error(e),
    };
    let creds = login::from_args_or_config(args.auth.as_deref(), &cfg)?;
    let opts = SessionOptions {
        host: args.host,
        port: args.port,
        meta: args.metadata,
        debug,
        creds,
        short_keys,
    };
    let mut s = Session::open(opts, &cfg).await?;
    let res = match cmd {
        Checked::Data(d) => data::run(&mut s, d).await,
        Checked::Internal(i) => internal::run(&mut s, i).await,
        Checked::Log(l) => log::run(&mut s, l).await,
        Checked::Auth(a) => auth::run(&mut s, a).await,
        Checked::Acl(a) => acl::run(&mut s, a).await,
        Checked::Type(t) => typ::run_type(&mut s, t).await,
        Checked::Codec(c) => typ::run_codec(&mut s, c).await,
        Checked::Error(e) => error::run(&mut s, e).await,
    };
    s.out.flush()?;
    if let Some(u) = res
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<clap::Error>())
    {
        // A usage error found once connected: exit status 2, as clap's.
        u.exit();
    }
    res
}

/// A usage error found while running (DistKV's `click.UsageError`):
/// printed as clap prints its own, with exit status 2.
pub(crate) fn usage(msg: &str) -> anyhow::Error {
    anyhow::Error::new(clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{msg}\n"),
    ))
}

enum Checked {
    Data(data::DataCommand),
    Internal(internal::InternalArgs),
    Log(log::LogArgs),
    Auth(auth::AuthArgs),
    Acl(acl::AclCommand),
    Type(typ::TypeArgs),
    Codec(typ::CodecArgs),
    Error(error::ErrorArgs),
}

/// The key length DistKV's `-D` asks for.
const DEBUG_KEY_LENGTH: u32 = 16;

/// How to open a [`Session`]: the command line's global options.
struct SessionOptions {
    host: Option<String>,
    port: Option<u16>,
    meta: bool,
    debug: u8,
    /// Log in with these if the node requires a login.
    creds: Option<Credentials>,
    /// `-D`: DistKV's debug key length (16) for the key exchange.
    short_keys: bool,
}

/// A connected client and what every command needs besides.
pub(crate) struct Session {
    pub client: Client,
    /// `-m`: print whole replies, with change chains.
    pub meta: bool,
    /// DistKV's verbosity: 1 by default, plus `-v`, minus `-q`.
    pub debug: u8,
    pub out: Output,
    /// The dynamic-config watch, open for the whole command. Never dropped:
    /// dropping it would send `stop`, and the server's extra reply would
    /// advance its tock, which Python's client (it just hangs up) does not.
    _config: ManuallyDrop<Option<Stream>>,
}

impl Session {
    async fn open(o: SessionOptions, cfg: &Config) -> anyhow::Result<Session> {
        let SessionOptions {
            host,
            port,
            meta,
            debug,
            creds,
            short_keys,
        } = o;
        let settings = cfg.connect()?;
        let keys = cfg.keys()?;
        // `::1` and `[::1]` alike; printed as `[::1]:port`.
        let addr = HostPort::new(
            &host.unwrap_or(settings.host),
            port.unwrap_or(settings.port),
        );
        let tls = match &settings.tls {
            Some(t) => {
                let config = t.config().context("connect.ssl")?;
                Some(Connector::new(config, &addr.host).context("connect.ssl")?)
            }
            None => None,
        };
        let opts = ConnectOptions {
            timeout: settings.init_timeout,
            // Python asks for its own `server.buffer`.
            qlen: keys.server.buffer,
            tls,
            ..ConnectOptions::default()
        };
        let client = Client::connect(addr.as_tuple(), opts)
            .await
            .map_err(|e| match e {
                ClientError::Connect(io) => anyhow!("cannot connect to {addr}: {io}"),
                ClientError::Refused(why) => anyhow!("the node at {addr} refused: {why}"),
                e => anyhow!("cannot connect to {addr}: {e}"),
            })?;
        if short_keys {
            client.set_key_length(DEBUG_KEY_LENGTH);
        }
        // As DistKV's client: log in before anything else.
        client.log_in(creds.as_ref()).await.map_err(login::error)?;
        let config = watch_config(&client, &keys.config.prefix).await;
        Ok(Session {
            client,
            meta,
            debug,
            out: Output::stdout(),
            _config: ManuallyDrop::new(config),
        })
    }

    /// The change-chain length to ask for: 3 with `-m`, else none.
    pub fn nchain(&self) -> u64 {
        if self.meta {
            3
        } else {
            0
        }
    }
}

/// Starts watching the dynamic-config subtree and reads its current state,
/// as the Python client does on every connection (it is request `seq` 1).
/// Failures are ignored, as there.
async fn watch_config(client: &Client, prefix: &str) -> Option<Stream> {
    let prefix = Path::parse(prefix).ok()?;
    let opts = TreeOptions {
        nchain: 3,
        fetch: true,
        ..TreeOptions::default()
    };
    let mut stream = client.watch(&prefix, &opts).await.ok()?;
    loop {
        match stream.next().await {
            Ok(Some(StreamItem::UpToDate(_))) => return Some(stream),
            Ok(Some(StreamItem::Data(_))) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Parses a command-line path (clap value parser).
pub(crate) fn parse_path(s: &str) -> Result<Path, String> {
    Path::parse(s).map_err(|e| e.to_string())
}

/// A client-library error as DistKV's command line reports it.
pub(crate) fn api(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Server(text) => anyhow!("ServerError: {text}"),
        e => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cli, Command};
    use clap::Parser;

    fn client(args: &[&str]) -> Result<super::ClientArgs, clap::Error> {
        let argv = ["distkv", "client"].iter().chain(args);
        match Cli::try_parse_from(argv)?.cmd {
            Command::Client(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn h_is_the_host_and_help_stays_long() {
        let c = client(&["-h", "example.org", "-p", "1234", "-m", "internal", "state"]).unwrap();
        assert_eq!(c.host.as_deref(), Some("example.org"));
        assert_eq!(c.port, Some(1234));
        assert!(c.metadata);
        let e = client(&["--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let e = client(&["-p", "x", "internal", "state"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn below_client_h_is_help_again() {
        for args in [
            &["internal", "-h"][..],
            &["internal", "--help"],
            &["internal", "state", "-h"],
            &["internal", "kill", "-h"],
            &["log", "-h"],
            &["log", "save", "--help"],
            &["log", "stop", "-h"],
        ] {
            let e = client(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
        }
        let c = client(&["-h", "h1", "data", "-h"]).unwrap();
        let crate::client::ClientCommand::Data(d) = c.cmd else {
            panic!("not data")
        };
        let e = d.check().unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn a_bare_h_says_it_is_the_host() {
        let argv = ["distkv", "client", "-h"];
        let e = crate::explain_usage_error(Cli::try_parse_from(argv).unwrap_err());
        assert!(e.to_string().contains("`--help` prints the help"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn global_options_come_before_the_subcommand() {
        let cli =
            Cli::try_parse_from(["distkv", "-c", "/dev/null", "client", "data", ":"]).unwrap();
        assert!(cli.config.is_some());
        assert!(matches!(cli.cmd, Command::Client(_)));
    }
}
