//! `distkv client auth …`: login methods and users, as DistKV 0.63.3's
//! `auth` command group.
//!
//! The method a command works on is `-m METHOD` (`-m -`: none), else the
//! one in force, else the only one configured; anything else is the usage
//! error `You need to set the auth method`. DistKV asks `auth_info` for the
//! method in force, which never finds it (docs/compat.md, "Auth"); we send
//! that request too, as DistKV does, and then take the method from the
//! greeting. Users are written with `auth_set`, per-user parameters
//! (`user param`) directly in the meta tree at
//! `(None, "auth", METHOD, "user", IDENT, TYPE)`.

use clap::{Args, Subcommand};
use distkv_model::Value;
use distkv_node::auth::{Credentials, Purpose};
use distkv_node::client::StreamItem;

use super::login::{error as login_error, gen_auth, split_arg};
use super::output::{py_str, take};
use super::{api, usage, Help, Session};

/// Manage authorization.
#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    help: Help,
    /// Affect/use this auth method (`-`: none).
    #[arg(short = 'm', long, value_name = "METHOD")]
    method: Option<String>,
    #[command(subcommand)]
    cmd: AuthCommand,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// List known auth methods.
    List(Plain),
    /// Set up authorization: make the method the one in force.
    Init(InitArgs),
    /// Manage users.
    User(UserArgs),
}

#[derive(Debug, Args)]
struct Plain {
    #[command(flatten)]
    help: Help,
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    help: Help,
    /// Switch to a different auth method.
    #[arg(short = 's', long)]
    switch: bool,
}

#[derive(Debug, Args)]
struct UserArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List all users (raw data).
    List(UserListArgs),
    /// Retrieve a user (processed).
    Get(IdentArgs),
    /// Add a user: `KEY=VALUE…` (`KEY?` asks for the value).
    Add(AddArgs),
    /// Change a user.
    Mod(ModArgs),
    /// Set user parameters for auth, conversion, etc. (`KEY` `-` deletes).
    Param(ParamArgs),
    /// Test user authorization.
    Auth(UserAuthArgs),
}

#[derive(Debug, Args)]
struct UserListArgs {
    #[command(flatten)]
    help: Help,
    /// Print complete results. Default: just the names.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct IdentArgs {
    #[command(flatten)]
    help: Help,
    ident: String,
}

