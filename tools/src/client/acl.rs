//! `distkv client acl …`: ACLs, as DistKV 0.63.3's `acl` command group.
//!
//! An ACL `NAME` is the meta subtree `(None, "acl", NAME, …)` of path
//! patterns whose values are strings of the mode letters `rwdcxena`
//! (docs/compat.md, "ACLs"). The commands read and write it with the
//! `*_internal` actions; `test` asks the node which entry matches
//! (`test_acl`).
//!
//! Where we differ (DistKV's `acl set` fails on every change, and a lone
//! `-` cannot get past its letter check): `set -a +LETTERS` adds to the
//! old letters (kept in their order, new ones appended), `-LETTERS`
//! removes, plain LETTERS replace, and a lone `-` deletes the entry.
//! DistKV builds the new string from a Python set, in no fixed order.

use clap::{Args, Subcommand};
use distkv_model::{Path, Value};

use super::get::{tree_get, GetOptions, Tree};
use super::output::{py_str, take};
use super::{api, parse_path, usage, Help, Session};

/// The mode letters: read, write, delete, create, access, enumerate, …
const ACL: &str = "rwdcxena";

/// Manage ACLs.
#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: AclCommand,
}

/// An `acl` command, its arguments checked.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// List ACLs.
    List(Plain),
    /// Read an ACL entry (this does not test a path: use `acl test`).
    Get(GetArgs),
    /// Set or change an ACL entry.
    Set(SetArgs),
    /// Test which ACL entry matches a path.
    Test(TestArgs),
    /// Dump a complete (or partial) ACL.
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct Plain {
    #[command(flatten)]
    help: Help,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    help: Help,
    name: String,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    help: Help,
    /// The value to set. Start with `+` to add, `-` to remove rights; a
    /// lone `-` deletes the entry.
    #[arg(short = 'a', long, default_value = "+x", allow_hyphen_values = true)]
    acl: String,
    name: String,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    help: Help,
    /// Mode letter to test.
    #[arg(short = 'm', long)]
    mode: Option<String>,
    /// ACL to test. Default: current.
    #[arg(short = 'a', long)]
    acl: Option<String>,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    help: Help,
    /// Structure as dictionary. The argument is the key to use for values.
    /// Default: return as list.
    #[arg(short = 'd', long = "as-dict", value_name = "KEY")]
    as_dict: Option<String>,
    name: String,
    #[arg(value_parser = parse_path)]
    path: Path,
}

/// What `set -a` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Add(String),
    Remove(String),
    Replace(String),
    Delete,
}

impl Change {
    /// DistKV's parse of `-a`, with its letter check.
    fn parse(acl: &str) -> Result<Change, String> {
        let change = match acl.split_at_checked(1) {
            Some(("-", "")) => return Ok(Change::Delete),
            Some(("+", rest)) if !rest.is_empty() => Change::Add(rest.into()),
            Some(("-", rest)) => Change::Remove(rest.into()),
            _ => Change::Replace(acl.into()),
        };
        let letters = match &change {
            Change::Add(l) | Change::Remove(l) | Change::Replace(l) => l,
            Change::Delete => unreachable!("returned above"),
        };
        let unknown: Vec<String> = dedup(letters)
            .chars()
            .filter(|c| !ACL.contains(*c))
            .map(|c| format!("'{c}'"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "You're trying to set an unknown ACL flag: {{{}}}",
                unknown.join(", ")
            ));
        }
        Ok(change)
    }

    /// The new letters, given the old ones.
    fn apply(&self, old: &str) -> String {
        match self {
            Change::Add(l) => dedup(&format!("{old}{l}")),
            Change::Remove(l) => old.chars().filter(|c| !l.contains(*c)).collect(),
            Change::Replace(l) => dedup(l),
            Change::Delete => "-".into(),
        }
    }
}

/// `s` without repeated letters, first occurrences kept in order.
fn dedup(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !out.contains(c) {
            out.push(c);
        }
    }
    out
}

impl AclArgs {
    /// The command, its usage errors found before connecting.
    pub fn check(self) -> Result<AclCommand, clap::Error> {
        let invalid = |msg: &str| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
        };
        let path = match &self.cmd {
            AclCommand::Get(a) => Some(&a.path),
            AclCommand::Set(a) => Some(&a.path),
            AclCommand::Test(a) => Some(&a.path),
            AclCommand::List(_) | AclCommand::Dump(_) => None,
        };
        if path.is_some_and(|p| p.is_empty()) {
            return Err(invalid("You need a non-empty path."));
        }
        if let AclCommand::Set(a) = &self.cmd {
            Change::parse(&a.acl).map_err(|e| invalid(&e))?;
        }
        if let AclCommand::Test(TestArgs { mode: Some(m), .. }) = &self.cmd {
            if m.chars().count() != 1 {
                return Err(invalid("Mode must be one letter."));
            }
        }
        Ok(self.cmd)
    }
}

