//! Login parameters from the command line, as DistKV's `gen_auth` and
//! `split_arg` read them, and login errors as DistKV's CLI prints them.
//!
//! * `METHOD KEY=VALUE…`: a value that reads as an integer is one;
//!   `KEY?` asks for the value without echo (`KEY? `), `KEY?=PROMPT`
//!   with `PROMPT: ` (not echoed either, then read as an integer if it
//!   is one, as DistKV does);
//! * `=FILE`: a YAML map, `type: METHOD` plus the parameters.
//!
//! Where we differ: when standard input is not a terminal, a value asked
//! for is read from it (one line), so scripts can pipe a password in;
//! DistKV's `getpass` would open the controlling terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, Context};
use distkv_model::Value;
use distkv_node::auth::{AuthError, Credentials, Purpose};
use distkv_node::client::ClientError;
use distkv_node::config::Config;

/// The `-a` option, or else the config's `connect.auth` string.
pub fn from_args_or_config(arg: Option<&str>, cfg: &Config) -> anyhow::Result<Option<Credentials>> {
    if let Some(a) = arg {
        return gen_auth(a, Purpose::Login).map(Some);
    }
    let keys = cfg.keys()?;
    match keys.connect.auth.as_ref() {
        None => Ok(None),
        Some(y) => match y.as_str() {
            Some(a) => gen_auth(a, Purpose::Login).map(Some),
            None => anyhow::bail!("connect.auth: expected 'METHOD KEY=VALUE…' or '=FILE'"),
        },
    }
}

/// DistKV's `gen_auth`: `METHOD KEY=VALUE…` or `=FILE`, checked for
/// `purpose`.
pub fn gen_auth(s: &str, purpose: Purpose) -> anyhow::Result<Credentials> {
    let mut words = s.split_whitespace();
    let method = words
        .next()
        .ok_or_else(|| anyhow!("empty auth parameter: expected 'METHOD KEY=VALUE…'"))?;
    let rest: Vec<&str> = words.collect();
    let (method, params) = match method.strip_prefix('=') {
        Some(file) if rest.is_empty() => from_file(file)?,
        _ => {
            let mut params = Vec::new();
            for word in rest {
                split_arg(word, &mut params)?;
            }
            (method.to_string(), params)
        }
    };
    Credentials::new(&method, params, purpose).map_err(error)
}

/// A YAML file's `type` and the other keys.
fn from_file(file: &str) -> anyhow::Result<(String, Vec<(String, Value)>)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let v: Value = yaml_serde::from_str(&text).with_context(|| format!("reading {file}"))?;
    let Value::Map(pairs) = v else {
        anyhow::bail!("{file}: expected a map with 'type'");
    };
    let mut method = None;
    let mut params = Vec::new();
    for (k, v) in pairs {
        let k = k
            .as_str()
            .ok_or_else(|| anyhow!("{file}: keys must be strings"))?
            .to_string();
        if k == "type" {
            method = Some(
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            );
        } else {
            params.push((k, v));
        }
    }
    // DistKV: `KeyError: 'type'`.
    let method = method.ok_or_else(|| anyhow!("{file}: no 'type'"))?;
    Ok((method, params))
}

/// DistKV's `split_arg`: adds `KEY=VALUE` or `KEY?` to `params`.
pub fn split_arg(word: &str, params: &mut Vec<(String, Value)>) -> anyhow::Result<()> {
    let (key, value) = match word.split_once('=') {
        Some((k, v)) => match k.strip_suffix('?') {
            Some(k) => (k, int_or_str(&getpass(&format!("{v}: "))?)),
            None => (k, int_or_str(v)),
        },
        None => match word.strip_suffix('?') {
            Some(k) => (k, Value::str(&getpass(&format!("{k}? "))?)),
            None => anyhow::bail!("'{word}': expected KEY=VALUE or KEY?"),
        },
    };
    params.push((key.to_string(), value));
    Ok(())
}

/// Python's `int(v)` where it succeeds, else the string.
fn int_or_str(v: &str) -> Value {
    let trimmed = v.trim();
    let t = trimmed.replace('_', "");
    let plain = !trimmed.starts_with('_') && !trimmed.ends_with('_') && !trimmed.contains("__");
    match t.parse::<i64>() {
        Ok(i) if plain => Value::Int(i),
        _ => Value::str(v),
    }
}

/// Reads a line without echo: from the terminal when standard input is
/// one, else from standard input as it comes.
fn getpass(prompt: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    let _ = err.write_all(prompt.as_bytes());
    let _ = err.flush();
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let _echo = if tty { EchoOff::new() } else { None };
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading a value")?;
    if tty {
        let _ = err.write_all(b"\n");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo switched off on standard input while it lives.
struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
}

impl EchoOff {
    #[cfg(unix)]
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; a
        // failure leaves echo on and is reported by the return value.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSAFLUSH, &t) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }

    #[cfg(not(unix))]
    fn new() -> Option<EchoOff> {
        None
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        #[cfg(unix)]
        unsafe {
            libc::tcsetattr(0, libc::TCSAFLUSH, &self.saved);
        }
    }
}

/// A login error as DistKV's command line prints it (exit status 1).
pub fn error(e: AuthError) -> anyhow::Error {
    match e {
        AuthError::Required(_) => anyhow!("ClientAuthRequiredError: {e}"),
        AuthError::WrongMethod { .. } => anyhow!("ClientAuthMethodError: {e}"),
        AuthError::UnknownMethod(m) => anyhow!("NoAuthModuleError: {m}"),
        AuthError::Invalid(t) => anyhow!("ValidationError: {t}"),
        AuthError::Client(ClientError::Server(t)) => anyhow!("ServerError: {t}"),
        e => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_parameters() {
        let c = gen_auth("password name=joe password=geheim", Purpose::Login).unwrap();
        assert_eq!(c.method(), "password");
        assert_eq!(c.ident(), "joe");
        assert_eq!(c.param("password"), Some(&Value::str("geheim")));
        let c = gen_auth("root", Purpose::Login).unwrap();
        assert_eq!(c.ident(), "*");
    }

    #[test]
    fn integers_are_integers_as_in_python() {
        assert_eq!(int_or_str("12345"), Value::Int(12345));
        assert_eq!(int_or_str("-3"), Value::Int(-3));
        assert_eq!(int_or_str("1_000"), Value::Int(1000));
        assert_eq!(int_or_str("1__0"), Value::str("1__0"));
        assert_eq!(int_or_str("12a"), Value::str("12a"));
        assert_eq!(int_or_str(""), Value::str(""));
        // So a numeric password fails DistKV's schema, as there.
        let e = gen_auth("password name=joe password=12345", Purpose::Login).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ValidationError: 12345 is not of type 'string'"
        );
    }

    #[test]
    fn bad_words_and_methods_are_refused() {
        let e = gen_auth("password name", Purpose::Login).unwrap_err();
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        let e = gen_auth("nosuch", Purpose::Login).unwrap_err();
        assert_eq!(e.to_string(), "NoAuthModuleError: nosuch");
        assert!(gen_auth("  ", Purpose::Login).is_err());
    }

    #[test]
    fn a_yaml_file_names_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.yaml");
        std::fs::write(&f, "type: _test\nname: joe\n").unwrap();
        let c = gen_auth(&format!("={}", f.display()), Purpose::Login).unwrap();
        assert_eq!((c.method(), c.ident().as_str()), ("_test", "joe"));
        std::fs::write(&f, "name: joe\n").unwrap();
        let e = gen_auth(&format!("={}", f.display()), Purpose::Login).unwrap_err();
        assert!(e.to_string().contains("no 'type'"), "{e}");
    }
}
