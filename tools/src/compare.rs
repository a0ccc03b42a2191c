//! `distkv bench --compare-redis`: the same workloads on a fresh node of
//! this binary and on a fresh `redis-server`, side by side in one run.
//!
//! Both servers run on loopback with their history on disk: the node with
//! a data directory (its default mode, `fsync interval`), Redis with
//! `appendonly yes` and `appendfsync everysec`. The load generators are
//! `distkv bench` itself (one thread) and `redis-benchmark` (one thread),
//! with the same connections, requests in flight, key space and value
//! size. Then each server gets the same keys (`bench.0` … `bench.N-1`) with
//! 100-byte values, and its resident memory is read from `/proc`. The
//! table at the end has the ratios; docs/perf.md keeps the figures.
//!
//! Beside the rates it reports the CPU time each server and each load
//! generator spent per request (from `/proc` and `getrusage`): the
//! generators share the machine with the servers, so on a small machine
//! a rate also says how much CPU the generator left the server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use distkv_node::addr::HostPort;

use crate::bench::{measure, BenchArgs, Test};

/// How long a server may take to start.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Value size of the memory test.
const MEMORY_VALUE: usize = 100;

/// A child process, killed when dropped.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Resident memory in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// CPU time (user + system) the process used so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        proc_cpu(&format!("/proc/{}/stat", self.child.id()))
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.what);
        }
        Ok(())
    }
}

/// User + system time from a `/proc/…/stat` file.
fn proc_cpu(stat: &str) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(stat).with_context(|| format!("cannot read {stat}"))?;
    stat_cpu(&text).with_context(|| format!("cannot read the CPU times in {stat}"))
}

/// User + system time of a `/proc/PID/stat` line: fields 14 and 15, in
/// clock ticks, counted after the command name (which may hold spaces
/// and parentheses).
fn stat_cpu(text: &str) -> Option<Duration> {
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos((utime + stime) * (1_000_000_000 / hz)))
}

