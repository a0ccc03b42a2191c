//! `distkv client type …` and `distkv client codec …`: types, matches,
//! codecs and converters, as DistKV 0.63.3's `type` and `codec` command
//! groups (docs/compat.md, "Types" and "Codecs and converters").
//!
//! The records live in the meta tree (`type`, `match`, `codec`, `conv`)
//! and are read and written with the `*_internal` actions; the node checks
//! them (examples, tests, scripts) when they are written. Scripts are
//! Rhai, not Python.
//!
//! Where we differ from DistKV's commands (each fails there): `type set
//! -d` may carry a schema, `type match -d` is a flag and deletes the match
//! (DistKV deletes the type of that name), `codec get -e/-d` write the
//! scripts of the value, `codec convert` without `-c` reads the converter,
//! and reading something missing says `No data at PATH` (exit status 1).

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use distkv_model::{Path, Value};
use distkv_node::client::{StreamItem, TreeOptions};

use super::output::{py_str, take};
use super::{api, parse_path, usage, Help, Session};
use crate::eval::parse_value;

/// Manage types and type matches.
#[derive(Debug, Args)]
pub struct TypeArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: TypeCommand,
}

#[derive(Debug, Subcommand)]
enum TypeCommand {
    /// Read type checker information.
    Get(TypeGet),
    /// Write type checker information.
    Set(TypeSet),
    /// Match a type to a path (read, if no type given; list if empty path).
    Match(TypeMatch),
    /// Dump type data.
    List(PathArg),
}

