//! The client's side of DistKV's login and user management.
//!
//! A node whose greeting names a current method (`auth: [METHOD, …]`)
//! serves a connection only once it has logged in with that method
//! (docs/compat.md, "Auth"). What a client sends, as DistKV 0.63.3's
//! Python client sends it:
//!
//! * `root`: `{action: "auth", typ: "root", ident: "*", chroot: [], data: {}}`;
//! * `_test`: the same with `ident` = the user's name;
//! * `password`: first `diffie_hellman` (`{pubkey, length: 1024}`, once per
//!   connection), then `{action: "auth", typ: "password", ident: NAME,
//!   password: SEALED}`, where SEALED is the SHA-256 digest of the password
//!   sealed under the agreed key ([`crate::login`]).
//!
//! The node answers `auth` with an empty stream (start, end). A password
//! never travels in the clear, and [`Credentials`] never prints it.
//!
//! User records are written with `auth_set` (a `password` sealed the same
//! way), read with `auth_get` and listed with `auth_list`; `set_auth_typ`
//! switches the method in force. [`Credentials`] checks parameters the way
//! DistKV's JSON schemas do, with their wording.

use distkv_model::Value;

use crate::client::{Client, ClientError, Stream};
use crate::login::{
    password_digest, KeyExchange, LoginCryptoError, SessionKey, DEFAULT_KEY_LENGTH,
};

/// The login methods DistKV 0.63.3 ships (and our node serves).
pub const METHODS: [&str; 3] = ["root", "password", "_test"];

/// What a user name must look like (`password`, `_test`).
const NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9_]*$";

/// The shortest password DistKV's schema accepts.
const MIN_PASSWORD: usize = 5;

/// Why a login or a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The node requires a login and none was given: log in with the
    /// method named (Python's `ClientAuthRequiredError`).
    #[error("You need to log in using: {0}")]
    Required(String),
    /// The node requires another method (Python's `ClientAuthMethodError`;
    /// `offered` is the greeting's `auth` list).
    #[error("You cannot use '{method}' auth {offered}")]
    WrongMethod {
        /// The method the caller tried.
        method: String,
        /// The greeting's `auth` list.
        offered: Value,
    },
    /// No such method (Python's `NoAuthModuleError`).
    #[error("{0}")]
    UnknownMethod(String),
    /// The parameters do not fit the method's schema: fix them (the text
    /// is jsonschema's).
    #[error("{0}")]
    Invalid(String),
    /// The key exchange failed.
    #[error(transparent)]
    Crypto(#[from] LoginCryptoError),
    /// The request failed (a server error's text is DistKV's).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Which of DistKV's schemas a set of parameters must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Logging in (`ClientUser`).
    Login,
    /// Creating a user (`ClientUserMaker`, initial).
    Create,
    /// Changing a user (`ClientUserMaker`, not initial: nothing required).
    Modify,
}

/// A method and its parameters, as DistKV's `-a "METHOD k=v …"`: enough
/// to log in, or to write a user record. `Debug` hides the password.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    method: String,
    params: Vec<(String, Value)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Credentials")
            .field("method", &self.method)
            .field("params", &keys)
            .finish()
    }
}

impl Credentials {
    /// Checks `params` against `method`'s schema for `purpose` (later keys
    /// replace earlier ones, as in a Python dict).
    pub fn new(
        method: &str,
        params: Vec<(String, Value)>,
        purpose: Purpose,
    ) -> Result<Credentials, AuthError> {
        if !METHODS.contains(&method) {
            return Err(AuthError::UnknownMethod(method.to_string()));
        }
        let mut merged: Vec<(String, Value)> = Vec::with_capacity(params.len());
        for (k, v) in params {
            match merged.iter_mut().find(|(mk, _)| *mk == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k, v)),
            }
        }
        let c = Credentials {
            method: method.to_string(),
            params: merged,
        };
        c.check(purpose)?;
        Ok(c)
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The user this names: `*` for `root`, else the `name`.
    pub fn ident(&self) -> String {
        if self.method == "root" {
            return "*".into();
        }
        self.param("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// What DistKV's `user get` prints for this user (`export()`).
    pub fn export(&self) -> Value {
        match self.method.as_str() {
            "root" => Value::Map(Vec::new()),
            _ => Value::map([("name", Value::str(&self.ident()))]),
        }
    }

    /// jsonschema's checks of DistKV's schemas, with its messages.
    fn check(&self, purpose: Purpose) -> Result<(), AuthError> {
        let (required, closed): (&[&str], bool) = match (self.method.as_str(), purpose) {
            ("root", _) => (&[], true),
            ("_test", Purpose::Modify) => (&[], true),
            ("_test", _) => (&["name"], true),
            ("password", Purpose::Modify) => (&[], false),
            _ => (&["name", "password"], false),
        };
        let known: &[&str] = match self.method.as_str() {
            "root" => &[],
            "_test" => &["name"],
            _ => &["name", "password"],
        };
        if closed {
            let extra: Vec<String> = self
                .params
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, _)| format!("'{k}'"))
                .collect();
            if !extra.is_empty() {
                let verb = if extra.len() == 1 { "was" } else { "were" };
                return Err(AuthError::Invalid(format!(
                    "Additional properties are not allowed ({} {verb} unexpected)",
                    extra.join(", ")
                )));
            }
        }
        for (k, v) in &self.params {
            // `password` changes only the password (`Modify` names nobody).
            let name_checked = self.method != "root" && k == "name";
            if name_checked || (k == "password" && self.method == "password") {
                let Some(s) = v.as_str() else {
                    return Err(AuthError::Invalid(format!("{v} is not of type 'string'")));
                };
                if k == "password" && s.chars().count() < MIN_PASSWORD {
                    // Never echo the password itself.
                    return Err(AuthError::Invalid("the password is too short".into()));
                }
                if k == "name" && !name_ok(s) {
                    return Err(AuthError::Invalid(format!(
                        "{v} does not match '{NAME_PATTERN}'"
                    )));
                }
            }
        }
        if let Some(missing) = required.iter().find(|r| self.param(r).is_none()) {
            return Err(AuthError::Invalid(format!(
                "'{missing}' is a required property"
            )));
        }
        Ok(())
    }

    fn password(&self) -> Option<&str> {
        (self.method == "password")
            .then(|| self.param("password").and_then(Value::as_str))
            .flatten()
    }
}

