//! Users and login, as DistKV 0.63.3 does them (docs/compat.md, "Auth").
//!
//! Users live in the meta tree, and get there through the commit path like
//! any other data, so they replicate and persist:
//!
//! * `(None, "auth")` = `{current: METHOD}`: the login method in force
//!   (absent: nobody needs to log in);
//! * `(None, "auth", METHOD, "user", IDENT)` = the user's record: `{}` for
//!   `root` (ident `*`) and `_test` (ident = name); `{password: DIGEST}`
//!   for `password`, the SHA-256 digest of the password, never the
//!   password itself.
//!
//! A connection is told in its greeting whether it must log in; it must
//! if a method was current when it connected. Until then only `auth` and
//! `diffie_hellman` are served. A password never travels in the clear: it
//! is sealed under the key the connection agreed by Diffie-Hellman (once
//! per connection), the node opens it, keeps only the digest and compares
//! digests in constant time. Nothing here logs a request's fields.
//!
//! Every built-in user is "super-root" in DistKV: once logged in (or when
//! nobody needs to), a connection may read and write users and switch the
//! method. A user linked to an ACL is bound to it at login; such a
//! connection may not (docs/compat.md, "ACLs").

use std::sync::{Arc, Mutex};

use distkv_model::{Path, SharedStr, Value};

use super::handlers::{self, int_field, View};
use super::reply::{put, CmdError, CmdResult, Fields};
use super::Server;
use crate::login::{digests_match, KeyExchange, SessionKey};
use crate::state::acl::Access;

/// The methods this node knows.
const METHODS: [&str; 3] = ["root", "password", "_test"];

/// DistKV's default key length for `diffie_hellman`.
const DEFAULT_DH_LENGTH: i64 = 1024;

/// Where a connection's Diffie-Hellman exchange is.
#[derive(Debug, Default)]
enum Dh {
    #[default]
    None,
    /// Computing (off the reactor).
    Pending,
    Ready(SessionKey),
}

/// A connection's login state.
#[derive(Debug)]
pub(super) struct Login {
    /// Whether requests other than `auth`/`diffie_hellman` are served:
    /// logged in, or no method was current at connection time.
    pub(super) logged_in: bool,
    dh: Arc<Mutex<Dh>>,
}

impl Login {
    /// The state of a new connection: it must log in if a method is
    /// current now.
    pub(super) fn new(server: &Server) -> Login {
        Login {
            logged_in: current_method(server).is_none(),
            dh: Arc::default(),
        }
    }

    /// The password digest a request's `password` field carries, sealed
    /// under this connection's Diffie-Hellman key (`auth`, `auth_set`).
    fn sealed_password(&self, msg: &Value) -> CmdResult<Vec<u8>> {
        let sealed = match msg.get("password") {
            Some(Value::Bin(b)) => b.clone(),
            _ => return Err(CmdError::Invalid("field 'password' must be bytes".into())),
        };
        let key: SessionKey = match &*self.dh.lock().unwrap_or_else(|e| e.into_inner()) {
            Dh::Ready(k) => k.clone(),
            _ => {
                return Err(py_err(
                    "RuntimeError",
                    &[Value::str("The client has not executed DH key exchange")],
                ))
            }
        };
        key.open(&sealed).map_err(|_| {
            py_err(
                "CryptoError",
                &[Value::str(
                    "Decryption failed. Ciphertext failed verification",
                )],
            )
        })
    }
}

/// A DistKV-worded error: `Class(arg, …)` with the arguments' Python
/// reprs.
pub(super) fn py_err(class: &str, args: &[Value]) -> CmdError {
    CmdError::Python(crate::commit::Denied::python(class, args).0)
}

/// DistKV's error for a request before login.
pub(super) fn no_auth() -> CmdError {
    CmdError::Python("NoAuthError()".into())
}

fn auth_path(rest: &[&str]) -> Path {
    let mut v = vec![Value::Nil, Value::str("auth")];
    v.extend(rest.iter().map(|s| Value::str(s)));
    Path::new(v)
}

/// The current login method, if any.
pub(super) fn current_method(server: &Server) -> Option<String> {
    let st = server.state();
    let data = st.entry(&auth_path(&[]))?.data()?;
    data.get("current")?.as_str().map(str::to_string)
}

