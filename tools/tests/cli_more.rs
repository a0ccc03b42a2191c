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

/// `distkv GLOBALS… client -h … -p … ARGS…`.
fn with_globals(n: &Node, globals: &[&str], args: &str) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-c", "/dev/null"])
        .args(globals)
        .args([
            "client",
            "-h",
            "127.0.0.1",
            "-p",
            &n.addr.port().to_string(),
        ])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{args}: {}", texts(&out).1);
    out
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
    assert!(
        dump.contains("      trace: |\n        Traceback: here\n"),
        "{dump}"
    );
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

#[test]
fn internal_dump_get_and_enum() {
    let n = Node::start();
    n.ok("data a set -e : 1", "");
    n.ok("data a.b set -e : 2", "");
    n.ok("data a.b set -e : 3", "");
    // n1's ticks: 1 is the root, 2 `a`, 3 and 4 `a.b`; 3 is superseded.
    n.ok("internal enum n1", "1\n2\n4\n");
    n.ok("internal enum n1 -n 2", "1\n2\n");
    let out = with_globals(&n, &["-v"], "internal enum n1");
    assert_eq!(texts(&out).0, "1 :\n2 a\n4 a.b\n");
    n.ok(
        "-m internal enum n1 -c",
        "result:\n- 1\n- 2\n- 4\nseq: 2\ntock: *\n",
    );
    n.ok("internal get n1 4", "3\n");
    n.ok("internal get n1 2", "1\n");
    n.fails("internal get n1 3", 1, "ServerError: ");
    // `--copy` rewrites what n1 heads: new ticks, same values.
    n.ok("internal enum n1 -C", "1\n2\n4\n");
    n.ok("internal enum n1", "5\n6\n7\n");
    n.ok("data a.b get", "3\n");
    n.ok(
        "internal deleter n1",
        "chain:\n  node: n1\n  prev: null\n  tick: 8\nchanged: true\nseq: 3\ntock: *\nvalue:\n  nodes:\n  - n1\n",
    );
    let dump = stdout_of(&n, &["internal", "dump", ":"]);
    assert!(
        dump.contains("actor:\n  del:\n    _:\n      nodes:\n      - n1\n"),
        "{dump}"
    );
    n.ok("internal dump actor", "del:\n  _:\n    nodes:\n    - n1\n");
}

#[test]
fn data_update_reads_a_msgpack_stream() {
    let n = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.mp");
    let file = file.to_str().unwrap();
    let yaml = "path: !P x.y\nvalue: 1\n---\nfoo: 2\n---\npath: !P z\nvalue: {a: b}\n";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-c", "/dev/null", "dump", "yaml", file])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(yaml.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    n.ok_args(&["data", "top", "update", "-i", file], "");
    n.ok(
        "data top get -rd_",
        "x:\n  y:\n    _: 1\nz:\n  _:\n    a: b\n",
    );
    // Standard input by default.
    let bytes = std::fs::read(file).unwrap();
    let mut c = n.command("data other update");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    n.ok("data other.x.y get", "1\n");
    n.fails_args(
        &["data", "top", "update", "-i", "/nonexistent/in.mp"],
        1,
        "reading /nonexistent/in.mp",
    );
}

/// `distkv -c /dev/null ARGS…` with `stdin`, expecting success.
fn distkv(args: &[&str], stdin: &[u8]) -> (String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-c", "/dev/null"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let (o, e) = texts(&out);
    assert!(out.status.success(), "{args:?}: {e}");
    (o, e)
}

