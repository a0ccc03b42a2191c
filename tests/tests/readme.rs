//! The README's tour, run as a new user runs it: every line of its `sh`
//! blocks, in order, in one `bash`, against this build's `distkv` and
//! `distkv-replay`.
//!
//! What differs from a user's terminal, and why:
//! * **Ports.** A test must not take the ports of a node a developer runs,
//!   so every port the tour names becomes a free one: in the command text,
//!   and for the default ports (27586, 27587), which most commands leave
//!   out, in `~/.distkv.cfg` of a private `$HOME`. The commands themselves
//!   are sent unchanged otherwise.
//! * **Files.** The shell runs in a temporary directory (its
//!   `distkv-data/`), and `/tmp/` becomes another one.
//! * **Output.** Each command's stdout and stderr go to files of their own.
//! * **Waiting.** After a `distkv server … &` the test waits (polling, with
//!   a deadline) until the node greets, as a user waits before the next
//!   command; after a `kill` of jobs it waits for them to end.
//!
//! Checks: every command exits with status 0 (`distkv-replay diff` may say
//! 1: differences are its answer), and a comment that starts with a value
//! (`# 123`, `# 'Testing'`) is exactly what the command prints.

mod process;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_node::client::{Client, ConnectOptions};
use process::{distkv_bin, free_port, replay_bin, workspace};

/// Longest one command (or a node's start) may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// One command of the tour.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// The command as the README writes it.
    command: String,
    /// Its comment, if any (after `#`).
    comment: String,
}

/// The lines of the `sh` blocks of the tour.
fn tour(readme: &str) -> Result<Vec<Step>> {
    section(readme, "## A five-minute tour")
}

/// The lines of the `sh` blocks between `heading` and the next section.
fn section(readme: &str, heading: &str) -> Result<Vec<Step>> {
    let start = readme
        .find(heading)
        .with_context(|| format!("no {heading:?} in the README"))?;
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    let mut steps = Vec::new();
    let mut in_block = false;
    for line in rest[..end].lines() {
        match (in_block, line.trim()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, "") | (false, _) => {}
            (true, text) => {
                let (command, comment) = text.split_once(" #").unwrap_or((text, ""));
                steps.push(Step {
                    command: command.trim().to_string(),
                    comment: comment.trim().to_string(),
                });
            }
        }
    }
    ensure!(!in_block, "an unclosed sh block in {heading:?}");
    Ok(steps)
}

/// The ports the tour uses (the defaults, and every 27xxx in a command),
/// each mapped to a distinct free port.
fn port_map(steps: &[Step]) -> Result<BTreeMap<String, u16>> {
    let named = steps
        .iter()
        .flat_map(|s| s.command.split(|c: char| !c.is_ascii_digit()))
        .filter(|w| w.len() == 5 && w.starts_with("27"));
    let mut map = BTreeMap::new();
    for port in ["27586", "27587"].into_iter().chain(named) {
        if map.contains_key(port) {
            continue;
        }
        let free = loop {
            let p = free_port()?;
            if !map.values().any(|&q| q == p) {
                break p;
            }
        };
        map.insert(port.to_string(), free);
    }
    Ok(map)
}

/// `command` with the ports of `ports` and `/tmp/` replaced.
fn localize(command: &str, ports: &BTreeMap<String, u16>, tmp: &Path) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in command.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        match ports.get(&digits) {
            Some(p) => out.push_str(&p.to_string()),
            None => out.push_str(&digits),
        }
        digits.clear();
        out.push(c);
    }
    out.pop();
    out.replace("/tmp/", &format!("{}/", tmp.display()))
}

/// The output a comment announces: a quoted string or a number, alone or
/// before a comma (`# 'Testing'`, `# 123, set on n1`).
fn announced(comment: &str) -> Option<&str> {
    let end = match comment.strip_prefix('\'') {
        Some(rest) => rest.find('\'')? + 2,
        None => comment
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(comment.len()),
    };
    let (value, rest) = comment.split_at(end);
    (!value.is_empty() && (rest.is_empty() || rest.starts_with(','))).then_some(value)
}