/// The greeting's `auth` field: `[current or None, other methods…]`, when
/// `(None, "auth")` exists.
pub(super) fn greeting_field(server: &Server) -> Option<Value> {
    let st = server.state();
    let e = st.entry(&auth_path(&[]))?;
    let mut methods: Vec<Value> = e.children().map(|(k, _)| k.clone()).collect();
    let current = e
        .data()
        .and_then(|d| d.get("current"))
        .filter(|c| methods.contains(c))
        .cloned();
    let first = match current {
        Some(c) => {
            methods.retain(|m| *m != c);
            c
        }
        None => Value::Nil,
    };
    methods.insert(0, first);
    Some(Value::Array(methods))
}

fn str_field<'a>(msg: &'a Value, key: &str) -> CmdResult<&'a str> {
    msg.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CmdError::Invalid(format!("field '{key}' must be a string")))
}

fn method_field(msg: &Value) -> CmdResult<&str> {
    let typ = str_field(msg, "typ")?;
    if !METHODS.contains(&typ) {
        return Err(py_err(
            "ModuleNotFoundError",
            &[Value::str(&format!("No module named 'distkv.auth.{typ}'"))],
        ));
    }
    Ok(typ)
}

fn kind_field(msg: &Value) -> CmdResult<&str> {
    match msg.get("kind") {
        None | Some(Value::Nil) => Ok("user"),
        Some(_) => str_field(msg, "kind"),
    }
}

/// How many Diffie-Hellman exchanges of this process compute at once.
pub(super) static CRYPTO_LIMIT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// `diffie_hellman` `{pubkey, length}`: the work to run off the reactor
/// (a 2048-bit exponentiation), or DistKV's error for a second call.
pub(super) fn diffie_hellman(
    login: &Login,
    msg: &Value,
) -> CmdResult<impl FnOnce() -> CmdResult<Fields> + Send + 'static> {
    let length = int_field(msg, "length", DEFAULT_DH_LENGTH)?;
    let peer = match msg.get("pubkey") {
        Some(Value::Bin(b)) => b.clone(),
        _ => return Err(CmdError::Invalid("field 'pubkey' must be bytes".into())),
    };
    {
        let mut dh = login.dh.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*dh, Dh::None) {
            return Err(py_err("RuntimeError", &[Value::str("Can't call dh twice")]));
        }
        *dh = Dh::Pending;
    }
    let slot = login.dh.clone();
    Ok(move || {
        let done = u64::try_from(length)
            .map_err(|_| crate::login::LoginCryptoError::KeyLength(0))
            .and_then(KeyExchange::new)
            .and_then(|kx| Ok((kx.session_key(&peer)?, kx)));
        let mut dh = slot.lock().unwrap_or_else(|e| e.into_inner());
        match done {
            Ok((key, kx)) => {
                *dh = Dh::Ready(key);
                Ok(vec![("pubkey", Value::Bin(kx.public_key().into()))])
            }
            Err(e) => {
                // As in DistKV, a failed exchange may be tried again.
                *dh = Dh::None;
                Err(py_err("ValueError", &[Value::str(&e.to_string())]))
            }
        }
    })
}

/// The stored record of a user, if there is one.
fn user_record(server: &Server, typ: &str, kind: &str, ident: &str) -> Option<Value> {
    let st = server.state();
    st.entry(&auth_path(&[typ, kind, ident]))?.data_cloned()
}

/// `auth` `{typ, ident, …}`: checks the login and, the first time, lets
/// the connection in and returns what the user may do. A logged-in
/// connection may test a login; nothing changes for it.
pub(super) fn auth(server: &Server, login: &mut Login, msg: &Value) -> CmdResult<Option<Bound>> {
    let typ = str_field(msg, "typ")?;
    // DistKV's `root`: the users of a sub-tree, and a connection confined
    // to it. Not supported; refused rather than ignored, as ignoring it
    // would leave unconfined a client that asked to be confined.
    if let Some(root) = msg.get("root") {
        if !matches!(root, Value::Nil)
            && distkv_model::event::path_from_value(root).is_none_or(|p| !p.is_empty())
        {
            return Err(py_err(
                "NotImplementedError",
                &[Value::str(
                    "logging in to a sub-tree's users ('root') is not supported",
                )],
            ));
        }
    }
    if !login.logged_in {
        let current = current_method(server);
        if current.as_deref() != Some(typ) {
            let current = current.as_deref().map_or(Value::Nil, Value::str);
            return Err(py_err(
                "RuntimeError",
                &[Value::str("Wrong auth type"), current],
            ));
        }
    }
    let typ = method_field(msg)?;
    let ident = str_field(msg, "ident")?;
    let record = user_record(server, typ, "user", ident)
        .ok_or_else(|| CmdError::NotFound(ident.to_string()))?;
    if typ == "password" {
        let digest = login.sealed_password(msg)?;
        let stored = match record.get("password") {
            Some(Value::Bin(b)) => b.clone(),
            _ => Arc::from(&[][..]),
        };
        if !digests_match(&digest, &stored) {
            return Err(py_err(
                "AuthFailedError",
                &[
                    Value::str("Password hashes do not match"),
                    Value::str(ident),
                ],
            ));
        }
    }
    if login.logged_in {
        // A connection already in tests a login: nothing changes for it.
        return Ok(None);
    }
    login.logged_in = true;
    Ok(Some(Bound {
        access: bound_access(server, typ, ident),
        conv: bound_conv(server, typ, ident),
    }))
}