#[test]
fn dump_init_file_yaml_and_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.mp");
    let init = init.to_str().unwrap();
    distkv(&["dump", "init", "n1", init], b"");
    // DistKV's bytes exactly: a map in this key order.
    let bytes = std::fs::read(init).unwrap();
    let mut want = vec![0x85];
    for (k, v) in [
        ("chain", &b"\x83\xa4node\xa2n1\xa4tick\x01\xa4prev\xc0"[..]),
        ("depth", b"\x00"),
        ("path", b"\x90"),
        ("tock", b"\x01"),
        ("value", b"\xacInitial data"),
    ] {
        want.push(0xa0 + k.len() as u8);
        want.extend_from_slice(k.as_bytes());
        want.extend_from_slice(v);
    }
    assert_eq!(bytes, want);
    let (out, _) = distkv(&["dump", "file", init], b"");
    assert_eq!(
        out,
        "chain:\n  node: n1\n  prev: null\n  tick: 1\ndepth: 0\npath: []\ntock: 1\nvalue: Initial data\n---\n"
    );
    // A node loads it as its first data.
    let n = Node::start_built(
        distkv_node::node::NodeBuilder::new("n1").load([std::path::PathBuf::from(init)]),
    );
    n.ok("data :", "'Initial data'\n");
    drop(n);

    // YAML documents to msgpack and back; `-f` filters by path.
    let mp = dir.path().join("y.mp");
    let mp = mp.to_str().unwrap();
    let docs = "path: !P a.b\nvalue: 3\n---\npath: !P c\nvalue: !bin hi\n---\n- 1\n";
    distkv(&["dump", "yaml", mp], docs.as_bytes());
    let (out, _) = distkv(&["dump", "file", mp], b"");
    assert_eq!(
        out,
        "path: !P a.b\nvalue: 3\n---\npath: !P c\nvalue: !bin hi\n---\n- 1\n---\n"
    );
    let (out, _) = distkv(&["dump", "file", "-f", "a", mp], b"");
    assert_eq!(out, "path: !P a.b\nvalue: 3\n---\n");

    let (out, _) = distkv(&["dump", "cfg", "connect.host"], b"");
    assert_eq!(out, "localhost\n");
    let (out, _) = distkv(
        &["-C", "connect.port=1234", "dump", "cfg", "connect.port"],
        b"",
    );
    assert_eq!(out, "1234\n");
    let (out, _) = distkv(&["dump", "cfg", "server.root"], b"");
    assert_eq!(out, "- :distkv\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-c", "/dev/null", "dump", "cfg", "connect.nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(texts(&out).0, "Unknown: nope\n");
}