/// `("acl", NAME, path…)`, relative to the meta root.
fn acl_path(name: &str, path: &Path) -> Path {
    let mut v = vec![Value::str("acl"), Value::str(name)];
    v.extend(path.iter().cloned());
    Path::new(v)
}

pub async fn run(s: &mut Session, cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::List(_) => list(s).await,
        AclCommand::Get(a) => get(s, &a.name, &a.path).await,
        AclCommand::Set(a) => set(s, a).await,
        AclCommand::Test(a) => test(s, a).await,
        AclCommand::Dump(a) => {
            let o = GetOptions {
                recursive: true,
                as_dict: a.as_dict,
                maxdepth: Some(-1),
                ..GetOptions::default()
            };
            tree_get(s, &acl_path(&a.name, &a.path), &o, Tree::Internal).await
        }
    }
}

async fn list(s: &mut Session) -> anyhow::Result<()> {
    let fields = vec![
        ("path", Value::Array(vec![Value::str("acl")])),
        ("nchain", Value::uint(s.nchain())),
        ("empty", Value::Bool(true)),
    ];
    let mut res = s
        .client
        .request("enum_internal", fields)
        .await
        .map_err(api)?;
    if !s.meta {
        res = take(&mut res, "result").unwrap_or(Value::Array(Vec::new()));
    }
    s.out.yprint(&res)?;
    Ok(())
}

async fn get(s: &mut Session, name: &str, path: &Path) -> anyhow::Result<()> {
    let fields = vec![
        ("path", Value::Path(acl_path(name, path))),
        ("nchain", Value::uint(s.nchain())),
    ];
    let mut res = s
        .client
        .request("get_internal", fields)
        .await
        .map_err(api)?;
    if !s.meta {
        match take(&mut res, "value") {
            Some(v) => res = v,
            None => {
                if s.debug > 0 {
                    eprintln!("No value.");
                }
                return Ok(());
            }
        }
    }
    s.out.yprint(&res)?;
    Ok(())
}

async fn set(s: &mut Session, a: SetArgs) -> anyhow::Result<()> {
    let change = Change::parse(&a.acl).map_err(|e| usage(&e))?;
    let path = Value::Path(acl_path(&a.name, &a.path));
    let nchain = if s.meta { 3 } else { 1 };
    let fields = vec![("path", path.clone()), ("nchain", Value::Int(nchain))];
    let cur = s
        .client
        .request("get_internal", fields)
        .await
        .map_err(api)?;
    let old = cur.get("value").map(py_str).unwrap_or_default();
    let chain = cur.get("chain").cloned().unwrap_or(Value::Nil);
    let new = change.apply(&old);
    let mut fields = vec![("path", path), ("chain", chain)];
    if s.meta {
        fields.push(("nchain", Value::Int(3)));
    }
    let res = if change == Change::Delete {
        s.client.request("delete_internal", fields).await
    } else {
        fields.push(("value", Value::str(&new)));
        s.client.request("set_internal", fields).await
    }
    .map_err(api)?;
    let mut out = vec![("old", Value::str(&old)), ("new", Value::str(&new))];
    if s.meta {
        out.push(("chain", res.get("chain").cloned().unwrap_or(Value::Nil)));
        out.push(("tock", res.get("tock").cloned().unwrap_or(Value::Nil)));
    }
    s.out.yprint(&Value::map(out))?;
    Ok(())
}

/// `test_acl` (the node's; see the module docs).
async fn test(s: &mut Session, a: TestArgs) -> anyhow::Result<()> {
    let mut fields = vec![
        ("path", Value::Path(a.path)),
        ("nchain", Value::uint(s.nchain())),
    ];
    if let Some(m) = a.mode {
        fields.push(("mode", Value::str(&m)));
    }
    if let Some(acl) = a.acl {
        fields.push(("acl", Value::str(&acl)));
    }
    let res = s.client.request("test_acl", fields).await.map_err(api)?;
    if s.meta {
        s.out.yprint(&res)?;
        return Ok(());
    }
    let line = match res.get("access") {
        Some(Value::Bool(true)) => "+".to_string(),
        Some(Value::Bool(false)) => "-".to_string(),
        Some(v) => py_str(v),
        None => "None".to_string(),
    };
    s.out.write(format!("{line}\n").as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_add_remove_replace_and_delete() {
        assert_eq!(Change::parse("+x").unwrap().apply("rw"), "rwx");
        assert_eq!(Change::parse("+wx").unwrap().apply("rw"), "rwx");
        assert_eq!(Change::parse("-w").unwrap().apply("rwx"), "rx");
        assert_eq!(Change::parse("rr").unwrap().apply("wx"), "r");
        assert_eq!(Change::parse("-").unwrap(), Change::Delete);
        assert_eq!(Change::parse("").unwrap().apply("rw"), "");
        // A lone `+` is the letter `+`, as in DistKV.
        assert!(Change::parse("+").is_err());
    }

    #[test]
    fn unknown_letters_are_refused_with_distkv_text() {
        assert_eq!(
            Change::parse("+q").unwrap_err(),
            "You're trying to set an unknown ACL flag: {'q'}"
        );
    }
}