/// What a login binds a connection to.
#[derive(Debug, Clone)]
pub(super) struct Bound {
    /// The user's ACL.
    pub access: Access,
    /// The user's converter group.
    pub conv: Option<SharedStr>,
}

/// The converter group a user is bound to, read at login from its `conv`
/// link `(None, "auth", METHOD, "user", IDENT, "conv")` = `{key: GROUP}`.
fn bound_conv(server: &Server, typ: &str, ident: &str) -> Option<SharedStr> {
    let st = server.state();
    let link = st.entry(&auth_path(&[typ, "user", ident, "conv"]))?;
    link.data()?.get("key")?.as_str().map(SharedStr::from)
}

/// The ACL a user is bound to, read at login from its `acl` link
/// `(None, "auth", METHOD, "user", IDENT, "acl")` = `{key: NAME}`: none
/// without a link or with `key: "*"`.
fn bound_access(server: &Server, typ: &str, ident: &str) -> Access {
    let st = server.state();
    let link = st.entry(&auth_path(&[typ, "user", ident, "acl"]));
    match link.and_then(|e| e.data()?.get("key")?.as_str()) {
        None | Some("*") => Access::Full,
        Some(name) => Access::Acl(name.into()),
    }
}

/// Writes `value` at `(None, "auth", rest…)` through the commit path, with
/// the request's `chain` (and `nchain`) semantics of `set_value`.
fn write(server: &Server, msg: &Value, rest: &[&str], value: Value) -> CmdResult<Fields> {
    let mut path = vec![Value::str("auth")];
    path.extend(rest.iter().map(|s| Value::str(s)));
    let mut req = vec![
        (Value::str("path"), Value::Array(path)),
        (Value::str("value"), value.clone()),
    ];
    for k in ["chain", "nchain"] {
        if let Some(v) = msg.get(k) {
            req.push((Value::str(k), v.clone()));
        }
    }
    let mut m = handlers::set_value(
        server,
        &View::default(),
        &Value::Map(req),
        Some(value),
        true,
    )?;
    // The old record may hold a password digest: never sent back.
    m.retain(|(k, _)| *k != "prev");
    Ok(m)
}

/// `auth_set` `{typ, kind, ident, chain, …}`: creates or replaces a user.
/// A `password` arrives sealed under the connection's key; only its
/// digest is stored.
pub(super) fn auth_set(server: &Server, login: &Login, msg: &Value) -> CmdResult<Fields> {
    let typ = method_field(msg)?;
    let kind = kind_field(msg)?;
    if kind != "user" {
        return Err(py_err(
            "NotImplementedError",
            &[Value::str("This module only handles users")],
        ));
    }
    let (ident, record) = match typ {
        "root" => {
            if msg
                .get("data")
                .and_then(Value::as_map)
                .is_some_and(|d| !d.is_empty())
            {
                return Err(py_err(
                    "ValidationError",
                    &[Value::str("Additional properties are not allowed")],
                ));
            }
            ("*".to_string(), Value::Map(Vec::new()))
        }
        "password" => {
            let ident = str_field(msg, "ident")?.to_string();
            let digest = login.sealed_password(msg)?;
            (ident, Value::map([("password", Value::Bin(digest.into()))]))
        }
        _ => {
            let ident = str_field(msg, "ident")?;
            return set_test_user(server, msg, ident);
        }
    };
    write(server, msg, &[typ, kind, &ident], record)
}