#[test]
fn debug_key_length_and_log_levels() {
    let n = Node::start();
    let g = |globals: &[&str], args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
            .args(["-c", "/dev/null"])
            .args(globals)
            .args([
                "client",
                "-h",
                "127.0.0.1",
                "-p",
                &n.addr.port().to_string(),
            ])
            .args(args)
            .output()
            .unwrap();
        let (o, e) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {e}");
        (o, e)
    };
    let add = [
        "auth",
        "-m",
        "password",
        "user",
        "add",
        "name=joe",
        "password=secret1",
    ];
    assert_eq!(g(&["-D"], &add).0, "joe\n");
    n.ok(
        "auth -m password init",
        "Authorization switched to password\n",
    );
    let login = "password name=joe password=secret1";
    assert_eq!(g(&["-D"], &["-a", login, "data", ":"]).0, "'Testing'\n");
    assert_eq!(g(&[], &["-a", login, "data", ":"]).0, "'Testing'\n");

    // `-l LOGGER=LEVEL`: here the client library's INFO note that a login
    // was offered but not needed.
    let m = Node::start();
    let port = m.addr.port().to_string();
    let run = |globals: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
            .args(["-c", "/dev/null"])
            .args(globals)
            .args([
                "client",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-a",
                "root",
                "data",
                ":",
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        texts(&out).1
    };
    assert!(!run(&[]).contains("but not required"));
    assert!(
        run(&["-l", "distkv_client=INFO"]).contains("Tried to use auth=root, but not required.")
    );
    assert!(run(&["-l", "distkv_client.auth=info"]).contains("but not required"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-l", "x=LOUD", "dump", "cfg", ":"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("unknown log level"));
}

/// `dump msg` and `dump post` on a node's embedded broker.
#[test]
fn dump_msg_and_post_on_the_bus() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use distkv_node::bus::Bus;
    use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mode = MqttMode::Mesh {
        listen: ("127.0.0.1".into(), 0),
        advertise: None,
        peers: Vec::new(),
    };
    let bus = rt
        .block_on(MqttBus::start(MqttConfig::new("n1", mode)))
        .unwrap();
    let port = bus.broker_addr().unwrap().port().to_string();
    let conf = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_distkv"));
        c.args(["-c", "/dev/null", "-C", "connect.host=127.0.0.1", "-C"])
            .arg(format!("server.bus.port={port}"))
            .args(args);
        c
    };

    // `dump msg +test` prints what is published on `:distkv/test`.
    let mut child = conf(&["dump", "msg", "+test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let payload = distkv_model::codec::to_vec(&Value::map([("a", Value::Int(1))]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    // Published until the monitor, once subscribed, shows one.
    while !lines.iter().any(|l: &String| l == "---") {
        assert!(Instant::now() < deadline, "no message shown: {lines:?}");
        bus.publish(":distkv/test", payload.clone().into());
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
            if lines.last().is_some_and(|l| l == "---") {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let first: Vec<&str> = lines.iter().take(4).map(String::as_str).collect();
    assert!(first[0].starts_with("_timestamp: '"), "{lines:?}");
    assert_eq!(first[1], "_topic: !P ::distkv.test", "{lines:?}");
    assert_eq!(first[2], "a: 1", "{lines:?}");
    assert_eq!(first[3], "---", "{lines:?}");

    // `dump post t.post` publishes each YAML document there.
    let mut sub = bus.subscribe("t/#");
    let out = conf(&["dump", "post", "t.post"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"x: 1\n---\n_topic: !P t.other\ny: !P a.b\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < 2 {
            let d = tokio::time::timeout(Duration::from_secs(20), sub.recv())
                .await
                .expect("posted messages arrive")
                .unwrap();
            got.push((d.topic, distkv_model::codec::decode(&d.payload).unwrap()));
        }
        got
    });
    assert_eq!(
        got,
        vec![
            ("t/post".to_string(), Value::map([("x", Value::Int(1))])),
            (
                "t/other".to_string(),
                Value::map([("y", Value::Path(p("a.b")))])
            ),
        ]
    );
    bus.shutdown();
}

#[test]
fn internal_mark_takes_ticks_as_superseded_or_deleted() {
    let n = Node::start();
    n.ok("data a set -e : 1", "");
    n.ok("data a set -e : 2", "");
    // n1's tick 2 was superseded by 3.
    n.ok(
        "internal mark n9 5 6",
        "known:\n  n1:\n  - 2\n  n9:\n  - - 5\n    - 7\nnode: n1\nseq: 3\ntock: *\n",
    );
    n.ok(
        "internal mark -d n9 9",
        "deleted:\n  n9:\n  - 9\nnode: n1\nseq: 3\ntock: *\n",
    );
    // n9's ticks before 9 that nobody marked are missing here …
    n.ok(
        "internal state -m",
        "missing:\n  n9:\n  - - 1\n    - 5\n  - - 7\n    - 9\nnode: n1\nseq: 2\ntock: *\n",
    );
    // … and without ticks, `mark` takes them (here: n9's).
    n.ok(
        "internal mark n9",
        "known:\n  n1:\n  - 2\n  n9:\n  - - 1\n    - 10\nnode: n1\nseq: 4\ntock: *\n",
    );
    n.ok(
        "internal state -m",
        "missing: {}\nnode: n1\nseq: 2\ntock: *\n",
    );
    n.fails_args(
        &["internal", "mark", "", "1"],
        2,
        "You can't do that with an empty node",
    );
    n.fails_args(&["internal", "mark", "n1"], 1, "Nothing is missing of n1");
}

#[test]
fn record_working_resolves_with_the_time_and_notes_a_comment() {
    let n = Node::start();
    with_client(&n, async |c| {
        let root = ErrorRoot::new(c, "tester");
        // Nothing recorded: nothing to resolve, unless forced.
        let none = root.record_working("run", &p("x"), None, None, false).await;
        assert!(none.unwrap().is_none());
        let report = ErrorReport {
            subsystem: "run".into(),
            path: p("a"),
            error: Some("E()".into()),
            ..ErrorReport::default()
        };
        let rec = root.record_error(&report).await.unwrap();
        let done = root
            .record_working("run", &p("a"), Some("fixed"), None, false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.subpath(), rec.subpath());
        assert!(matches!(done.value.get("resolved"), Some(Value::Float(_))));
        // Reported again: the same record, unresolved, counted twice.
        let again = root.record_error(&report).await.unwrap();
        assert_eq!(again.subpath(), rec.subpath());
        assert!(!again.resolved());
        assert_eq!(again.value.get("count"), Some(&Value::Int(2)));
        root.record_working("run", &p("a"), None, None, false)
            .await
            .unwrap();
        let forced = root
            .record_working("run", &p("new"), None, None, true)
            .await
            .unwrap()
            .unwrap();
        assert!(forced.resolved() && forced.subpath() != rec.subpath());
    });
    let dump = stdout_of(&n, &["error", "dump", "-r", "-v", "-s", "run", "-p", "a"]);
    assert!(dump.contains("  _resolved: '"), "{dump}");
    assert!(dump.contains("  count: 2\n"), "{dump}");
    assert!(dump.contains("      comment: E()\n"), "{dump}");
    assert_eq!(dump.matches("---\n").count(), 1, "{dump}");
    let all = stdout_of(&n, &["error", "dump", "-a"]);
    assert_eq!(all.matches("---\n").count(), 2, "{all}");
}