/// CPU time (user + system) of the waited-for children of this process.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `ready` until it holds, failing after [`START_DEADLINE`] or when
/// the process exits.
async fn wait_ready(
    p: &mut Proc,
    mut ready: impl FnMut() -> bool,
    log: &Path,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !ready() {
        p.check_alive()
            .with_context(|| std::fs::read_to_string(log).unwrap_or_default())?;
        ensure!(
            t0.elapsed() < START_DEADLINE,
            "{} did not start within {START_DEADLINE:?}",
            p.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A fresh node of this binary with a data directory in `dir` and
/// `threads` request threads (`None`: its default).
async fn start_node(dir: &Path, port: u16, threads: Option<usize>) -> anyhow::Result<Proc> {
    let log = dir.join("node.log");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["-c", "/dev/null", "server", "--bind", "127.0.0.1"]);
    if let Some(n) = threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    let child = cmd
        .args([
            "--port",
            &port.to_string(),
            "--bus-port",
            "0",
            "-I",
            "Testing",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("compare1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start the node")?;
    let mut p = Proc {
        child,
        what: "the node",
    };
    // Ready when a connection gets a greeting that is not an error.
    let ready = || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        n > 0 && !buf[..n].windows(5).any(|w| w == b"error")
    };
    wait_ready(&mut p, ready, &log).await?;
    Ok(p)
}

/// A fresh `redis-server` keeping an append-only file in `dir`.
async fn start_redis(dir: &Path, port: u16) -> anyhow::Result<Proc> {
    let log = dir.join("redis.log");
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (Debian: apt-get install redis-server)")?;
    let mut p = Proc {
        child,
        what: "redis-server",
    };
    let ready = || redis_call(port, &[b"PING"]).is_ok_and(|r| r.starts_with(b"+PONG"));
    wait_ready(&mut p, ready, &log).await?;
    Ok(p)
}

/// One RESP command and the first reply bytes.
fn redis_call(port: u16, args: &[&[u8]]) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(&resp(args))?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A RESP array of bulk strings.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Writes `bench.0` … `bench.{n-1}` = `value` into Redis, pipelined.
fn fill_redis(port: u16, n: u64, value: &[u8]) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut rd = s.try_clone()?;
    const BATCH: u64 = 1000;
    let mut buf = Vec::new();
    let mut replies = vec![0u8; 5 * BATCH as usize];
    let mut k = 0;
    while k < n {
        let m = BATCH.min(n - k);
        buf.clear();
        for i in k..k + m {
            buf.extend_from_slice(&resp(&[b"SET", format!("bench.{i}").as_bytes(), value]));
        }
        s.write_all(&buf)?;
        // Every reply is `+OK\r\n`.
        rd.read_exact(&mut replies[..5 * m as usize])?;
        ensure!(replies.starts_with(b"+OK\r\n"), "redis refused a SET");
        k += m;
    }
    Ok(())
}

/// `redis-benchmark`'s requests per second for `test` with `args`' load.
fn redis_benchmark(port: u16, args: &BenchArgs, test: Test) -> anyhow::Result<f64> {
    let name = match test {
        Test::Set => "set",
        Test::Get => "get",
    };
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            name,
            "--csv",
        ])
        .args(["-n", &args.requests.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-P", &args.pipeline.to_string()])
        .args(["-r", &args.keyspace.to_string()])
        .args(["-d", &args.data_size.to_string()])
        .output()
        .context("cannot run redis-benchmark (Debian: apt-get install redis-server)")?;
    ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_csv_rate(&String::from_utf8_lossy(&out.stdout), name)
}

/// The requests per second of `test` in `redis-benchmark --csv` output
/// (`"SET","123456.78",…`).
fn parse_csv_rate(csv: &str, test: &str) -> anyhow::Result<f64> {
    csv.lines()
        .find_map(|l| {
            let mut fields = l.split(',').map(|f| f.trim_matches('"'));
            let name = fields.next()?;
            if !name.eq_ignore_ascii_case(test) {
                return None;
            }
            fields.next()?.parse().ok()
        })
        .with_context(|| format!("no {test} rate in redis-benchmark's output:\n{csv}"))
}

/// A fresh working directory.
fn workdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("distkv-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs the comparison and prints the table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = workdir()?;
    let res = compare(args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    res
}

async fn compare(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    {
        let (ndir, rdir) = (dir.join("node"), dir.join("redis"));
        std::fs::create_dir_all(&ndir)?;
        std::fs::create_dir_all(&rdir)?;
        let (nport, rport) = (free_port()?, free_port()?);
        let node = start_node(&ndir, nport, args.node_threads).await?;
        let redis = start_redis(&rdir, rport).await?;
        let addr = HostPort::new("127.0.0.1", nport);
        for pipeline in [1, 16] {
            for test in [Test::Set, Test::Get] {
                let mut a = args.clone();
                a.pipeline = pipeline;
                let (node0, gen0) = (node.cpu()?, proc_cpu("/proc/self/stat")?);
                let ours = measure(&a, addr.clone(), test).await?.rate;
                let (node1, gen1) = (node.cpu()?, proc_cpu("/proc/self/stat")?);
                let (redis0, rgen0) = (redis.cpu()?, children_cpu());
                let theirs = redis_benchmark(rport, &a, test)?;
                let (redis1, rgen1) = (redis.cpu()?, children_cpu());
                let per = |d: Duration| d.as_secs_f64() * 1e6 / a.requests as f64;
                let cpu = Cpu {
                    node: per(node1 - node0),
                    redis: per(redis1 - redis0),
                    bench: per(gen1 - gen0),
                    redis_benchmark: per(rgen1 - rgen0),
                };
                let what = format!("{test:?}, {pipeline} in flight").to_lowercase();
                eprintln!(
                    "{what}: distkv {ours:.0}/s, Redis {theirs:.0}/s; CPU per request: node \
                     {:.2} µs, Redis {:.2} µs, distkv bench {:.2} µs, redis-benchmark {:.2} µs",
                    cpu.node, cpu.redis, cpu.bench, cpu.redis_benchmark
                );
                rows.push((
                    what,
                    format!("{ours:.0}/s"),
                    format!("{theirs:.0}/s"),
                    ours / theirs,
                    Some(cpu),
                ));
            }
        }
    }
    if args.memory_keys > 0 {
        let n = args.memory_keys;
        let (ndir, rdir) = (dir.join("node-mem"), dir.join("redis-mem"));
        std::fs::create_dir_all(&ndir)?;
        std::fs::create_dir_all(&rdir)?;
        let (nport, rport) = (free_port()?, free_port()?);
        let node = start_node(&ndir, nport, args.node_threads).await?;
        let redis = start_redis(&rdir, rport).await?;
        let mut fill = args.clone();
        fill.requests = n as usize;
        fill.keyspace = n;
        fill.sequential = true;
        fill.pipeline = 16;
        fill.data_size = MEMORY_VALUE;
        measure(&fill, HostPort::new("127.0.0.1", nport), Test::Set).await?;
        fill_redis(rport, n, &[b'x'; MEMORY_VALUE])?;
        let raw: u64 = (0..n)
            .map(|i| format!("bench.{i}").len() as u64)
            .sum::<u64>()
            + n * MEMORY_VALUE as u64;
        let (ours, theirs) = (node.rss()?, redis.rss()?);
        let mb = |b: u64| b as f64 / 1e6;
        let what = format!(
            "memory, {n} keys × {MEMORY_VALUE} B (RSS; raw {:.0} MB)",
            mb(raw)
        );
        rows.push((
            what,
            format!("{:.0} MB = {:.1} × raw", mb(ours), ours as f64 / raw as f64),
            format!(
                "{:.0} MB = {:.1} × raw",
                mb(theirs),
                theirs as f64 / raw as f64
            ),
            ours as f64 / theirs as f64,
            None,
        ));
    }
    let threads = args.node_threads.map_or(String::new(), |n| {
        format!(
            " (node: {n} request thread{})",
            if n == 1 { "" } else { "s" }
        )
    });
    println!(
        "| workload, {} connections | distkv{threads} | Redis | ratio | server CPU per request, \
         distkv / Redis | load generator CPU per request, distkv bench / redis-benchmark |",
        args.clients
    );
    println!("|---|---|---|---|---|---|");
    for (what, ours, theirs, ratio, cpu) in rows {
        let (server, generator) = cpu.map_or((String::new(), String::new()), |c| {
            (
                format!("{:.2} / {:.2} µs", c.node, c.redis),
                format!("{:.2} / {:.2} µs", c.bench, c.redis_benchmark),
            )
        });
        println!("| {what} | {ours} | {theirs} | {ratio:.2} | {server} | {generator} |");
    }
    Ok(())
}

/// CPU time per request of one workload, in µs.
struct Cpu {
    node: f64,
    redis: f64,
    /// `distkv bench` (this process).
    bench: f64,
    redis_benchmark: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_rates_are_read() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"164203.61\",\"0.281\"\n";
        assert_eq!(parse_csv_rate(csv, "set").unwrap(), 164_203.61);
        assert!(parse_csv_rate(csv, "get").is_err());
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        // SAFETY: as in `stat_cpu`.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = format!(
            "42 (a (b) c) S 1 42 42 0 -1 4194560 9 0 0 0 {} {} 0 0 20 0 1",
            3 * hz,
            hz / 2
        );
        assert_eq!(stat_cpu(&line), Some(Duration::from_millis(3500)));
        assert_eq!(stat_cpu("42 (x) S 1"), None);
        let own = proc_cpu("/proc/self/stat").unwrap();
        let t0 = Instant::now();
        while proc_cpu("/proc/self/stat").unwrap() == own && t0.elapsed() < Duration::from_secs(10)
        {
        }
        assert!(
            proc_cpu("/proc/self/stat").unwrap() > own,
            "a busy process's CPU time grows"
        );
    }

    #[test]
    fn resp_arrays_are_bulk_strings() {
        assert_eq!(
            resp(&[b"SET", b"k", b"v"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
        );
    }
}