/// Creates (or replaces) the `_test` user `name`, whose record is empty:
/// from `auth_set` with the name as `ident`, or at the end of DistKV's
/// chatty exchange (the client's `HasName`).
pub(super) fn set_test_user(server: &Server, msg: &Value, name: &str) -> CmdResult<Fields> {
    if !valid_name(name) {
        return Err(py_err(
            "ValidationError",
            &[Value::str(&format!(
                "{name:?} does not match '^[a-zA-Z][a-zA-Z0-9_]*$'"
            ))],
        ));
    }
    write(
        server,
        msg,
        &["_test", "user", name],
        Value::Map(Vec::new()),
    )
}

/// DistKV's rule for user names (`password`, `_test`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `auth_get` `{typ, kind, ident, nchain}`: the user's public data (none
/// for the built-in methods), with its chain.
pub(super) fn auth_get(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let typ = method_field(msg)?;
    let kind = kind_field(msg)?;
    let ident = str_field(msg, "ident")?;
    let nchain = int_field(msg, "nchain", 0)?;
    let st = server.state();
    let e = st
        .entry(&auth_path(&[typ, kind, ident]))
        .filter(|e| e.data().is_some())
        .ok_or_else(|| CmdError::NotFound(ident.to_string()))?;
    let mut m = Vec::new();
    if nchain != 0 {
        put(
            &mut m,
            "chain",
            e.chain().map_or(Value::Nil, |c| c.to_value(nchain)),
        );
    }
    Ok(m)
}

/// `auth_list` `{typ, kind, ident?, nchain}`: `{typ, kind, ident, chain?}`
/// for the user `ident`, or for every user of the method.
pub(super) fn auth_list(server: &Server, msg: &Value) -> CmdResult<Vec<Fields>> {
    let typ = method_field(msg)?;
    let kind = kind_field(msg)?;
    let nchain = int_field(msg, "nchain", 0)?;
    let st = server.state();
    let item = |ident: &Value, e: crate::state::Entry<'_>| {
        let mut m = vec![
            ("typ", Value::str(typ)),
            ("kind", Value::str(kind)),
            ("ident", ident.clone()),
        ];
        if let (true, Some(c)) = (nchain != 0, e.chain()) {
            put(&mut m, "chain", c.to_value(nchain));
        }
        m
    };
    if msg.get("ident").is_some() {
        let ident = str_field(msg, "ident")?;
        let e = st
            .entry(&auth_path(&[typ, kind, ident]))
            .ok_or_else(|| CmdError::NotFound(ident.to_string()))?;
        return Ok(vec![item(&Value::str(ident), e)]);
    }
    let users = st
        .entry(&auth_path(&[typ, kind]))
        .ok_or_else(|| CmdError::NotFound(kind.to_string()))?;
    Ok(users
        .children()
        .filter(|(_, e)| e.data().is_some())
        .map(|(k, e)| item(&k, e))
        .collect())
}

/// `set_auth_typ` `{typ}`: makes `typ` the current method (`None`: none).
/// A method without users is refused, with DistKV's text.
pub(super) fn set_auth_typ(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let typ = match msg.get("typ") {
        None | Some(Value::Nil) => None,
        Some(_) => Some(str_field(msg, "typ")?),
    };
    let mut val: Vec<(Value, Value)> = {
        let st = server.state();
        st.entry(&auth_path(&[]))
            .and_then(|e| e.data()?.as_map())
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    };
    val.retain(|(k, _)| k.as_str() != Some("current"));
    if let Some(typ) = typ {
        let has_users = {
            let st = server.state();
            st.entry(&auth_path(&[typ, "user"]))
                .is_some_and(|e| e.children().any(|(_, c)| c.data().is_some()))
        };
        if !has_users {
            return Err(py_err(
                "RuntimeError",
                &[Value::str(&format!(
                    "You didn't configure this method yet:('{typ}', {{}})"
                ))],
            ));
        }
        val.push((Value::str("current"), Value::str(typ)));
    }
    write(server, msg, &[], Value::Map(val))
}

/// `auth_info`: DistKV looks `(None, "auth")` up below the meta root, at
/// `(None, None, "auth")`, which never exists: the reply is always empty
/// (with `chain: None` if asked for). Kept so, for its CLI's `auth init`.
pub(super) fn auth_info(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let mut req = vec![(
        Value::str("path"),
        Value::Array(vec![Value::Nil, Value::str("auth")]),
    )];
    if let Some(n) = msg.get("nchain") {
        req.push((Value::str("nchain"), n.clone()));
    }
    handlers::get_value(server, &View::default(), &Value::Map(req), true)
}
