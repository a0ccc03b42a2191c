//! `distkv client error|internal …`, `data PATH update` and `distkv dump …`
//! against an in-process node, and the global `-D` and `-l` options.
//!
//! Outputs are compared exactly where they do not hold times; lines with
//! times are checked for their keys.

mod common;

use common::{texts, Node};
use distkv_model::{Path, Value};
use distkv_node::client::{Client, ConnectOptions};
use distkv_node::errors::{ErrorReport, ErrorRoot};

/// Runs `f` with a client connected to `n`.
fn with_client<T>(n: &Node, f: impl AsyncFnOnce(&Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(n.addr, ConnectOptions::default())
            .await
            .unwrap();
        f(&c).await
    })
}

fn p(s: &str) -> Path {
    Path::parse(s).unwrap()
}

/// `out` with the lines holding times (`…_seen`, `created`, `seen`,
/// `_…` dates) replaced by `KEY: *`.
fn timeless(out: &str) -> String {
    out.lines()
        .map(|l| {
            let t = l.trim_start();
            let key = t.trim_start_matches("- ").split(':').next().unwrap_or("");
            let timed = ["created", "first_seen", "last_seen", "seen", "resolved"]
                .contains(&key.trim_start_matches('_'))
                && !t.ends_with(": false")
                && !t.ends_with(": true");
            if timed {
                let indent = &l[..l.len() - t.len()];
                let dash = if t.starts_with("- ") { "- " } else { "" };
                format!("{indent}{dash}{key}: *\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

fn stdout_of(n: &Node, args: &[&str]) -> String {
    let out = n.run_args(args, "");
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    stdout
}

#[test]
fn error_records_are_dumped_and_resolved() {
    let n = Node::start();
    let rec = with_client(&n, async |c| {
        let root = ErrorRoot::new(c, "tester");
        let report = ErrorReport {
            subsystem: "run".into(),
            path: p("a.b"),
            severity: 2,
            error: Some("ValueError('x')".into()),
            trace: Some("Traceback: here\n".into()),
            message: Some("bad {x}".into()),
            data: Some(Value::map([("x", Value::Int(1))])),
            ..ErrorReport::default()
        };
        let first = root.record_error(&report).await.unwrap();
        // The same problem again: the same record, counted.
        let again = root.record_error(&report).await.unwrap();
        assert_eq!(first.subpath(), again.subpath());
        // Less severe: ignored.
        let mild = ErrorReport {
            severity: 5,
            ..report.clone()
        };
        root.record_error(&mild).await.unwrap();
        let other = ErrorReport {
            subsystem: "compile".into(),
            path: p("c"),
            ..ErrorReport::default()
        };
        root.record_error(&other).await.unwrap();
        first
    });
    let at = rec.subpath().to_string();
    let dump = stdout_of(&n, &["error", "dump", "-s", "run"]);
    println!("{dump}");
    let want = format!(
        "- _created: *\n  _first_seen: *\n  _last_seen: *\n  count: 2\n  created: *\n  first_seen: *\n  last_seen: *\n  path: !P a.b\n  resolved: false\n  severity: 2\n  subsystem: run\n  syspath: !P {at}\n---\n"
    );
    assert_eq!(timeless(&dump), want);
    let dump = stdout_of(&n, &["error", "dump", "-vv", "-p", "a"]);
    println!("{dump}");
    assert!(dump.contains("  nodes:\n    tester:\n"), "{dump}");
    assert!(dump.contains("      comment: ValueError('x')\n"), "{dump}");
    assert!(dump.contains("      trace: |\n        Traceback: here\n"), "{dump}");
    assert!(dump.contains("      data:\n        x: 1\n"), "{dump}");
    let dump = stdout_of(&n, &["error", "dump", "-v"]);
    assert!(!dump.contains("trace"), "{dump}");
    assert_eq!(dump.matches("---\n").count(), 2, "{dump}");
    let dump = stdout_of(&n, &["error", "dump", "-d", "_"]);
    println!("{dump}");
    assert!(dump.starts_with("compile:\n  c:\n    _:\n"), "{dump}");
    assert!(dump.contains("run:\n  a:\n    b:\n      _:\n"), "{dump}");
    n.ok_args(&["error", "resolve", &at], "");
    assert_eq!(stdout_of(&n, &["error", "dump", "-s", "run"]), "");
    let dump = stdout_of(&n, &["error", "dump", "-r"]);
    assert!(dump.contains("  resolved: true\n"), "{dump}");
    let out = n.run_args(&["error", "resolve", &at], "");
    assert_eq!(texts(&out).1, "Already resolved.\n");
    assert_eq!(out.status.code(), Some(0));
    n.ok_args(&["error", "resolve", "-s", "compile", "c"], "");
    assert_eq!(stdout_of(&n, &["error", "dump"]), "");
    n.fails_args(&["error", "resolve", "nobody:1"], 1, "No error at nobody:1");
    // The one record, by NODE.TOCK.
    let one = stdout_of(&n, &["error", "dump", "-r", "-p", &at]);
    assert!(one.contains("subsystem: run\n"), "{one}");
}
