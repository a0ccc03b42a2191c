//! `distkv client …` against an in-process node: the data get / set / list /
//! delete / internal state sequence of the reference transcript
//! (recorded from DistKV 0.63.3's own CLI), error exits and monitor.
//!
//! Outputs are compared exactly, except the numbers after `tock:`, which
//! depend on the server's message count (a line `tock: *` in an expected
//! output matches any number).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{texts, Node};
use distkv_node::config::ExportSettings;
use distkv_node::server::ServerOptions;

/// Longest any single step may take.
const DEADLINE: Duration = Duration::from_secs(20);

const FULL_TREE: &str = "\
_: Testing
one:
  two:
    three:
      _: 123
      four:
        _: 1234
        five:
          _:
            one: 1
            two: 2
";

#[test]
fn transcript_data_and_internal_state() {
    let n = Node::start();
    n.ok("data : get", "'Testing'\n");
    n.ok("data one.two.three set -e : 123", "");
    n.ok("data one.two.three.four set -e : 1234", "");
    n.ok("data one.two.three.four.five set -v one XXX -e two 2", "");
    n.ok("data one.two.three get", "123\n");
    n.ok("data one.two.three.four.five get", "one: XXX\ntwo: 2\n");
    n.ok("data one.two.three.four.five set -e one 1", "");
    n.ok("data one.two.three.four.five get", "one: 1\ntwo: 2\n");
    n.ok(
        "data one get -rd_",
        "two:\n  three:\n    _: 123\n    four:\n      _: 1234\n      five:\n        _:\n          one: 1\n          two: 2\n",
    );
    n.ok("data one list", "- !P two\n");
    n.ok("data one.two.three list", "- !P four\n");
    n.ok(
        "-m data one.two.three get",
        "chain:\n  node: n1\n  prev: null\n  tick: 2\nseq: 2\ntock: *\nvalue: 123\n",
    );
    n.ok("data hello set -v : world", "");
    n.ok("data hello get", "'world'\n");
    n.ok("data hello set -v : world2 -n", "");
    n.ok("data hello delete", "");
    n.fails("data hello get", 1, "No data at hello\n");
    n.ok("data : get -rd_", FULL_TREE);
    n.ok("data hello set -v : world", "");
    // As in DistKV, `--new` does not stop overwriting an existing entry.
    n.ok("data hello set -v : world2 -n", "");
    n.ok("data hello get", "'world2'\n");
    n.ok(
        "internal state -n -d -m",
        "deleted:\n  n1:\n  - 8\nmissing: {}\nnode: n1\nnodes:\n  n1: 10\nseq: 2\ntock: *\n",
    );
}

#[test]
fn listing_raw_output_and_metadata() {
    let n = Node::start();
    n.ok("data a.b set -v x 1", "");
    n.ok("data a.b set -p y c.d -e z (1,2)", "");
    n.ok("data a.b get", "x: '1'\ny: !P c.d\nz:\n- 1\n- 2\n");
    n.ok("data a.b set -e x - -e y -", "");
    n.ok("data a.b get -R", "{'z': (1, 2)}");
    n.ok("data a.c set -v : text", "");
    n.ok("data a.c get -R", "text");
    n.ok(
        "data : get -r",
        "- !P ':': Testing\n- !P a.b:\n    z:\n    - 1\n    - 2\n- !P a.c: text\n",
    );
    // Every client's config watch makes the (empty) `.distkv` entry exist.
    n.ok("data : list", "- !P :.distkv\n- !P a\n");
    n.ok("data : list -d_", ".distkv: null\na: null\n");
    n.ok(
        "data a list -m 2 -d_",
        "b:\n  _:\n    z:\n    - 1\n    - 2\nc:\n  _: text\n",
    );
    n.ok(
        "-m data a.c set -v : new",
        "chain:\n  node: n1\n  prev: null\n  tick: 6\nchanged: true\nseq: 3\ntock: *\n",
    );
    n.ok(
        "-m data a.c delete",
        "chain:\n  node: n1\n  prev: null\n  tick: 7\nchanged: true\nprev: new\nseq: 2\ntock: *\n",
    );
    n.ok("data a.c delete", "");
    n.ok("data a delete -r", "");
    n.ok("data : get -rd_", "_: Testing\n");
}