/// Whether `s` matches [`NAME_PATTERN`].
fn name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Client {
    /// Logs in as DistKV's client does on connecting: nothing when the
    /// greeting requires no login (a given `creds` is then unused), else
    /// with `creds`, which must use the required method.
    pub async fn log_in(&self, creds: Option<&Credentials>) -> Result<(), AuthError> {
        let offered = self.greeting().auth.clone();
        let Some(required) = offered.first().filter(|m| m.truthy()) else {
            if let Some(c) = creds {
                tracing::info!("Tried to use auth={}, but not required.", c.method);
            }
            return Ok(());
        };
        let required = match required.as_str() {
            Some(s) => s.to_string(),
            None => required.to_string(),
        };
        let Some(creds) = creds else {
            return Err(AuthError::Required(required));
        };
        if creds.method != required {
            return Err(AuthError::WrongMethod {
                method: creds.method.clone(),
                offered: Value::Array(offered),
            });
        }
        self.authenticate(creds).await
    }

    /// Sends `auth` for `creds`, whatever the greeting said: logs in, or,
    /// once logged in, tests a login (DistKV's `auth user auth`).
    pub async fn authenticate(&self, creds: &Credentials) -> Result<(), AuthError> {
        let ident = Value::str(&creds.ident());
        let typ = Value::str(&creds.method);
        let fields = match creds.password() {
            Some(pw) => vec![
                ("typ", typ),
                ("ident", ident),
                ("password", self.seal_password(pw).await?),
            ],
            None => vec![
                ("typ", typ),
                ("chroot", Value::Array(Vec::new())),
                ("ident", ident),
                ("data", Value::Map(Vec::new())),
            ],
        };
        let stream = self.stream("auth", fields).await?;
        drain(stream).await
    }

    /// The key agreed with the node by `diffie_hellman`, exchanged on first
    /// use with DistKV's key length or the one set by
    /// [`Client::set_key_length`] (the node allows one exchange per
    /// connection; concurrent first calls race and one of them fails).
    pub async fn session_key_agreed(&self) -> Result<SessionKey, AuthError> {
        if let Some(k) = self.session_key() {
            return Ok(k);
        }
        let length = u64::from(self.key_length().unwrap_or(DEFAULT_KEY_LENGTH));
        let kx = tokio::task::spawn_blocking(move || KeyExchange::new(length))
            .await
            .map_err(|e| ClientError::Protocol(format!("key generation failed: {e}")))??;
        let fields = vec![
            ("pubkey", Value::Bin(kx.public_key().into())),
            ("length", Value::uint(length)),
        ];
        let reply = self.request("diffie_hellman", fields).await?;
        let peer = match reply.get("pubkey") {
            Some(Value::Bin(b)) => b.clone(),
            _ => {
                return Err(AuthError::Client(ClientError::Protocol(
                    "diffie_hellman reply without pubkey".into(),
                )))
            }
        };
        let key = tokio::task::spawn_blocking(move || kx.session_key(&peer))
            .await
            .map_err(|e| ClientError::Protocol(format!("key agreement failed: {e}")))??;
        self.set_session_key(key.clone());
        Ok(key)
    }

    /// The digest of `password`, sealed under the session key.
    async fn seal_password(&self, password: &str) -> Result<Value, AuthError> {
        let key = self.session_key_agreed().await?;
        let sealed = key.seal(&password_digest(password))?;
        Ok(Value::Bin(sealed.into()))
    }

    /// `auth_set`: creates or replaces the user `creds` names, with the
    /// expected change `chain` (`Value::Nil`: a new user). A `password`
    /// user's password is sent sealed.
    pub async fn auth_set(&self, creds: &Credentials, chain: Value) -> Result<Value, AuthError> {
        let mut fields = vec![
            ("typ", Value::str(&creds.method)),
            ("kind", Value::str("user")),
            ("ident", Value::str(&creds.ident())),
            ("chain", chain),
        ];
        match creds.password() {
            Some(pw) => fields.push(("password", self.seal_password(pw).await?)),
            None if creds.method == "password" => {}
            None => fields.push(("data", Value::Map(Vec::new()))),
        }
        Ok(self.request("auth_set", fields).await?)
    }

    /// `auth_get`: the user `ident` of `method` (public data, plus `chain`
    /// with `nchain` links).
    pub async fn auth_get(
        &self,
        method: &str,
        ident: &str,
        nchain: u64,
    ) -> Result<Value, ClientError> {
        let fields = vec![
            ("typ", Value::str(method)),
            ("kind", Value::str("user")),
            ("ident", Value::str(ident)),
            ("nchain", Value::uint(nchain)),
        ];
        self.request("auth_get", fields).await
    }

    /// `auth_list`: a stream of `{typ, kind, ident, chain?}`, one per user
    /// of `method`.
    pub async fn auth_list(&self, method: &str, nchain: u64) -> Result<Stream, ClientError> {
        let fields = vec![
            ("typ", Value::str(method)),
            ("kind", Value::str("user")),
            ("nchain", Value::uint(nchain)),
        ];
        self.stream("auth_list", fields).await
    }

    /// `set_auth_typ`: makes `method` the one in force (`None`: nobody
    /// needs to log in). The node refuses a method without users.
    pub async fn set_auth_typ(&self, method: Option<&str>) -> Result<Value, ClientError> {
        let typ = method.map_or(Value::Nil, Value::str);
        self.request("set_auth_typ", vec![("typ", typ)]).await
    }
}

