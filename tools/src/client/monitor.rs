//! `data PATH monitor`: print changes below PATH until interrupted.
//!
//! Each message is printed as YAML followed by `---`, without its `seq`.
//! With `--state` the current entries come first, then the `uptodate`
//! marker; from then on (at once without `--state`) every message gets
//! `time` and `_time` and output is flushed. `--only` prints bare values
//! (`str(value)`) and, as in DistKV, ends at the `uptodate` marker. Ctrl-C
//! ends the command with status 0.

use clap::Args;
use distkv_model::{Path, Value};
use distkv_node::client::{StreamItem, TreeOptions};

use super::output::{add_dates, get_mut, iso_time, now, py_str, take};
use super::{api, parse_path, Session};

#[derive(Debug, PartialEq, Args)]
pub struct MonitorArgs {
    /// Also get the current state.
    #[arg(short = 's', long = "state", short_alias = 'f', alias = "fetch")]
    state: bool,
    /// Value only, nothing fancy.
    #[arg(short = 'o', long)]
    only: bool,
    /// Add `_KEY` timestamps next to numbers that look like recent times.
    #[arg(short = 'D', long = "add-date")]
    add_date: bool,
    /// Skip this (sub)tree (repeatable).
    #[arg(short = 'i', long, value_name = "PATH", value_parser = parse_path)]
    ignore: Vec<Path>,
}

pub async fn monitor(s: &mut Session, path: &Path, a: &MonitorArgs) -> anyhow::Result<()> {
    let opts = TreeOptions {
        nchain: s.nchain(),
        fetch: a.state,
        max_depth: a.only.then_some(0),
        ..TreeOptions::default()
    };
    let mut stream = s.client.watch(path, &opts).await.map_err(api)?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut flushing = !a.state;
    let mut seen = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item.map_err(api)?,
            _ = &mut interrupted => break,
        };
        let mut r = match item {
            None => break,
            Some(StreamItem::UpToDate(msg)) => {
                if a.only && !seen {
                    // Nothing there (and in DistKV `seen` never gets set
                    // with `--only`).
                    break;
                }
                flushing = true;
                msg
            }
            Some(StreamItem::Data(mut r)) => {
                if a.add_date {
                    if let Some(v) = get_mut(&mut r, "value") {
                        add_dates(v, now());
                    }
                }
                if ignored(&r, &a.ignore) {
                    continue;
                }
                take(&mut r, "seq");
                if a.only {
                    if let Some(v) = r.get("value") {
                        s.out.write(format!("{}\n", py_str(v)).as_bytes())?;
                        s.out.flush()?;
                    }
                    continue;
                }
                r
            }
        };
        if flushing {
            stamp(&mut r, now());
        }
        s.out.yprint(&r)?;
        s.out.write(b"---\n")?;
        if flushing {
            s.out.flush()?;
        }
        seen = true;
    }
    Ok(())
}

/// Whether the message's path lies in one of the ignored subtrees.
fn ignored(r: &Value, ignore: &[Path]) -> bool {
    match r.get("path") {
        Some(Value::Path(p)) => ignore.iter().any(|i| p.starts_with(i)),
        _ => false,
    }
}

/// Adds `time` (seconds) and `_time` (readable), as DistKV does.
fn stamp(r: &mut Value, t: f64) {
    if let Value::Map(pairs) = r {
        super::output::set(pairs, Value::str("time"), Value::Float(t));
        super::output::set(pairs, Value::str("_time"), Value::str(&iso_time(t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_yaml::top_level;

    #[test]
    fn stamped_messages_look_like_distkv() {
        let mut r = Value::map([
            ("path", Value::Path(Path::parse("one.two").unwrap())),
            ("tock", Value::Int(353)),
            ("value", Value::Int(5)),
        ]);
        stamp(&mut r, 1795503907.0285823);
        assert_eq!(
            top_level(&r),
            "_time: '2026-11-24 07:05:07.028'\npath: !P one.two\ntime: 1795503907.0285823\ntock: 353\nvalue: 5\n"
        );
    }

    #[test]
    fn ignore_matches_subtrees() {
        let r = Value::map([("path", Value::Path(Path::parse("a.b.c").unwrap()))]);
        let p = |s| Path::parse(s).unwrap();
        assert!(ignored(&r, &[p("x"), p("a.b")]));
        assert!(!ignored(&r, &[p("a.c")]));
        assert!(!ignored(
            &Value::map([("state", Value::str("uptodate"))]),
            &[p(":")]
        ));
    }
}