#[test]
fn errors_exit_non_zero() {
    let n = Node::start();
    n.ok("data x set -e : 1", "");
    n.fails("data x delete -l n1 99", 1, "ServerError: ");
    n.fails("data nothing get -R", 1, "No data at nothing\n");
    n.fails("data x set -n -l n1 2", 2, "error: ");
    n.fails("data x set -e : (", 2, "error: ");
    n.fails(
        "data x set -e : 12x3",
        2,
        "error: invalid expression \"12x3\": ",
    );
    n.fails(
        "internal kill n9",
        1,
        "ServerError: KeyError('unknown node n9')\n",
    );
    n.fails("data a..b get", 2, "error: ");
    n.fails("data x frob", 2, "error: ");
    n.ok("data x get", "1\n");
    // Nobody listens on port 1.
    let out = Command::new(env!("CARGO_BIN_EXE_distkv"))
        .args(["-c", "/dev/null", "client", "-h", "127.0.0.1", "-p", "1"])
        .args(["data", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(texts(&out).1.starts_with("cannot connect to 127.0.0.1:1"));
}

/// A child process, killed if the test ends while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads a child's stdout line by line, each within [`DEADLINE`].
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The lines of the next YAML document (up to `---`).
    fn document(&self) -> Vec<String> {
        let mut doc = Vec::new();
        loop {
            let line = self.0.recv_timeout(DEADLINE).expect("monitor output");
            if line == "---" {
                return doc;
            }
            doc.push(line);
        }
    }
}

#[test]
fn monitor_prints_state_then_changes_until_interrupted() {
    let n = Node::start();
    n.ok("data m.a set -e : 1", "");
    // `--only` with `--state` prints the current value and ends.
    n.ok("data m.a monitor -s -o", "1\n");
    n.ok("data m.none monitor -s -o", "");

    let mut child = Running(
        n.command("data m monitor -s")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = Lines::of(&mut child.0);
    let doc = lines.document();
    assert_eq!(doc.len(), 3, "{doc:?}");
    assert_eq!((&*doc[0], &*doc[2]), ("path: !P m.a", "value: 1"));
    assert!(doc[1].starts_with("tock: "), "{doc:?}");
    let up = lines.document();
    // As the Python CLI prints it, `tock` included.
    assert_eq!(up.len(), 5, "{up:?}");
    assert!(up[0].starts_with("_time: '20"), "{up:?}");
    assert_eq!(up[1..3], ["seq: 2", "state: uptodate"]);
    assert!(up[3].starts_with("time: "), "{up:?}");
    assert!(up[4].starts_with("tock: "), "{up:?}");
    // The watch is running now.
    n.ok("data m.b set -e : 2", "");
    let doc = lines.document();
    assert!(doc[0].starts_with("_time: '20"), "{doc:?}");
    assert_eq!(doc[1], "path: !P m.b");
    assert!(doc[2].starts_with("time: "), "{doc:?}");
    assert!(doc[3].starts_with("tock: "), "{doc:?}");
    assert_eq!(doc[4..], ["value: 2"]);

    let kill = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "ctrl-c ends monitor cleanly");
}

#[test]
fn log_save_dest_and_stop_write_files_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start_with(ServerOptions {
        export: ExportSettings {
            dir: Some(dir.path().to_path_buf()),
            absolute: false,
        },
        ..ServerOptions::default()
    });
    n.ok("data l.a set -e : 1", "");
    n.ok("log save s.dkvsnap", "");
    n.ok("log save -f s.dkv", "");
    n.ok("log dest c.dkv", "");
    n.ok("log stop", "");
    let [snap, py, changes] = ["s.dkvsnap", "s.dkv", "c.dkv"].map(|f| dir.path().join(f));
    for f in [&snap, &py, &changes] {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.is_empty(), "{} is empty", f.display());
    }
    assert_eq!(&std::fs::read(&snap).unwrap()[..8], b"DKVSNAP\n");
    assert!(
        (0x80..=0x8f).contains(&std::fs::read(&py).unwrap()[0]),
        "a msgpack map"
    );

    // Existing files are replaced only on request; nothing leaves the
    // export directory.
    n.fails(
        "log save s.dkv",
        1,
        "ServerError: ClientError('save: \"s.dkv\" exists",
    );
    n.fails(
        "log dest c.dkv",
        1,
        "ServerError: ClientError('log: \"c.dkv\" exists",
    );
    n.ok("log save --overwrite s.dkvsnap", "");
    n.ok("log dest --overwrite c.dkv", "");
    n.ok("log stop", "");
    n.fails(
        "log save ../s.dkv",
        1,
        "ServerError: ValueError('save: path must stay",
    );
    assert!(!dir.path().join("../s.dkv").exists());
}

