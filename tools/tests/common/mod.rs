//! The in-process node and output checks shared by the CLI tests.
//!
//! Outputs are compared exactly, except the numbers after `tock:`, which
//! depend on the server's message count (a line `tock: *` in an expected
//! output matches any number).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use distkv_model::Value;
use distkv_node::node::NodeBuilder;
use distkv_node::server::{self, ServerOptions};
use tokio_util::sync::CancellationToken;

/// A node `n1` with root value `Testing`, serving on 127.0.0.1.
pub struct Node {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    _rt: tokio::runtime::Runtime,
}

impl Node {
    /// A node with the default options.
    pub fn start() -> Node {
        Node::start_with(ServerOptions::default())
    }

    /// A node with `opts`.
    pub fn start_with(opts: ServerOptions) -> Node {
        Node::start_built(
            NodeBuilder::new("n1")
                .options(opts)
                .init(Some(Value::str("Testing"))),
        )
    }

    /// A node built by `builder` (named by it; no data directory).
    pub fn start_built(builder: NodeBuilder) -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let addr = rt.block_on(async {
            let listener = server::bind("127.0.0.1", 0).await.unwrap();
            let node = builder.build(listener).await.unwrap();
            let addr = node.local_addr();
            tokio::spawn(node.run(shutdown.clone()));
            addr
        });
        Node {
            addr,
            shutdown,
            _rt: rt,
        }
    }

    /// `distkv client -h 127.0.0.1 -p PORT ARGS…`, without any config file.
    pub fn command(&self, args: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_distkv"));
        c.args(["-c", "/dev/null", "client", "-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(args.split_whitespace());
        c
    }

    pub fn run(&self, args: &str) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `args`, expecting exit status 0, no stderr and `want` on stdout.
    pub fn ok(&self, args: &str, want: &str) {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{args}: {stderr}");
        assert_eq!(stderr, "", "{args}");
        assert_matches(&stdout, want, args);
    }

    /// Runs `args`, expecting exit status `code` and stderr starting with
    /// `want`.
    pub fn fails(&self, args: &str, code: i32, want: &str) {
        let out = self.run(args);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(code), "{args}: {stderr}");
        assert!(stderr.starts_with(want), "{args}: {stderr:?}");
        assert_eq!(stdout, "", "{args}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `got` equals `want`, where a `tock: *` line matches any tock.
pub fn assert_matches(got: &str, want: &str, what: &str) {
    let same = got.lines().count() == want.lines().count()
        && got.ends_with('\n') == want.ends_with('\n')
        && got
            .lines()
            .zip(want.lines())
            .all(|(g, w)| match w.strip_suffix('*') {
                Some(prefix) if w.trim_start().starts_with("tock: ") => g
                    .strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                _ => g == w,
            });
    assert!(same, "{what}:\n--- got\n{got}--- want\n{want}");
}

impl Node {
    /// `distkv client -h 127.0.0.1 -p PORT ARGS…`, the arguments as given
    /// (for arguments with spaces), with `stdin` as standard input.
    pub fn run_args(&self, args: &[&str], stdin: &str) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_distkv"));
        c.args(["-c", "/dev/null", "client", "-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        // A command that reads nothing may exit before we write.
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// [`Node::ok`] with the arguments as given.
    pub fn ok_args(&self, args: &[&str], want: &str) {
        let out = self.run_args(args, "");
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
        assert_matches(&stdout, want, &format!("{args:?}"));
    }

    /// [`Node::fails`] with the arguments as given: exit status `code`,
    /// stderr holding `want`, nothing on stdout.
    pub fn fails_args(&self, args: &[&str], code: i32, want: &str) {
        let out = self.run_args(args, "");
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?}");
        assert_eq!(stdout, "", "{args:?}");
    }
}