#[derive(Debug, Args)]
struct TypeGet {
    #[command(flatten)]
    help: Help,
    /// Save the script here.
    #[arg(short = 's', long)]
    script: Option<String>,
    /// Save the schema here.
    #[arg(short = 'S', long)]
    schema: Option<String>,
    /// Write schema as YAML. Default: JSON.
    #[arg(short = 'y', long = "yaml")]
    yaml: bool,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct TypeSet {
    #[command(flatten)]
    help: Help,
    /// Example for passing values.
    #[arg(short = 'g', long = "good", allow_hyphen_values = true)]
    good: Vec<String>,
    /// Example for failing values.
    #[arg(short = 'b', long = "bad", allow_hyphen_values = true)]
    bad: Vec<String>,
    /// Load metadata from this YAML file.
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// File with the checking script (Rhai).
    #[arg(short = 's', long)]
    script: Option<String>,
    /// File with the JSON schema.
    #[arg(short = 'S', long)]
    schema: Option<String>,
    /// Load the schema as YAML. Default: JSON.
    #[arg(short = 'y', long = "yaml")]
    yaml: bool,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct TypeMatch {
    #[command(flatten)]
    help: Help,
    /// Print just the path.
    #[arg(short = 'R', long)]
    raw: bool,
    /// Type path to link to.
    #[arg(short = 't', long = "type")]
    typ: Option<String>,
    /// Delete this mapping.
    #[arg(short = 'd', long)]
    delete: bool,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct PathArg {
    #[command(flatten)]
    help: Help,
    #[arg(value_parser = parse_path)]
    path: Path,
}

/// Manage codecs and converters.
#[derive(Debug, Args)]
pub struct CodecArgs {
    #[command(flatten)]
    help: Help,
    #[command(subcommand)]
    cmd: CodecCommand,
}

#[derive(Debug, Subcommand)]
enum CodecCommand {
    /// Read codec information.
    Get(CodecGet),
    /// List codecs.
    List(PathArg),
    /// Save codec information.
    Set(CodecSet),
    /// Match a codec to a path (read, if no codec given).
    Convert(Convert),
}

#[derive(Debug, Args)]
struct CodecGet {
    #[command(flatten)]
    help: Help,
    /// Save the encoder here.
    #[arg(short = 'e', long)]
    encode: Option<String>,
    /// Save the decoder here.
    #[arg(short = 'd', long)]
    decode: Option<String>,
    /// Save the data here.
    #[arg(short = 's', long)]
    script: Option<String>,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct CodecSet {
    #[command(flatten)]
    help: Help,
    /// File with the encoder (Rhai).
    #[arg(short = 'e', long)]
    encode: Option<String>,
    /// File with the decoder (Rhai).
    #[arg(short = 'd', long)]
    decode: Option<String>,
    /// File with the rest (YAML).
    #[arg(short = 'D', long)]
    data: Option<String>,
    /// Decoding sample: SOURCE RESULT.
    #[arg(short = 'i', long = "in", num_args = 2, value_names = ["SRC", "DST"], allow_hyphen_values = true)]
    in_: Vec<String>,
    /// Encoding sample: SOURCE RESULT.
    #[arg(short = 'o', long = "out", num_args = 2, value_names = ["SRC", "DST"], allow_hyphen_values = true)]
    out: Vec<String>,
    #[arg(value_parser = parse_path)]
    path: Path,
}

#[derive(Debug, Args)]
struct Convert {
    #[command(flatten)]
    help: Help,
    /// Codec to link to.
    #[arg(short = 'c', long)]
    codec: Option<String>,
    /// Delete this converter.
    #[arg(short = 'd', long)]
    delete: bool,
    /// List this converter; `-` as NAME lists all groups.
    #[arg(short = 'l', long = "list")]
    list: bool,
    name: String,
    #[arg(value_parser = parse_path)]
    path: Path,
}

/// Prints one line (`format!` arguments).
macro_rules! line {
    ($s:expr, $($arg:tt)*) => {
        $s.out.write(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

fn meta(root: &str, rest: &Path) -> Path {
    let mut v = vec![Value::str(root)];
    v.extend(rest.iter().cloned());
    Path::new(v)
}

fn read_file(name: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(name).with_context(|| format!("reading {name}"))
}

fn write_file(name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::write(name, text).with_context(|| format!("writing {name}"))
}

fn yaml_file(name: &str) -> anyhow::Result<Value> {
    yaml_serde::from_str(&read_file(name)?).with_context(|| format!("reading {name}"))
}

fn json_file(name: &str) -> anyhow::Result<Value> {
    serde_json::from_str(&read_file(name)?).with_context(|| format!("reading {name}"))
}

/// A map value's entry, inserted or replaced.
fn put(v: &mut Value, key: &str, x: Value) {
    if let Value::Map(m) = v {
        match m.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some((_, old)) => *old = x,
            None => m.push((Value::str(key), x)),
        }
    }
}

/// A `-d`/`-D` file's record: its `value` if it holds a `-m` reply (then
/// with the reply's `chain`).
fn record(file: Option<&str>) -> anyhow::Result<(Value, Option<Value>)> {
    let Some(f) = file else {
        return Ok((Value::Map(Vec::new()), None));
    };
    let mut v = yaml_file(f)?;
    if v.as_map().is_none() {
        return Err(usage(&format!("{f} does not hold a map")));
    }
    match take(&mut v, "value") {
        Some(inner) => {
            let chain = take(&mut v, "chain");
            Ok((inner, chain))
        }
        None => Ok((v, None)),
    }
}

/// Reads `path` of the meta tree: the reply (`-m`) or the value.
async fn get_meta(s: &mut Session, path: &Path) -> anyhow::Result<Value> {
    let fields = vec![
        ("path", Value::Path(path.clone())),
        ("nchain", Value::uint(s.nchain())),
    ];
    let mut res = s
        .client
        .request("get_internal", fields)
        .await
        .map_err(api)?;
    if res.get("value").is_none() {
        return Err(anyhow!("No data at {path}"));
    }
    if !s.meta {
        res = take(&mut res, "value").unwrap_or(Value::Nil);
    }
    Ok(res)
}

/// Writes (or deletes, `value: None`) `path` of the meta tree.
async fn set_meta(
    s: &mut Session,
    path: &Path,
    value: Option<Value>,
    chain: Option<Value>,
) -> anyhow::Result<Value> {
    let mut fields = vec![
        ("path", Value::Path(path.clone())),
        ("nchain", Value::uint(s.nchain())),
    ];
    if let Some(c) = chain {
        fields.push(("chain", c));
    }
    let action = match value {
        Some(v) => {
            fields.push(("value", v));
            "set_internal"
        }
        None => "delete_internal",
    };
    s.client.request(action, fields).await.map_err(api)
}

/// The entries of the meta subtree at `path`: (relative path, reply).
async fn entries(s: &mut Session, path: &Path) -> anyhow::Result<Vec<(Path, Value)>> {
    let opts = TreeOptions {
        nchain: s.nchain(),
        ..TreeOptions::default()
    };
    let mut stream = s.client.get_tree_internal(path, &opts).await.map_err(api)?;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await.map_err(api)? {
        let StreamItem::Data(mut r) = item else {
            continue;
        };
        if let Some(Value::Path(p)) = take(&mut r, "path") {
            out.push((p, r));
        }
    }
    Ok(out)
}

fn elements(p: &[Value]) -> String {
    p.iter().map(py_str).collect::<Vec<_>>().join(" ")
}

fn nonempty(p: &Path) -> anyhow::Result<()> {
    if p.is_empty() {
        return Err(usage("You need a non-empty path."));
    }
    Ok(())
}

/// Runs `type …`.
pub async fn run_type(s: &mut Session, a: TypeArgs) -> anyhow::Result<()> {
    match a.cmd {
        TypeCommand::Get(a) => type_get(s, a).await,
        TypeCommand::Set(a) => type_set(s, a).await,
        TypeCommand::Match(a) => type_match(s, a).await,
        TypeCommand::List(a) => super::internal::dump_meta(s, &meta("type", &a.path)).await,
    }
}

async fn type_get(s: &mut Session, a: TypeGet) -> anyhow::Result<()> {
    nonempty(&a.path)?;
    let mut res = get_meta(s, &meta("type", &a.path)).await?;
    let body = if s.meta {
        match &mut res {
            Value::Map(m) => m
                .iter_mut()
                .find(|(k, _)| k.as_str() == Some("value"))
                .map(|(_, v)| v),
            _ => None,
        }
    } else {
        Some(&mut res)
    };
    if let Some(body) = body {
        if let Some(f) = &a.script {
            let code = take(body, "code").unwrap_or(Value::Nil);
            write_file(f, &py_str(&code))?;
        }
        if let Some(f) = &a.schema {
            let schema = take(body, "schema").unwrap_or(Value::Nil);
            let text = if a.yaml {
                distkv_yaml::to_yaml(&schema)
            } else {
                distkv_node::rules::schema::to_json(&schema).to_string()
            };
            write_file(f, &text)?;
        }
    }
    s.out.yprint(&res)?;
    Ok(())
}

async fn type_set(s: &mut Session, a: TypeSet) -> anyhow::Result<()> {
    nonempty(&a.path)?;
    let (mut msg, chain) = record(a.data.as_deref())?;
    for (key, given) in [("good", &a.good), ("bad", &a.bad)] {
        let mut list = match msg.get(key) {
            Some(Value::Array(l)) => l.clone(),
            _ => Vec::new(),
        };
        for x in given {
            list.push(parse_value(x)?);
        }
        put(&mut msg, key, Value::Array(list));
    }
    if let Some(f) = &a.script {
        if msg.get("code").is_some() {
            return Err(usage("Duplicate script"));
        }
        put(&mut msg, "code", Value::str(&read_file(f)?));
    }
    if let Some(f) = &a.schema {
        if msg.get("schema").is_some() {
            return Err(usage("Duplicate schema"));
        }
        let schema = if a.yaml { yaml_file(f)? } else { json_file(f)? };
        put(&mut msg, "schema", schema);
    }
    if msg.get("schema").is_none() && msg.get("code").is_none() {
        return Err(usage("I need a schema, a script, or both."));
    }
    let count = |k| {
        msg.get(k)
            .and_then(Value::as_array)
            .map_or(0, <[Value]>::len)
    };
    if count("good") < 2 {
        return Err(usage("Missing known-good test values (at least two)"));
    }
    if count("bad") == 0 {
        return Err(usage("Missing known-bad test values"));
    }
    let res = set_meta(s, &meta("type", &a.path), Some(msg), chain).await?;
    if s.meta {
        s.out.yprint(&res)?;
    }
    Ok(())
}

async fn type_match(s: &mut Session, a: TypeMatch) -> anyhow::Result<()> {
    if a.path.is_empty() {
        if a.raw || a.typ.is_some() || a.delete {
            return Err(usage("No options allowed when dumping the match tree.."));
        }
        return super::internal::dump_meta(s, &meta("match", &a.path)).await;
    }
    if a.typ.is_some() && a.delete {
        return Err(usage("You can't both set and delete a path."));
    }
    if a.raw && (a.typ.is_some() || a.delete) {
        return Err(usage(
            "You can only print the raw path when reading a match.",
        ));
    }
    let at = meta("match", &a.path);
    if a.delete || a.typ.is_some() {
        let value = match &a.typ {
            Some(t) => {
                let t = parse_path(t).map_err(|e| usage(&e))?;
                Some(Value::map([("type", Value::Path(t))]))
            }
            None => None,
        };
        let res = set_meta(s, &at, value, None).await?;
        if s.meta {
            s.out.yprint(&res)?;
        }
        return Ok(());
    }
    let res = get_meta(s, &at).await?;
    if s.meta {
        s.out.yprint(&res)?;
        return Ok(());
    }
    let line = match res.get("type") {
        Some(Value::Path(p)) => elements(p),
        Some(Value::Array(p)) => elements(p),
        Some(v) => py_str(v),
        None => String::new(),
    };
    line!(s, "{line}")?;
    Ok(())
}

/// Runs `codec …`.
pub async fn run_codec(s: &mut Session, a: CodecArgs) -> anyhow::Result<()> {
    match a.cmd {
        CodecCommand::Get(a) => codec_get(s, a).await,
        CodecCommand::List(a) => {
            for (p, _) in entries(s, &meta("codec", &a.path)).await? {
                line!(s, "{}", elements(&p))?;
            }
            Ok(())
        }
        CodecCommand::Set(a) => codec_set(s, a).await,
        CodecCommand::Convert(a) => convert(s, a).await,
    }
}

async fn codec_get(s: &mut Session, a: CodecGet) -> anyhow::Result<()> {
    nonempty(&a.path)?;
    let res = get_meta(s, &meta("codec", &a.path)).await?;
    let mut value = if s.meta {
        res.get("value").cloned().unwrap_or(Value::Nil)
    } else {
        res.clone()
    };
    for (file, key) in [(&a.encode, "encode"), (&a.decode, "decode")] {
        if let (Some(f), Some(Value::Str(text))) = (file, take(&mut value, key)) {
            write_file(f, &text)?;
        }
    }
    match &a.script {
        Some(f) => write_file(f, &distkv_yaml::to_yaml(&res))?,
        None => s.out.yprint(&res)?,
    }
    Ok(())
}

async fn codec_set(s: &mut Session, a: CodecSet) -> anyhow::Result<()> {
    nonempty(&a.path)?;
    let (mut msg, chain) = record(a.data.as_deref())?;
    for (key, file, name) in [
        ("encode", &a.encode, "encode"),
        ("decode", &a.decode, "decode"),
    ] {
        match (msg.get(key).is_some(), file) {
            (true, Some(_)) => return Err(usage(&format!("Duplicate {name} script"))),
            (true, None) => {}
            (false, None) => return Err(usage(&format!("Missing {name} script"))),
            (false, Some(f)) => put(&mut msg, key, Value::str(&read_file(f)?)),
        }
    }
    for (key, given) in [("in", &a.in_), ("out", &a.out)] {
        if given.is_empty() {
            continue;
        }
        let pairs = given
            .chunks(2)
            .map(|p| Ok(Value::Array(vec![parse_value(&p[0])?, parse_value(&p[1])?])))
            .collect::<anyhow::Result<Vec<_>>>()?;
        put(&mut msg, key, Value::Array(pairs));
    }
    let has = |k| {
        msg.get(k)
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty())
    };
    if !has("in") {
        return Err(usage("Missing decode tests"));
    }
    if !has("out") {
        return Err(usage("Missing encode tests"));
    }
    let res = set_meta(s, &meta("codec", &a.path), Some(msg), chain).await?;
    if s.meta {
        s.out.yprint(&res)?;
    }
    Ok(())
}

async fn convert(s: &mut Session, a: Convert) -> anyhow::Result<()> {
    if a.delete && a.list {
        return Err(usage("You can't both list and delete a path."));
    }
    if a.path.is_empty() && !a.list {
        return Err(usage("You need a non-empty path."));
    }
    if a.codec.is_some() && a.delete {
        return Err(usage("You can't both set and delete a path."));
    }
    let mut at = vec![Value::str("conv"), Value::str(&a.name)];
    at.extend(a.path.iter().cloned());
    let at = Path::new(at);
    if a.list {
        if a.name == "-" {
            if !a.path.is_empty() {
                return Err(usage("You can't use a path here."));
            }
            let fields = vec![
                ("path", Value::Array(vec![Value::str("conv")])),
                ("nchain", Value::Int(0)),
                ("empty", Value::Bool(true)),
            ];
            let res = s
                .client
                .request("enum_internal", fields)
                .await
                .map_err(api)?;
            for r in res.get("result").and_then(Value::as_array).unwrap_or(&[]) {
                line!(s, "{}", py_str(r))?;
            }
            return Ok(());
        }
        for (p, r) in entries(s, &at).await? {
            match r.get("value").and_then(|v| v.get("codec")) {
                Some(Value::Path(c)) => line!(s, "{p} : {c}")?,
                Some(Value::Array(c)) => line!(s, "{p} : {}", Path::new(c.clone()))?,
                Some(v) => line!(s, "{p} : {}", py_str(v))?,
                None => line!(s, "{p} KeyError('codec')")?,
            }
        }
        return Ok(());
    }
    let res = match (&a.codec, a.delete) {
        (Some(c), _) => {
            let c = parse_path(c).map_err(|e| usage(&e))?;
            let value = Value::map([("codec", Value::Path(c))]);
            set_meta(s, &at, Some(value), None).await?
        }
        (None, true) => set_meta(s, &at, None, None).await?,
        (None, false) => {
            let res = get_meta(s, &at).await?;
            if s.meta {
                s.out.yprint(&res)?;
            } else {
                let line = match res.get("codec") {
                    Some(Value::Path(c)) => c.to_string(),
                    Some(v) => py_str(v),
                    None => String::new(),
                };
                line!(s, "{line}")?;
            }
            return Ok(());
        }
    };
    if s.meta {
        s.out.yprint(&res)?;
    } else {
        line!(s, "{}", res.get("tock").map(py_str).unwrap_or_default())?;
    }
    Ok(())
}