/// Reads a stream to its end, failing on an error in it.
async fn drain(mut stream: Stream) -> Result<(), AuthError> {
    while stream.next().await?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::str(v)))
            .collect()
    }

    fn invalid(r: Result<Credentials, AuthError>) -> String {
        match r {
            Err(AuthError::Invalid(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_takes_no_parameters() {
        let c = Credentials::new("root", vec![], Purpose::Login).unwrap();
        assert_eq!(c.ident(), "*");
        assert_eq!(c.export(), Value::Map(vec![]));
        let e = invalid(Credentials::new("root", p(&[("x", "1")]), Purpose::Login));
        assert_eq!(
            e,
            "Additional properties are not allowed ('x' was unexpected)"
        );
    }

    #[test]
    fn password_needs_a_name_and_a_long_enough_password() {
        let c = Credentials::new(
            "password",
            p(&[("name", "joe"), ("password", "geheim")]),
            Purpose::Login,
        )
        .unwrap();
        assert_eq!(c.ident(), "joe");
        assert!(!format!("{c:?}").contains("geheim"));
        let e = invalid(Credentials::new(
            "password",
            p(&[("name", "joe")]),
            Purpose::Create,
        ));
        assert_eq!(e, "'password' is a required property");
        let e = invalid(Credentials::new(
            "password",
            p(&[("name", "joe"), ("password", "abc")]),
            Purpose::Login,
        ));
        assert!(!e.contains("abc"), "{e}");
        let e = invalid(Credentials::new(
            "password",
            vec![
                ("name".into(), Value::str("joe")),
                ("password".into(), Value::Int(12345)),
            ],
            Purpose::Login,
        ));
        assert_eq!(e, "12345 is not of type 'string'");
        let e = invalid(Credentials::new(
            "password",
            p(&[("name", "1joe"), ("password", "geheim")]),
            Purpose::Login,
        ));
        assert_eq!(e, "'1joe' does not match '^[a-zA-Z][a-zA-Z0-9_]*$'");
        // Changing a user requires nothing.
        Credentials::new("password", p(&[("name", "joe")]), Purpose::Modify).unwrap();
    }

    #[test]
    fn test_method_and_unknown_methods() {
        let c = Credentials::new("_test", p(&[("name", "joe")]), Purpose::Login).unwrap();
        assert_eq!(
            (c.ident().as_str(), c.export()),
            ("joe", Value::map([("name", Value::str("joe"))]))
        );
        let e = invalid(Credentials::new("_test", vec![], Purpose::Login));
        assert_eq!(e, "'name' is a required property");
        assert!(matches!(
            Credentials::new("foo", vec![], Purpose::Login),
            Err(AuthError::UnknownMethod(m)) if m == "foo"
        ));
    }

    #[test]
    fn later_parameters_replace_earlier_ones() {
        let c = Credentials::new(
            "_test",
            p(&[("name", "joe"), ("name", "ann")]),
            Purpose::Login,
        )
        .unwrap();
        assert_eq!(c.ident(), "ann");
    }

    #[test]
    fn errors_read_as_distkv_words_them() {
        let e = AuthError::WrongMethod {
            method: "password".into(),
            offered: Value::Array(vec![Value::str("root")]),
        };
        assert_eq!(e.to_string(), "You cannot use 'password' auth ('root',)");
        assert_eq!(
            AuthError::Required("root".into()).to_string(),
            "You need to log in using: root"
        );
    }
}
