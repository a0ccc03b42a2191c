//! Hosts for real processes: Linux network namespaces joined by a bridge,
//! so that each node has an address of its own and a partition is real —
//! the kernel drops the packets (blackhole routes, or routing rules for
//! one direction of one kind of link), while the test, in the root
//! namespace, still reaches every host through the bridge.
//!
//! The network of [`Network::make`]: a bridge `dkvbr<tag>` with
//! `10.A.B.254/24` in the root namespace; namespaces `dkv<tag>-<i>` (i =
//! 1..n), each with a veth pair whose host side `dkv<tag>v<i>` is a port of
//! the bridge and whose other side is the namespace's `eth0` with
//! `10.A.B.i/24`. The tag is the test's process id and a letter counting
//! the networks this process made (tests of one binary run at once), and
//! `A`, `B` are derived from it (a subnet another network uses is
//! skipped), so that test binaries running at the same time do not
//! collide. Dropping the [`Network`] removes the namespaces, the veths and
//! the bridge, however the test ends; kill the processes in it first.
//!
//! This needs root and `ip` (iproute2): [`available`] says why not, and a
//! test then prints the reason and skips (or falls back to something
//! weaker) — unless `DISTKV_REQUIRE_NETNS` is set, when [`unavailable`]
//! fails it.
//!
//! A process started with `ip netns exec` runs in a mount namespace of its
//! own, a copy of the root namespace's made at its start: a file system
//! mounted before it starts is visible to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context, Result};

/// Runs `ip ARGS`, failing with its stderr unless it succeeds.
pub fn ip(args: &[&str]) -> Result<()> {
    ip_out(args).map(drop)
}

/// `ip ARGS`' standard output.
pub fn ip_out(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether namespaces can be tried here: `Err` says why not (not root, or
/// no `ip`).
pub fn available() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot run ip: {e}")),
    }
}

/// Says that network namespaces are unavailable (`why`) — an error if
/// `DISTKV_REQUIRE_NETNS` is set.
pub fn unavailable(why: &str) -> Result<()> {
    ensure!(
        std::env::var_os("DISTKV_REQUIRE_NETNS").is_none(),
        "network namespaces unavailable ({why}) but DISTKV_REQUIRE_NETNS is set"
    );
    Ok(())
}

/// What the kernel does with bridged IPv4 traffic, for failure messages
/// (with `br_netfilter`, bridged frames pass iptables' FORWARD chain).
pub fn bridge_netfilter() -> String {
    match std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables") {
        Ok(v) => format!(
            "net.bridge.bridge-nf-call-iptables={} (if 1, an iptables FORWARD policy DROP, \
             e.g. Docker's, drops traffic between the namespaces)",
            v.trim()
        ),
        Err(_) => "br_netfilter not loaded".into(),
    }
}

/// The namespace process `pid` runs in, as `ip netns identify` names it
/// (empty: none of the named ones).
pub fn identify(pid: u32) -> Result<String> {
    Ok(ip_out(&["netns", "identify", &pid.to_string()])?
        .trim()
        .to_string())
}

/// The TCP connections in state ESTABLISHED in the network namespace of
/// process `pid` (from `/proc/PID/net/tcp`, which shows that namespace's
/// table) whose remote address is one of `remotes`, as `(local, remote)`.
pub fn established(pid: u32, remotes: &[Ipv4Addr]) -> Result<Vec<(SocketAddr, SocketAddr)>> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    // `0100007F:0CEA`: the address as the kernel's u32, the port in hex.
    let parse = |s: &str| -> Result<SocketAddr> {
        let (a, p) = s.split_once(':').context("odd /proc/net/tcp")?;
        let ip = Ipv4Addr::from(u32::from_str_radix(a, 16)?.to_ne_bytes());
        Ok(SocketAddr::from((ip, u16::from_str_radix(p, 16)?)))
    };
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(&"01")) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        let (local, remote) = (parse(local)?, parse(remote)?);
        if remotes.iter().any(|a| remote.ip() == *a) {
            out.push((local, remote));
        }
    }
    Ok(out)
}

/// Networks this process made so far (each gets a letter of its own).
static MADE: AtomicU32 = AtomicU32::new(0);

/// `n` hosts (network namespaces) on a bridge. Dropping it removes them.
#[derive(Debug)]
pub struct Network {
    tag: String,
    net: [u8; 2],
    hosts: usize,
    bridge: bool,
    namespaces: Vec<usize>,
    veths: Vec<usize>,
}