#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    help: Help,
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct ModArgs {
    #[command(flatten)]
    help: Help,
    ident: String,
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct ParamArgs {
    #[command(flatten)]
    help: Help,
    /// New: ignore previous content.
    #[arg(short = 'n', long)]
    new: bool,
    ident: String,
    #[arg(value_name = "TYPE")]
    typ: String,
    key: String,
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct UserAuthArgs {
    #[command(flatten)]
    help: Help,
    /// Auth params: `=FILE` or `METHOD KEY=VALUE…`.
    #[arg(short = 'a', long, default_value = "root")]
    auth: String,
}

/// The method the command works on (`None`: none), as DistKV settles it.
struct Method {
    chosen: Option<String>,
    /// The method in force when we connected.
    current: Option<String>,
}

pub async fn run(s: &mut Session, args: AuthArgs) -> anyhow::Result<()> {
    let m = method(s, args.method).await?;
    match args.cmd {
        AuthCommand::List(_) => list(s, &m).await,
        AuthCommand::Init(a) => init(s, &m, a.switch).await,
        AuthCommand::User(u) => {
            let cmd = u.cmd;
            if let UserCommand::Auth(a) = cmd {
                let creds = gen_auth(&a.auth, Purpose::Login)?;
                s.client.authenticate(&creds).await.map_err(login_error)?;
                if s.debug > 0 {
                    s.out.write(b"OK.\n")?;
                }
                return Ok(());
            }
            let method = one(&m)?;
            match cmd {
                UserCommand::List(a) => user_list(s, method, a.verbose).await,
                UserCommand::Get(a) => user_get(s, method, &a.ident).await,
                UserCommand::Add(a) => add_mod(s, method, &a.args, None).await,
                UserCommand::Mod(a) => add_mod(s, method, &a.args, Some(&a.ident)).await,
                UserCommand::Param(a) => param(s, method, a).await,
                UserCommand::Auth(_) => unreachable!("handled above"),
            }
        }
    }
}

/// `-m`, else the method in force, else the only one configured.
async fn method(s: &mut Session, arg: Option<String>) -> anyhow::Result<Method> {
    // DistKV's own question; its answer is always empty (see the module
    // docs), so the greeting says what is in force.
    let info = s
        .client
        .request("auth_info", Vec::new())
        .await
        .map_err(api)?;
    let current = info
        .get("value")
        .and_then(|v| v.get("current"))
        .or_else(|| s.client.greeting().auth.first())
        .filter(|m| m.truthy())
        .map(py_str);
    let chosen = match arg.as_deref() {
        Some("-") => None,
        Some(m) => Some(m.to_string()),
        None => match &current {
            Some(c) => Some(c.clone()),
            None => {
                let all = configured(s).await?;
                match <[String; 1]>::try_from(all) {
                    Ok([only]) => Some(only),
                    Err(_) => return Err(usage("You need to set the auth method")),
                }
            }
        },
    };
    Ok(Method { chosen, current })
}

/// The chosen method, which a user command needs.
fn one(m: &Method) -> anyhow::Result<&str> {
    m.chosen
        .as_deref()
        .ok_or_else(|| usage("You need to set the auth method"))
}

/// The configured methods: the children of `(None, "auth")`.
async fn configured(s: &mut Session) -> anyhow::Result<Vec<String>> {
    let fields = vec![
        ("path", Value::Array(vec![Value::str("auth")])),
        ("with_data", Value::Bool(false)),
        ("empty", Value::Bool(true)),
        ("nchain", Value::Int(0)),
    ];
    let res = s
        .client
        .request("enum_internal", fields)
        .await
        .map_err(api)?;
    Ok(res
        .get("result")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .map(py_str)
        .collect())
}

async fn list(s: &mut Session, m: &Method) -> anyhow::Result<()> {
    let names = match &m.chosen {
        Some(c) => vec![c.clone()],
        None => configured(s).await?,
    };
    for n in names {
        s.out.write(format!("{n}\n").as_bytes())?;
    }
    Ok(())
}

async fn init(s: &mut Session, m: &Method, switch: bool) -> anyhow::Result<()> {
    if m.current.is_some() && !switch {
        return Err(usage("Authentication is already set up"));
    }
    s.client
        .set_auth_typ(m.chosen.as_deref())
        .await
        .map_err(api)?;
    let text = match &m.chosen {
        Some(c) => format!("Authorization switched to {c}\n"),
        None => "Authorization turned off.\n".into(),
    };
    s.out.write(text.as_bytes())?;
    Ok(())
}

async fn user_list(s: &mut Session, method: &str, verbose: bool) -> anyhow::Result<()> {
    let mut stream = s.client.auth_list(method, s.nchain()).await.map_err(api)?;
    while let Some(item) = stream.next().await.map_err(api)? {
        let StreamItem::Data(mut r) = item else {
            continue;
        };
        if s.meta || verbose {
            if s.debug < 2 {
                take(&mut r, "seq");
                take(&mut r, "tock");
            }
            s.out.yprint(&r)?;
        } else {
            let ident = r.get("ident").map(py_str).unwrap_or_default();
            s.out.write(format!("{ident}\n").as_bytes())?;
        }
    }
    Ok(())
}

/// The user `ident` as DistKV's user maker reads it back (`recv`), with
/// its chain.
async fn fetch_user(
    s: &mut Session,
    method: &str,
    ident: &str,
) -> anyhow::Result<(Credentials, Value)> {
    let res = s.client.auth_get(method, ident, 2).await.map_err(api)?;
    let params = match method {
        "root" => Vec::new(),
        _ => vec![("name".to_string(), Value::str(ident))],
    };
    let user = Credentials::new(method, params, Purpose::Modify).map_err(login_error)?;
    Ok((user, res.get("chain").cloned().unwrap_or(Value::Nil)))
}

async fn user_get(s: &mut Session, method: &str, ident: &str) -> anyhow::Result<()> {
    let (user, _) = fetch_user(s, method, ident).await?;
    s.out.yprint(&user.export())?;
    Ok(())
}

/// `user add` (`modify: None`) and `user mod IDENT`: the old record's
/// exported data, then the arguments; a changed ident is a new user.
async fn add_mod(
    s: &mut Session,
    method: &str,
    args: &[String],
    modify: Option<&str>,
) -> anyhow::Result<()> {
    let (mut params, old_chain) = match modify {
        Some(ident) => {
            let (old, chain) = fetch_user(s, method, ident).await?;
            let params = match old.export() {
                Value::Map(pairs) => pairs.into_iter().map(|(k, v)| (py_str(&k), v)).collect(),
                _ => Vec::new(),
            };
            (params, chain)
        }
        None => (Vec::new(), Value::Nil),
    };
    for a in args {
        split_arg(a, &mut params)?;
    }
    let purpose = match modify {
        Some(_) => Purpose::Modify,
        None => Purpose::Create,
    };
    let user = Credentials::new(method, params, purpose).map_err(login_error)?;
    let ident = user.ident();
    let chain = match modify {
        Some(m) if m == ident => old_chain,
        _ => Value::Nil,
    };
    let mut res = s.client.auth_set(&user, chain).await.map_err(login_error)?;
    if s.meta {
        if let Value::Map(pairs) = &mut res {
            pairs.push((Value::str("ident"), Value::str(&ident)));
        }
        s.out.yprint(&res)?;
    } else {
        s.out.write(format!("{ident}\n").as_bytes())?;
    }
    Ok(())
}

async fn param(s: &mut Session, method: &str, a: ParamArgs) -> anyhow::Result<()> {
    let path = Value::Array(
        ["auth", method, "user", &a.ident, &a.typ]
            .iter()
            .map(|e| Value::str(e))
            .collect(),
    );
    let fields = vec![("path", path.clone()), ("nchain", Value::Int(3))];
    let old = s
        .client
        .request("get_internal", fields)
        .await
        .map_err(api)?;
    let (mut kw, chain) = match (a.new, old.get("value")) {
        (false, Some(Value::Map(pairs))) => (
            pairs.iter().map(|(k, v)| (py_str(k), v.clone())).collect(),
            old.get("chain").cloned().unwrap_or(Value::Nil),
        ),
        _ => (Vec::new(), Value::Nil),
    };
    let res = if a.key == "-" {
        if !a.args.is_empty() {
            return Err(usage("You can't set params when deleting"));
        }
        let fields = vec![("path", path), ("chain", chain)];
        s.client.request("delete_internal", fields).await
    } else {
        set_kw(&mut kw, "key", Value::str(&a.key));
        let mut extra = Vec::new();
        for arg in &a.args {
            split_arg(arg, &mut extra)?;
        }
        for (k, v) in extra {
            set_kw(&mut kw, &k, v);
        }
        let value = Value::Map(kw.into_iter().map(|(k, v)| (Value::str(&k), v)).collect());
        let fields = vec![("path", path), ("chain", chain), ("value", value)];
        s.client.request("set_internal", fields).await
    }
    .map_err(api)?;
    if s.meta {
        s.out.yprint(&res)?;
    } else {
        let line = format!("{} {} {}\n", a.ident, a.typ, a.key);
        s.out.write(line.as_bytes())?;
    }
    Ok(())
}

/// `kw[key] = v`, keeping the key's place if it is there.
fn set_kw(kw: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match kw.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => kw.push((key.to_string(), v)),
    }
}
