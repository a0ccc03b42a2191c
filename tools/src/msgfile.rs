//! msgpack stream files and YAML documents, as DistKV's `MsgReader`,
//! `MsgWriter` and `yload` read and write them.
//!
//! A msgpack stream file is a bare concatenation of msgpack values (DistKV's
//! save files, `distkv dump init` output, `data update` input); it may hold
//! DistKV's extension types (paths, big integers). YAML input understands
//! the tags our YAML output writes: `!P` paths, `!bin` and `!hex` bytes.

use std::io::{Read, Write};
use std::path::Path as FsPath;

use anyhow::{anyhow, bail, Context};
use distkv_model::codec::{self, Limits};
use distkv_model::{Path, Value};
use yaml_serde::Value as Yaml;

/// Reads every value of the msgpack stream in `file` (`-` or `None`:
/// standard input). The whole file is read into memory first: these are
/// command-line tools for files a person looks at or feeds in.
pub fn read_stream(file: Option<&FsPath>) -> anyhow::Result<Vec<Value>> {
    let mut buf = Vec::new();
    match file {
        Some(f) if f.as_os_str() != "-" => {
            buf = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading standard input")?;
        }
    }
    decode_stream(&buf).with_context(|| match file {
        Some(f) => format!("reading {}", f.display()),
        None => "reading standard input".into(),
    })
}

/// The values of a msgpack stream; a value cut short at the end is an
/// error, as is anything that does not decode.
pub fn decode_stream(mut buf: &[u8]) -> anyhow::Result<Vec<Value>> {
    let limits = Limits {
        max_frame: usize::MAX,
        foreign_ext: true,
        ..Limits::default()
    };
    let mut out = Vec::new();
    let mut offset = 0;
    while !buf.is_empty() {
        let (v, n) = codec::decode_prefix(buf, limits)
            .map_err(|e| anyhow!("bad msgpack at byte {offset}: {e}"))?;
        out.push(v);
        buf = &buf[n..];
        offset += n;
    }
    Ok(out)
}

/// Writes `values` as a msgpack stream to `file`.
pub fn write_stream(file: &FsPath, values: &[Value]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for v in values {
        codec::encode(v, &mut buf);
    }
    let mut f =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", file.display()))
}

/// The documents of a multi-document YAML text.
pub fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        let y: Yaml = serde::Deserialize::deserialize(doc).context("invalid YAML")?;
        out.push(from_yaml(y)?);
    }
    Ok(out)
}

/// A YAML value as a DistKV value (maps keep their order; `!P`, `!bin`,
/// `!hex` tags are understood).
pub fn from_yaml(y: Yaml) -> anyhow::Result<Value> {
    Ok(match y {
        Yaml::Null => Value::Nil,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => Value::uint(u),
            (_, _, Some(f)) => Value::Float(f),
            _ => bail!("unsupported number {n}"),
        },
        Yaml::String(s) => Value::str(&s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(from_yaml)
                .collect::<anyhow::Result<_>>()?,
        ),
        Yaml::Mapping(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| Ok((from_yaml(k)?, from_yaml(v)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        Yaml::Tagged(t) => {
            let tag = t.tag.to_string();
            let text = match &t.value {
                Yaml::String(s) => s.clone(),
                other => bail!("{tag} needs a string, not {other:?}"),
            };
            match tag.trim_start_matches('!') {
                "P" => Value::Path(Path::parse(&text).map_err(|e| anyhow!("{tag} {text}: {e}"))?),
                "bin" => Value::from(text.as_bytes()),
                "hex" => Value::from(&hex(&text)?[..]),
                _ => bail!("unknown YAML tag {tag}"),
            }
        }
    })
}

/// `aa:bb` or `aabb` as bytes.
fn hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if digits.len() % 2 != 0
        || text
            .chars()
            .any(|c| !c.is_ascii_hexdigit() && c != ':' && c != ' ')
    {
        bail!("invalid !hex {text:?}");
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| anyhow!("!hex: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_round_trip_and_cut_values_are_refused() {
        let vals = vec![
            Value::map([("path", Value::Path(Path::parse("a.b").unwrap()))]),
            Value::Int(3),
        ];
        let mut buf = Vec::new();
        vals.iter().for_each(|v| codec::encode(v, &mut buf));
        assert_eq!(decode_stream(&buf).unwrap(), vals);
        // Cut inside the map (the last byte is the whole integer).
        assert!(decode_stream(&buf[..buf.len() - 2]).is_err());
        assert!(decode_stream(&[]).unwrap().is_empty());
    }

    #[test]
    fn yaml_documents_with_tags() {
        let docs = yaml_documents("a: !P x.y\nb: !bin hi\nc: !hex 61:62\n---\n- 1\n- -2\n- 1.5\n")
            .unwrap();
        assert_eq!(
            docs,
            vec![
                Value::map([
                    ("a", Value::Path(Path::parse("x.y").unwrap())),
                    ("b", Value::from(&b"hi"[..])),
                    ("c", Value::from(&b"ab"[..])),
                ]),
                Value::Array(vec![Value::Int(1), Value::Int(-2), Value::Float(1.5)]),
            ]
        );
        assert!(yaml_documents("a: !Q x\n").is_err());
        assert!(yaml_documents("a: !hex 6\n").is_err());
    }
}
