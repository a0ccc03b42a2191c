//! Network addresses as users write them: `host:port` with a host name, an
//! IPv4 address or an IPv6 address in brackets (`[::1]:27586`).
//!
//! Every place that takes or prints an address goes through here, so that
//! IPv6 works everywhere the same way: a bare host may be written with or
//! without brackets (`::1` or `[::1]`), a host followed by a port needs
//! them (`::1:27587` is ambiguous and refused with a hint), and every
//! `host:port` this program prints or announces brackets an IPv6 host.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Why an address could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {addr:?}: {reason}")]
pub struct AddrError {
    /// The address as given.
    pub addr: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A host (name, IPv4 or IPv6 address; stored without brackets) and a
/// port. Displays as `host:port`, an IPv6 host in brackets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// The host, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// `host` (brackets optional) and `port`.
    pub fn new(host: &str, port: u16) -> HostPort {
        HostPort {
            host: unbracket(host.trim()).to_owned(),
            port,
        }
    }

    /// Reads `host:port` (`[v6]:port` for IPv6).
    pub fn parse(addr: &str) -> Result<HostPort, AddrError> {
        let bad = |reason| AddrError {
            addr: addr.to_owned(),
            reason,
        };
        let s = addr.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("no closing bracket"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad("expected [host]:port"))?;
            (host, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| bad("expected host:port"))?;
            if host.contains(':') {
                return Err(bad(
                    "an IPv6 address followed by a port needs brackets, e.g. [::1]:27587",
                ));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(['[', ']', '/', ' ']) {
            return Err(bad("bad host"));
        }
        let port = port.parse().map_err(|_| bad("bad port"))?;
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }

    /// Reads `host:port`, or a bare host (`name`, `1.2.3.4`, `::1`,
    /// `[::1]`) that gets `default_port`.
    pub fn parse_or_port(addr: &str, default_port: u16) -> Result<HostPort, AddrError> {
        let s = addr.trim();
        let bare = match s.strip_prefix('[') {
            Some(rest) => rest.ends_with(']'),
            // No colon, or several: a name, an IPv4 address, a bare IPv6 one.
            None => s.matches(':').count() != 1,
        };
        if !bare {
            return HostPort::parse(s);
        }
        let host = unbracket(s);
        if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
            return Err(AddrError {
                addr: addr.to_owned(),
                reason: "bad host",
            });
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(AddrError {
                addr: addr.to_owned(),
                reason: "neither host:port nor an IPv6 address",
            });
        }
        Ok(HostPort::new(host, default_port))
    }

    /// For connecting or binding: `(host, port)` without brackets, as
    /// tokio and std resolve it.
    pub fn as_tuple(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether the host is "all addresses" (`0.0.0.0`, `::`, or empty).
    pub fn is_unspecified(&self) -> bool {
        is_unspecified(&self.host)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracket(&self.host), self.port)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> HostPort {
        HostPort {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// `::1` → `[::1]`: a host as it is written before `:port`. Other hosts
/// (and ones already in brackets) stay as they are.
pub fn bracket(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// `[::1]` → `::1`: a host as resolvers take it.
pub fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Whether `host` means "all addresses": `0.0.0.0`, `::`, `[::]`, or
/// nothing.
pub fn is_unspecified(host: &str) -> bool {
    let h = unbracket(host.trim());
    h.is_empty() || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// `host:port` for printing: brackets around an IPv6 host.
pub fn join(host: &str, port: u16) -> String {
    HostPort::new(host, port).to_string()
}

/// Binds `host` (name or address; IPv6 with or without brackets) and
/// `port` (clients, the embedded broker). `::` is dual stack: it accepts IPv4 clients too,
/// whatever the system's default for IPv6 sockets.
pub async fn bind(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let host = unbracket(host.trim());
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => bind_dual_stack(port),
        _ => tokio::net::TcpListener::bind((host, port)).await,
    }
}

/// A listener on `[::]:port` with IPV6_V6ONLY off.
fn bind_dual_stack(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> Result<(String, u16), &'static str> {
        HostPort::parse(s)
            .map(|a| (a.host, a.port))
            .map_err(|e| e.reason)
    }

    #[test]
    fn host_port_parses_names_v4_and_bracketed_v6() {
        assert_eq!(hp("n1.example:27587"), Ok(("n1.example".into(), 27587)));
        assert_eq!(hp(" 10.0.0.1:1 "), Ok(("10.0.0.1".into(), 1)));
        assert_eq!(hp("[::1]:27586"), Ok(("::1".into(), 27586)));
        assert_eq!(hp("[fe80::1%eth0]:5"), Ok(("fe80::1%eth0".into(), 5)));
        assert!(hp("::1:27587").unwrap_err().contains("brackets"));
        assert_eq!(hp("n1.example"), Err("expected host:port"));
        assert_eq!(hp(":5"), Err("no host"));
        assert_eq!(hp("[]:5"), Err("no host"));
        assert_eq!(hp("[::1]5"), Err("expected [host]:port"));
        assert_eq!(hp("[::1:5"), Err("no closing bracket"));
        assert_eq!(hp("h:x"), Err("bad port"));
        assert_eq!(hp("h:70000"), Err("bad port"));
    }

    #[test]
    fn a_bare_host_gets_the_default_port() {
        let p = |s: &str| HostPort::parse_or_port(s, 9).map(|a| a.to_string());
        assert_eq!(p("h").as_deref(), Ok("h:9"));
        assert_eq!(p("h:1").as_deref(), Ok("h:1"));
        assert_eq!(p("::1").as_deref(), Ok("[::1]:9"));
        assert_eq!(p("[::1]").as_deref(), Ok("[::1]:9"));
        assert_eq!(p("[::1]:1").as_deref(), Ok("[::1]:1"));
        assert_eq!(p("::").as_deref(), Ok("[::]:9"));
        assert!(p("a:b:c").is_err());
        assert!(p("[]").is_err());
    }

    #[test]
    fn printing_brackets_v6_only() {
        assert_eq!(join("::1", 5), "[::1]:5");
        assert_eq!(join("[::1]", 5), "[::1]:5");
        assert_eq!(join("localhost", 5), "localhost:5");
        assert_eq!(join("127.0.0.1", 5), "127.0.0.1:5");
        let v6: SocketAddr = "[::1]:7".parse().expect("v6");
        assert_eq!(HostPort::from(v6).to_string(), "[::1]:7");
        assert_eq!(HostPort::new("[::1]", 7).as_tuple(), ("::1", 7));
        assert!(is_unspecified("::") && is_unspecified("[::]") && is_unspecified("0.0.0.0"));
        assert!(!is_unspecified("::1") && !is_unspecified("localhost"));
    }

    /// `--bind ::` takes IPv4 and IPv6 clients on one port; `[::1]` and
    /// `::1` are the same host.
    #[tokio::test]
    async fn binding_all_ipv6_addresses_is_dual_stack() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipping: no IPv6 loopback address (::1)");
            return;
        }
        let l = bind("::", 0).await.expect("bind ::");
        let port = l.local_addr().expect("address").port();
        for to in ["127.0.0.1", "::1"] {
            let c = tokio::net::TcpStream::connect((to, port));
            let (c, a) = tokio::join!(c, l.accept());
            c.unwrap_or_else(|e| panic!("connect via {to}: {e}"));
            a.expect("accept");
        }
        let l = bind("[::1]", 0).await.expect("bind [::1]");
        assert!(l.local_addr().expect("address").is_ipv6());
    }
}