/// `get -r` prints each line from the reply as received; what it prints is
/// held here to the decoded road it replaced (each reply decoded into a map,
/// its path and value printed by the YAML emitter), on a tree of every kind
/// of value and path element, for each option that changes the listing.
#[test]
fn recursive_get_prints_what_the_decoded_replies_give() {
    use distkv_model::{path, Path, Value};
    use distkv_node::client::{Client, ConnectOptions, StreamItem, TreeOptions, UpdateOptions};
    use distkv_yaml::top_level;
    use std::sync::Arc;

    let n = Node::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt
        .block_on(Client::connect(n.addr, ConnectOptions::default()))
        .unwrap();
    let long = "a long text with spaces ".repeat(5);
    let entries: Vec<(Path, Value)> = vec![
        (path!["top"], Value::str("root of it")),
        (path!["top", "s", "plain"], Value::str("hello world")),
        (path!["top", 1i64], Value::Int(42)),
        (path!["top", 1i64, 2.5], Value::Float(-0.125)),
        (path!["top", 1i64, 2.5, "x"], Value::Int(-1 << 40)),
        (
            path!["top", true],
            Value::Bin(Arc::from(&[0u8, 255, 7][..])),
        ),
        (
            path!["top", false],
            Value::Bin(Arc::from(&b"ascii bytes"[..])),
        ),
        (path!["top", "uni", "日本"], Value::str("é ü ß")),
        (
            path!["top", "nested"],
            Value::map([
                ("a", Value::Array(vec![Value::Int(1), Value::str("x")])),
                ("b", Value::map([("c", Value::Nil)])),
            ]),
        ),
        (path!["top", "nil"], Value::Nil),
        (path!["top", "q"], Value::str("123")),
        (path!["top", "e"], Value::str("")),
        (path!["top", "long"], Value::str(&long)),
        (path!["top", "multi"], Value::str("two\nlines")),
        (path!["top", "a b:c", "#x"], Value::Bool(true)),
        (path!["top", ""], Value::Float(1e300)),
        (
            Path::new(vec![
                Value::str("top"),
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
            ]),
            Value::Int(12),
        ),
        (path!["top", "k".repeat(130)], Value::Int(130)),
        (
            path!["top", "deep", "er", "than", "the", "rest"],
            Value::Path(path!["a", 1i64]),
        ),
        (path!["top", "gone"], Value::Int(0)),
    ];
    rt.block_on(async {
        for (p, v) in &entries {
            c.set_value(p, v.clone(), &UpdateOptions::default())
                .await
                .unwrap();
        }
        c.delete_value(&path!["top", "gone"], &UpdateOptions::default())
            .await
            .unwrap();
    });
    // What the decoded road printed.
    let decoded = |opts: TreeOptions, raw: bool| -> String {
        rt.block_on(async {
            let mut s = c.get_tree(&path!["top"], &opts).await.unwrap();
            let mut out = String::new();
            while let Some(item) = s.next().await.unwrap() {
                let StreamItem::Data(r) = item else { continue };
                let Some(Value::Path(p)) = r.get("path").cloned() else {
                    continue;
                };
                let value = r
                    .get("value")
                    .cloned()
                    .or_else(|| opts.empty.then_some(Value::Nil));
                let line = match (raw, value) {
                    (true, _) => Value::Path(p),
                    (false, Some(v)) => Value::Map(vec![(Value::Path(p), v)]),
                    (false, None) => continue,
                };
                out.push_str(&top_level(&Value::Array(vec![line])));
            }
            out
        })
    };
    let tree = |empty, min_depth, max_depth| TreeOptions {
        empty,
        min_depth,
        max_depth,
        ..TreeOptions::default()
    };
    for (args, opts, raw) in [
        ("get -r", tree(false, None, None), false),
        ("get -r -e", tree(true, None, None), false),
        ("get -r -R", tree(false, None, None), true),
        ("get -r -e -R", tree(true, None, None), true),
        ("get -r -m 2", tree(false, None, Some(2)), false),
        ("get -r -M 2 -e", tree(true, Some(2), None), false),
        ("list", tree(true, Some(1), Some(1)), true),
    ] {
        let want = decoded(opts, raw);
        assert!(want.lines().count() > 3, "{args}: {want}");
        n.ok(&format!("data top {args}"), &want);
    }
}