impl Network {
    /// Makes `hosts` namespaces (at most 26 networks per process, 253
    /// hosts each), the bridge and the veth pairs. What was made before a
    /// step failed is removed again.
    pub fn make(hosts: usize) -> Result<Network> {
        ensure!((1..254).contains(&hosts), "{hosts} hosts");
        let pid = std::process::id();
        let k = MADE.fetch_add(1, Ordering::Relaxed);
        ensure!(k < 26, "too many networks in one process");
        let letter = char::from(b'a' + u8::try_from(k)?);
        // A subnet of 10.200.0.0 – 10.249.249.0 that no route uses yet.
        let mut x = pid.wrapping_mul(26).wrapping_add(k);
        let net = loop {
            let net = [200 + u8::try_from(x % 50)?, u8::try_from(x / 50 % 250)?];
            let subnet = format!("10.{}.{}.0/24", net[0], net[1]);
            if ip_out(&["-4", "route", "show", "root", &subnet])?
                .trim()
                .is_empty()
            {
                break net;
            }
            x = x.wrapping_add(1);
        };
        let mut n = Network {
            tag: format!("{pid}{letter}"),
            net,
            hosts,
            bridge: false,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        n.build()?;
        Ok(n)
    }

    fn build(&mut self) -> Result<()> {
        for i in 1..=self.hosts {
            ip(&["netns", "add", &self.ns(i)])?;
            self.namespaces.push(i);
        }
        let br = self.bridge_name();
        ip(&["link", "add", &br, "type", "bridge"])?;
        self.bridge = true;
        let br_addr = format!("{}/24", self.addr(254));
        ip(&["addr", "add", &br_addr, "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=self.hosts {
            let (ns, veth) = (self.ns(i), self.veth(i));
            let peer = format!("dkv{}p{i}", self.tag);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &ns,
            ])?;
            self.veths.push(i);
            ip(&["link", "set", &veth, "master", &br])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            let a = format!("{}/24", self.host(i));
            ip(&["-n", &ns, "addr", "add", &a, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The namespace of host `i` (1-based).
    pub fn ns(&self, i: usize) -> String {
        format!("dkv{}-{i}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("dkv{}v{i}", self.tag)
    }

    fn bridge_name(&self) -> String {
        format!("dkvbr{}", self.tag)
    }

    /// `10.A.B.i`.
    pub fn addr(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net[0], self.net[1], i)
    }

    /// The address of host `i` (1-based).
    pub fn host(&self, i: usize) -> Ipv4Addr {
        self.addr(u8::try_from(i).expect("at most 253 hosts"))
    }

    /// Cuts host `i` off from the others (`add`) or heals that (`del`):
    /// blackhole routes on both sides, so that no packet passes either way
    /// (the bridge's address, where the test is, stays reachable).
    pub fn routes(&self, i: usize, op: &str) -> Result<()> {
        for j in (1..=self.hosts).filter(|&j| j != i) {
            let to_j = format!("{}/32", self.host(j));
            ip(&["-n", &self.ns(i), "route", op, "blackhole", &to_j])?;
            let to_i = format!("{}/32", self.host(i));
            ip(&["-n", &self.ns(j), "route", op, "blackhole", &to_i])?;
        }
        Ok(())
    }

    /// Blocks (`add`) or unblocks (`del`) the TCP connections from host
    /// `from` to port `port` of host `to`, and only those: routing rules in
    /// `from`'s namespace drop its packets to that port and the packets
    /// coming back from it, while `to`'s connections to `from` (whose
    /// packets go to and come from other ports) pass.
    pub fn port_rule(&self, from: usize, to: usize, port: u16, op: &str) -> Result<()> {
        let to = format!("{}/32", self.host(to));
        let port = port.to_string();
        let ns = self.ns(from);
        for (dir, p) in [("to", "dport"), ("from", "sport")] {
            ip(&[
                "-n",
                &ns,
                "rule",
                op,
                dir,
                &to,
                "ipproto",
                "tcp",
                p,
                &port,
                "blackhole",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        for &i in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", &self.ns(i)]) {
                errors.push(format!("{e:#}"));
            }
        }
        // Removing a namespace removes its end of the veth, and with it the
        // pair, but asynchronously: remove the host ends ourselves (they
        // may be gone already).
        for &i in &self.veths {
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        if self.bridge {
            if let Err(e) = ip(&["link", "del", &self.bridge_name()]) {
                errors.push(format!("{e:#}"));
            }
        }
        if !errors.is_empty() {
            eprintln!("tearing down the test network: {}", errors.join("; "));
        }
    }
}