/// The client port of a `distkv server` command.
fn server_port(command: &str, default: u16) -> Result<u16> {
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--port" {
            return Ok(words.next().context("--port without a value")?.parse()?);
        }
    }
    Ok(default)
}

/// A `bash` reading commands from a pipe; dropping it kills the shell and
/// everything it started (one process group).
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Shell {
    fn start(dir: &Path, home: &Path, bin_dirs: &[&Path]) -> Result<Shell> {
        use std::os::unix::process::CommandExt;
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            bin_dirs
                .iter()
                .map(|d| d.to_path_buf())
                .chain(std::env::split_paths(&inherited)),
        )?;
        let mut child = Command::new("bash")
            .current_dir(dir)
            .env("PATH", path)
            .env("HOME", home)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting bash")?;
        let stdout = child.stdout.take().context("bash stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Shell {
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the shell's input is closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Runs `line` and returns its exit status.
    fn run(&mut self, line: &str) -> Result<i32> {
        self.send(&format!("{line}\necho \"__status $?\""))?;
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .context("the command did not finish in time")?;
            if let Some(code) = line.strip_prefix("__status ") {
                return Ok(code.parse()?);
            }
        }
    }

    /// Ends the shell (after its foreground commands) and waits for it.
    fn finish(&mut self) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + STEP_DEADLINE;
        while self.child.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "the shell does not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with the negated id of the process group this
            // shell leads (created by `process_group(0)` above).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Waits until a node greets on `port`.
async fn until_serving(port: u16, err_file: &Path) -> Result<()> {
    let deadline = Instant::now() + process::START_DEADLINE;
    let opts = ConnectOptions {
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    loop {
        match Client::connect(("127.0.0.1", port), opts.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!(
                "no node serving on {port}: {e}\n{}",
                std::fs::read_to_string(err_file).unwrap_or_default()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[test]
fn the_tour_is_read_as_the_test_expects() -> Result<()> {
    let readme = "## Set-up\n```sh\ncargo x\n```\n## A five-minute tour\n\n```sh\n\
        distkv a &   # first\ndistkv b\n```\ntext `distkv c`\n```sh\nkill %1\n```\n## Next\n\
        ```sh\nnot this\n```\n";
    let cmds: Vec<(String, String)> = tour(readme)?
        .into_iter()
        .map(|s| (s.command, s.comment))
        .collect();
    let want = [("distkv a &", "first"), ("distkv b", ""), ("kill %1", "")];
    assert_eq!(
        cmds,
        want.map(|(c, k)| (c.to_string(), k.to_string())).to_vec()
    );
    let ports = BTreeMap::from([("27586".to_string(), 40001), ("27596".to_string(), 40002)]);
    assert_eq!(
        localize(
            "x -p 27596 127.0.0.1:27586 /tmp/a 275860",
            &ports,
            Path::new("/t")
        ),
        "x -p 40002 127.0.0.1:40001 /t/a 275860"
    );
    assert_eq!(announced("'Testing'"), Some("'Testing'"));
    assert_eq!(announced("123, set on n1"), Some("123"));
    assert_eq!(announced("-v: the string"), None);
    assert_eq!(announced("20 000 sets"), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written() -> Result<()> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let steps = tour(&readme)?;
    ensure!(steps.len() > 20, "a short tour: {steps:?}");
    let root = tempfile::Builder::new().prefix("distkv-tour-").tempdir()?;
    let (work, home, tmp, out) = (
        root.path().join("work"),
        root.path().join("home"),
        root.path().join("tmp"),
        root.path().join("out"),
    );
    for d in [&work, &home, &tmp, &out] {
        std::fs::create_dir(d)?;
    }
    let ports = port_map(&steps)?;
    let (client_port, bus_port) = (ports["27586"], ports["27587"]);
    std::fs::write(
        home.join(".distkv.cfg"),
        format!(
            "server:\n  bind_default:\n    port: {client_port}\n  bus:\n    port: {bus_port}\n\
             connect:\n  port: {client_port}\n"
        ),
    )?;
    let bins: Vec<PathBuf> = [distkv_bin()?, replay_bin()?]
        .iter()
        .map(|b| {
            b.parent()
                .map(Path::to_path_buf)
                .context("binary directory")
        })
        .collect::<Result<_>>()?;
    let bin_dirs: Vec<&Path> = bins.iter().map(PathBuf::as_path).collect();
    setup_node(&readme, &work, &home, &out, client_port).await?;
    let mut shell = Shell::start(&work, &home, &bin_dirs)?;

    for (i, step) in steps.iter().enumerate() {
        let command = localize(&step.command, &ports, &tmp);
        let (stdout, stderr) = (out.join(format!("{i}.out")), out.join(format!("{i}.err")));
        let redirect = format!(">'{}' 2>'{}'", stdout.display(), stderr.display());
        let show = |what: &str| {
            format!(
                "step {i}: {} ({command}): {what}\n--- stdout\n{}--- stderr\n{}",
                step.command,
                std::fs::read_to_string(&stdout).unwrap_or_default(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        };
        if let Some(background) = command.strip_suffix('&') {
            shell.send(&format!("{} {redirect} &", background.trim()))?;
            if command.starts_with("distkv server") {
                let port = server_port(&command, client_port)?;
                until_serving(port, &stderr)
                    .await
                    .with_context(|| show("the node did not serve"))?;
            }
            continue;
        }
        let code = shell.run(&format!("{command} {redirect}"))?;
        let allowed: &[i32] = if command.starts_with("distkv-replay diff") {
            &[0, 1]
        } else {
            &[0]
        };
        ensure!(
            allowed.contains(&code),
            show(&format!("exit status {code}"))
        );
        if let Some(want) = announced(&step.comment) {
            let got = std::fs::read_to_string(&stdout)?;
            ensure!(got == format!("{want}\n"), show(&format!("not {want:?}")));
        }
        if let Some(jobs) = command.strip_prefix("kill ") {
            // Wait for what was killed, as the next command may need its
            // port or data directory.
            let jobs: Vec<&str> = jobs
                .split_whitespace()
                .filter(|w| w.starts_with('%'))
                .collect();
            let code = shell.run(&format!("wait {} 2>/dev/null; true", jobs.join(" ")))?;
            ensure!(code == 0, "waiting for {command}");
        }
    }
    shell.finish()
}

/// The set-up's two commands: the first builds and runs a node, which is
/// run here (this build's binary standing in for `target/release/distkv`)
/// in the tour's directory, as a newcomer does before the tour, and
/// stopped with Ctrl-C (SIGINT): it must serve, then exit with status 0.
async fn setup_node(readme: &str, work: &Path, home: &Path, out: &Path, port: u16) -> Result<()> {
    let steps = section(readme, "## Set-up")?;
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    ensure!(
        commands.len() == 2 && commands[1] == "cargo test --workspace",
        "the set-up is not one node command and the test command: {commands:?}"
    );
    let node = commands[0]
        .strip_prefix("cargo build --release && target/release/distkv ")
        .with_context(|| format!("the set-up does not build and run a node: {}", commands[0]))?;
    let err_file = out.join("setup.err");
    let child = Command::new(distkv_bin()?)
        .args(node.split_whitespace())
        .current_dir(work)
        .env("HOME", home)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file)?)
        .spawn()
        .context("starting the set-up's node")?;
    let mut child = KillOnDrop(child);
    until_serving(port, &err_file).await?;
    let pid = libc::pid_t::try_from(child.0.id())?;
    // SAFETY: kill(2) of the child started above, not yet waited for.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + process::STOP_DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "the set-up's node ignores Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ensure!(
        status.success(),
        "the set-up's node stopped with {status}\n{}",
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    Ok(())
}

/// A child process killed if the test fails while it runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
