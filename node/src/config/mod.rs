//! Configuration in DistKV's YAML keys.
//!
//! The configuration is a YAML tree: the built-in defaults ([`keys`], the
//! one place where keys and defaults are written down), then the user's
//! file merged over them (user values win, maps merge recursively), then
//! `-C key=value` overrides, whose key is a dotted path
//! (`server.bind_default.port`) and whose value is parsed as a YAML scalar
//! (`27590` is a number, `[a, b]` a list, `x` a string). A `-C key` without
//! `=` deletes the key, which restores its default.
//!
//! The merged tree is then read into the typed [`keys::Keys`]: a wrong type
//! is an error that names the key and the type expected; a key we do not
//! know is reported by [`Config::unknown_keys`] (the command line warns
//! about each). The typed views the node uses ([`ServerSettings`],
//! [`ConnectSettings`]) check every value's range.

pub mod keys;

use std::path::Path as FsPath;
use std::time::Duration;

use distkv_log::RecoveryMode;
use distkv_model::budget::{MAX_CLIENT_FRAME, MAX_MESSAGE_BYTES, MAX_NESTING};
use yaml_serde::{Mapping, Value as Yaml};

use crate::rules::code::{Lang, ScriptSettings};
use distkv_client::tls::{ClientTls, ServerTls};
use keys::{FsyncKey, Keys, LangKey, MqttKeys, RecoveryKey, Seconds, SslFiles, SslKeys};

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed.
    #[error("invalid YAML in {origin}: {source}")]
    Yaml {
        /// Where it came from.
        origin: String,
        /// Why.
        source: yaml_serde::Error,
    },
    /// A key has a value of the wrong type, or out of its range.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The merged configuration tree.
#[derive(Debug, Clone)]
pub struct Config {
    tree: Yaml,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tree: yaml_serde::to_value(Keys::default()).expect("the defaults serialize"),
        }
    }
}

/// Merges `over` into `base`: maps recursively, anything else replaced.
fn merge(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Mapping(b), Yaml::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl Config {
    /// Merges a YAML file over the current tree.
    pub fn merge_file(&mut self, file: &FsPath) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Io {
            file: file.display().to_string(),
            source,
        })?;
        self.merge_str(&text, &file.display().to_string())
    }

    /// Merges YAML text over the current tree.
    pub fn merge_str(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let y: Yaml = yaml_serde::from_str(text).map_err(|source| ConfigError::Yaml {
            origin: origin.to_string(),
            source,
        })?;
        match y {
            Yaml::Null => Ok(()),
            y @ Yaml::Mapping(_) => {
                merge(&mut self.tree, y);
                Ok(())
            }
            _ => Err(invalid(origin, "the top level must be a map")),
        }
    }

    /// Applies one `-C key=value` (or `-C key` to restore the default).
    pub fn set_override(&mut self, spec: &str) -> Result<(), ConfigError> {
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (spec, None),
        };
        let parts: Vec<&str> = key.split('.').collect();
        if key.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(key, "empty key element"));
        }
        let (last, parents) = parts.split_last().expect("non-empty");
        let mut node = &mut self.tree;
        for p in parents {
            if !matches!(node, Yaml::Mapping(_)) {
                *node = Yaml::Mapping(Mapping::new());
            }
            let Yaml::Mapping(m) = node else {
                unreachable!()
            };
            node = m
                .entry(Yaml::String(p.to_string()))
                .or_insert_with(|| Yaml::Mapping(Mapping::new()));
        }
        if !matches!(node, Yaml::Mapping(_)) {
            *node = Yaml::Mapping(Mapping::new());
        }
        let Yaml::Mapping(m) = node else {
            unreachable!()
        };
        let k = Yaml::String(last.to_string());
        match value {
            None => {
                // Back to the default, if the key has one.
                let default = Config::default();
                match default.get(key) {
                    Some(d) => {
                        m.insert(k, d.clone());
                    }
                    None => {
                        m.remove(&k);
                    }
                }
            }
            Some(v) => {
                let parsed: Yaml = yaml_serde::from_str(v).unwrap_or(Yaml::String(v.to_string()));
                m.insert(k, parsed);
            }
        }
        Ok(())
    }

    /// The whole merged tree (`distkv dump cfg`).
    pub fn tree(&self) -> &Yaml {
        &self.tree
    }

    /// The value at a dotted key.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        key.split('.').try_fold(&self.tree, |n, p| n.get(p))
    }

    /// The tree read into typed keys, and the dotted names of the keys we
    /// do not know (ignored).
    fn read(&self) -> Result<(Keys, Vec<String>), ConfigError> {
        let mut unknown = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(self.tree.clone(), &mut note);
        let keys = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?;
        Ok((keys, unknown))
    }

    /// The typed keys.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        Ok(self.read()?.0)
    }

    /// Keys in the tree that we do not know, dotted (they are ignored).
    pub fn unknown_keys(&self) -> Result<Vec<String>, ConfigError> {
        Ok(self.read()?.1)
    }

    /// The server's settings, every value checked.
    pub fn server(&self) -> Result<ServerSettings, ConfigError> {
        ServerSettings::from_keys(&self.keys()?)
    }

    /// The client's connection settings.
    pub fn connect(&self) -> Result<ConnectSettings, ConfigError> {
        let c = self.keys()?.connect;
        Ok(ConnectSettings {
            host: c.host,
            port: c.port,
            init_timeout: seconds_in("connect.init_timeout", c.init_timeout, 0.0..=3600.0)?,
            tls: client_tls("connect.ssl", &c.ssl)?,
        })
    }
}

/// `connect.ssl`: `true` trusts the system's CAs; a map names a `ca` (else
/// the system's) and optionally a client `cert` with its `key`.
fn client_tls(key: &str, ssl: &SslKeys) -> Result<Option<ClientTls>, ConfigError> {
    match ssl {
        SslKeys::Flag(false) => Ok(None),
        SslKeys::Flag(true) => Ok(Some(ClientTls::default())),
        SslKeys::Files(f) => Ok(Some(ClientTls {
            ca: f.ca.clone(),
            identity: identity(key, f)?,
        })),
    }
}

/// A certificate and its key, both or neither.
fn identity(
    key: &str,
    f: &SslFiles,
) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>, ConfigError> {
    match (&f.cert, &f.key) {
        (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
        (None, None) => Ok(None),
        _ => Err(invalid(
            key,
            "cert and key go together: give both or neither",
        )),
    }
}

/// `server.bind_default.ssl`: DistKV's `{cert, key}`, plus `ca` to
/// require client certificates.
fn server_tls(key: &str, ssl: &SslKeys) -> Result<Option<ServerTls>, ConfigError> {
    match ssl {
        SslKeys::Flag(false) => Ok(None),
        SslKeys::Flag(true) => Err(invalid(
            key,
            "a server needs its certificate: give {cert: FILE, key: FILE}",
        )),
        SslKeys::Files(f) => match identity(key, f)? {
            Some((cert, k)) => Ok(Some(ServerTls {
                cert,
                key: k,
                client_ca: f.ca.clone(),
            })),
            None => Err(invalid(
                key,
                "a server needs its certificate: give {cert: FILE, key: FILE}",
            )),
        },
    }
}

/// `server.bus.ssl`: the mesh needs all of `cert`, `key` (this node's
/// broker and its links to the others) and `ca` (the other nodes'); an
/// external `mqtts://` broker needs none (the system's CAs) but takes them.
fn bus_tls(ssl: &SslKeys, mesh: bool) -> Result<Option<BusTls>, ConfigError> {
    let key = "server.bus.ssl";
    let f = match ssl {
        SslKeys::Flag(false) => return Ok(None),
        SslKeys::Flag(true) if mesh => {
            return Err(invalid(
                key,
                "the mesh needs {cert: FILE, key: FILE, ca: FILE}",
            ))
        }
        SslKeys::Flag(true) => return Ok(Some(BusTls::default())),
        SslKeys::Files(f) => f,
    };
    let identity = identity(key, f)?;
    if mesh && (identity.is_none() || f.ca.is_none()) {
        return Err(invalid(
            key,
            "the mesh needs {cert: FILE, key: FILE, ca: FILE}",
        ));
    }
    Ok(Some(BusTls {
        identity,
        ca: f.ca.clone(),
    }))
}

/// `v` if it lies in `range`.
fn int_in(key: &str, v: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
    if !range.contains(&v) {
        return Err(invalid(
            key,
            format!(
                "{v} is out of range: must be from {} to {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(v)
}

/// `v` seconds as a duration, if they lie in `range`.
fn seconds_in(
    key: &str,
    Seconds(v): Seconds,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Duration, ConfigError> {
    if !v.is_finite() || !range.contains(&v) {
        return Err(invalid(
            key,
            format!(
                "{v} s is out of range: must be from {} to {} s",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A duration in ms, at least 1 (`server.ping.*`, `server.delete.*`).
fn ms(key: &str, s: Seconds) -> Result<u64, ConfigError> {
    Ok((seconds_in(key, s, 0.0..=1e6)?.as_millis() as u64).max(1))
}

/// The longest `server.limits.idle_timeout`: 30 days.
const MAX_IDLE_TIMEOUT_S: f64 = 30.0 * 86_400.0;

impl ServerSettings {
    /// Checks and resolves the `server` keys.
    pub fn from_keys(k: &Keys) -> Result<ServerSettings, ConfigError> {
        let s = &k.server;
        // `server.bind[0]` merged over `server.bind_default`, as in DistKV.
        let first = s.bind.first();
        let host = first
            .and_then(|b| b.host.clone())
            .or_else(|| s.bind_default.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = first
            .and_then(|b| b.port)
            .or(s.bind_default.port)
            .ok_or_else(|| invalid("server.bind_default.port", "must be a port number"))?;
        let ssl = first
            .and_then(|b| b.ssl.clone())
            .or_else(|| s.bind_default.ssl.clone())
            .unwrap_or_default();
        let tls = server_tls("server.bind_default.ssl", &ssl)?;
        let buffer = int_in("server.buffer", s.buffer, 0..=1 << 20)?;
        if (1..4).contains(&buffer) {
            return Err(invalid("server.buffer", "must be 0 or at least 4"));
        }
        let l = &s.limits;
        Ok(ServerSettings {
            host,
            port,
            tls,
            buffer,
            // Clients' limits keep every value inside the node's budget
            // (see `distkv_model::budget`).
            max_frame: int_in(
                "server.limits.max_frame",
                l.max_frame,
                4096..=MAX_CLIENT_FRAME as u64,
            )? as usize,
            max_depth: int_in(
                "server.limits.max_depth",
                l.max_depth,
                8..=MAX_NESTING as u64,
            )? as usize,
            max_connections: int_in(
                "server.limits.max_connections",
                l.max_connections,
                1..=1_000_000,
            )? as usize,
            log_records: int_in("server.limits.log_records", l.log_records, 1024..=1 << 32)?
                as usize,
            // Room for at least one change of the largest size.
            log_bytes: int_in(
                "server.limits.log_bytes",
                l.log_bytes,
                MAX_MESSAGE_BYTES as u64..=1 << 40,
            )? as usize,
            threads: int_in("server.threads", s.threads, 0..=1024)? as usize,
            data_dir: s.data_dir.clone(),
            persist: PersistSettings::from_keys(&s.persist)?,
            cluster: ClusterSettings::from_keys(s)?,
            connections: ConnectionLimits::from_keys(l)?,
            export: ExportSettings {
                dir: s.export.dir.clone(),
                absolute: s.export.absolute,
            },
            scripts: script_settings(&s.scripts)?,
        })
    }
}

/// `server.scripts.*`: Python only in a build with the `python` feature.
fn script_settings(k: &keys::ScriptsKeys) -> Result<ScriptSettings, ConfigError> {
    let lang = match k.lang {
        LangKey::Rhai => Lang::Rhai,
        LangKey::Python => Lang::Python,
        LangKey::Auto => Lang::Auto,
    };
    if !lang.available() {
        return Err(invalid(
            "server.scripts.lang",
            "Python code needs a distkv built with the `python` feature \
             (cargo build -p distkv-tools --features python)",
        ));
    }
    Ok(ScriptSettings {
        lang,
        python_timeout: seconds_in(
            "server.scripts.python_timeout",
            k.python_timeout,
            0.001..=60.0,
        )?,
    })
}

impl ConnectionLimits {
    fn from_keys(l: &keys::LimitsKeys) -> Result<ConnectionLimits, ConfigError> {
        let key = "server.limits.idle_timeout";
        let idle_timeout = if l.idle_timeout.0 == 0.0 {
            None
        } else {
            Some(seconds_in(key, l.idle_timeout, 1.0..=MAX_IDLE_TIMEOUT_S)?)
        };
        Ok(ConnectionLimits {
            max_per_addr: int_in(
                "server.limits.max_connections_per_addr",
                l.max_connections_per_addr,
                1..=1_000_000,
            )? as usize,
            loopback_exempt: l.loopback_exempt,
            handshake_timeout: seconds_in(
                "server.limits.handshake_timeout",
                l.handshake_timeout,
                0.1..=3600.0,
            )?,
            idle_timeout,
        })
    }
}

impl ClusterSettings {
    fn from_keys(s: &keys::ServerKeys) -> Result<ClusterSettings, ConfigError> {
        if s.root.is_empty() {
            return Err(invalid("server.root", "must be a list of strings"));
        }
        Ok(ClusterSettings {
            root: s.root.join("/"),
            bus_port: s.bus.port,
            peers: s.bus.peers.clone(),
            mqtt: s.mqtt.as_ref().map(|m| match m {
                MqttKeys::Url(u) | MqttKeys::Map { uri: u } => u.clone(),
            }),
            advertise: s.bus.advertise.clone(),
            tls: bus_tls(&s.bus.ssl, s.mqtt.is_none())?,
            cycle_ms: ms("server.ping.cycle", s.ping.cycle)?,
            gap_ms: ms("server.ping.gap", s.ping.gap)?,
            delete_cycle_ms: ms("server.delete.cycle", s.delete.cycle)?,
            delete_gap_ms: ms("server.delete.gap", s.delete.gap)?,
        })
    }
}

impl PersistSettings {
    fn from_keys(p: &keys::PersistKeys) -> Result<PersistSettings, ConfigError> {
        let key = |k: &str| format!("server.persist.{k}");
        Ok(PersistSettings {
            fsync: match p.fsync {
                FsyncKey::Always => FsyncSetting::Always,
                FsyncKey::Interval => FsyncSetting::Interval(seconds_in(
                    &key("fsync_interval"),
                    p.fsync_interval,
                    0.001..=3600.0,
                )?),
                FsyncKey::Never => FsyncSetting::Never,
            },
            recovery: match p.recovery {
                RecoveryKey::Truncate => RecoveryMode::TruncateTail,
                RecoveryKey::Strict => RecoveryMode::Strict,
                RecoveryKey::Salvage => RecoveryMode::Salvage,
            },
            stop_retry: seconds_in(&key("stop_retry"), p.stop_retry, 0.0..=3600.0)?,
            segment_max_bytes: int_in(
                &key("segment_max_bytes"),
                p.segment_max_bytes,
                1024..=1 << 40,
            )?,
            segment_max_age: seconds_in(&key("segment_max_age"), p.segment_max_age, 1.0..=1e9)?,
            snapshot_records: int_in(&key("snapshot_records"), p.snapshot_records, 10..=1 << 40)?,
            snapshot_interval: seconds_in(
                &key("snapshot_interval"),
                p.snapshot_interval,
                1.0..=1e9,
            )?,
            // 0: keep only what the older snapshot needs.
            retention_max_age: seconds_in(
                &key("retention_max_age"),
                p.retention_max_age,
                0.0..=1e10,
            )?,
            retention_max_bytes: int_in(
                &key("retention_max_bytes"),
                p.retention_max_bytes,
                0..=1 << 50,
            )?,
            history_index: p.history_index,
        })
    }
}

/// What a server listens on and its limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind (`server.bind_default.host`; DistKV ignored it, we
    /// honour it).
    pub host: String,
    /// Client port (`server.bind_default.port`).
    pub port: u16,
    /// TLS on the client port (`server.bind_default.ssl`); `None`: plain.
    pub tls: Option<ServerTls>,
    /// Flow-control window offered in the greeting (`server.buffer`).
    pub buffer: u64,
    /// Largest accepted client message in bytes.
    pub max_frame: usize,
    /// Deepest accepted nesting in a client message.
    pub max_depth: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Records kept in the in-memory event log.
    pub log_records: usize,
    /// Bytes of event data kept in the in-memory event log.
    pub log_bytes: usize,
    /// Worker threads (`server.threads`; 0 = one per core).
    pub threads: usize,
    /// Data directory (`server.data_dir`; `None`: `./distkv-data/NAME`).
    pub data_dir: Option<std::path::PathBuf>,
    /// How the data directory is kept (`server.persist.*`).
    pub persist: PersistSettings,
    /// How the node reaches the others.
    pub cluster: ClusterSettings,
    /// Who gets a connection, and how long it may stay silent.
    pub connections: ConnectionLimits,
    /// Where `save` and `log` write (`server.export.*`).
    pub export: ExportSettings,
    /// How type and codec code runs (`server.scripts.*`).
    pub scripts: ScriptSettings,
}

/// Who gets a client connection, and how long it may stay silent
/// (`server.limits.*`; the total cap is `max_connections`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// Most concurrent connections from one IP address
    /// (`max_connections_per_addr`, default 100).
    pub max_per_addr: usize,
    /// Loopback clients are not counted per address (`loopback_exempt`,
    /// default true): local tools, and every client behind a local proxy or
    /// tunnel, share one address.
    pub loopback_exempt: bool,
    /// A connection whose first request has not fully arrived this long
    /// after connecting is closed (`handshake_timeout`, default 10 s).
    pub handshake_timeout: std::time::Duration,
    /// A connection that has sent no complete request for this long and
    /// runs no stream (watch, monitor, tree) is closed (`idle_timeout`,
    /// seconds; default 0 = never).
    pub idle_timeout: Option<std::time::Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_per_addr: 100,
            loopback_exempt: true,
            handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: None,
        }
    }
}

/// Where the files that clients ask for (`save`, `log`) are written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSettings {
    /// The export directory (`server.export.dir`, relative to the node's
    /// working directory; default: `export/` in the data directory; a node
    /// without one refuses `save` and `log`).
    pub dir: Option<std::path::PathBuf>,
    /// Absolute names outside the export directory are allowed
    /// (`server.export.absolute`, default false).
    pub absolute: bool,
}

/// How a node reaches the other nodes.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Topic root (`server.root`, elements joined by `/`).
    pub root: String,
    /// Port of the embedded broker (`server.bus.port`).
    pub bus_port: u16,
    /// Brokers of other nodes, `host:port` (`server.bus.peers`).
    pub peers: Vec<String>,
    /// One external broker for all nodes instead of the mesh
    /// (`server.mqtt`, a URL or DistKV's `{uri: URL}`).
    pub mqtt: Option<String>,
    /// Host name other nodes use to reach this one (`server.bus.advertise`).
    pub advertise: Option<String>,
    /// TLS between the nodes (`server.bus.ssl`); `None`: plain.
    pub tls: Option<BusTls>,
    /// Election cycle in ms (`server.ping.cycle`, seconds).
    pub cycle_ms: u64,
    /// Election gap in ms (`server.ping.gap`, seconds).
    pub gap_ms: u64,
    /// Delete-actor cycle in ms (`server.delete.cycle`, seconds).
    pub delete_cycle_ms: u64,
    /// Delete-actor gap in ms (`server.delete.gap`, seconds).
    pub delete_gap_ms: u64,
}

/// When the event log is fsynced (`server.persist.fsync`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FsyncSetting {
    /// Every commit; replies to changes wait for it.
    Always,
    /// At most this long after a commit (`server.persist.fsync_interval`).
    Interval(std::time::Duration),
    /// Left to the operating system.
    Never,
}

/// How the data directory is kept.
#[derive(Debug, Clone)]
pub struct PersistSettings {
    /// fsync policy.
    pub fsync: FsyncSetting,
    /// What recovery does with a damaged event log
    /// (`server.persist.recovery`): `truncate` cuts a torn tail (a damaged
    /// last block) and refuses damage that valid blocks follow, `strict`
    /// refuses any damage, `salvage` also keeps every valid block after
    /// damage (see docs/reliability.md).
    pub recovery: RecoveryMode,
    /// Asked to stop while its history cannot be written (a full disk),
    /// the node keeps trying this long (`server.persist.stop_retry`).
    pub stop_retry: std::time::Duration,
    /// Rotate log segments at this size.
    pub segment_max_bytes: u64,
    /// Rotate log segments at this age.
    pub segment_max_age: std::time::Duration,
    /// Snapshot after this many changes…
    pub snapshot_records: u64,
    /// …or this long.
    pub snapshot_interval: std::time::Duration,
    /// Delete segments (covered by a snapshot) older than this…
    pub retention_max_age: std::time::Duration,
    /// …or beyond this many bytes in all.
    pub retention_max_bytes: u64,
    /// Keep the history index current (`server.persist.history_index`).
    pub history_index: bool,
}

/// Where a client connects.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How long to wait for the connection and greeting.
    pub init_timeout: Duration,
    /// TLS (`connect.ssl`); `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

/// TLS between the nodes (`server.bus.ssl`): in the mesh, this node's
/// broker serves `identity` and requires the other nodes to present a
/// certificate signed by `ca`, and its links present `identity` and check
/// the other brokers against `ca`; with an external `mqtts://` broker, the
/// link checks it against `ca` (else the system's CAs) and presents
/// `identity` if given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusTls {
    /// This node's certificate and key.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The CA of the other nodes' (or the broker's) certificates.
    pub ca: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_distkv() {
        let c = Config::default();
        let s = c.server().unwrap();
        // The window is ours: DistKV offers 10, which stalls big streams;
        // its clients take the smaller of theirs (10) and the offer.
        assert_eq!((s.port, s.buffer), (27586, 1024));
        assert_eq!(c.connect().unwrap().host, "localhost");
    }

    /// `ssl` in DistKV's shapes: off by default, `{cert, key}` on the
    /// client port, `true` or a map in clients; incomplete settings are
    /// refused with the key named.
    #[test]
    fn ssl_keys_take_distkv_shapes() {
        let c = Config::default();
        assert!(c.server().unwrap().tls.is_none(), "off by default");
        assert!(c.server().unwrap().cluster.tls.is_none());
        assert!(c.connect().unwrap().tls.is_none());

        let mut c = Config::default();
        c.merge_str(
            "server:\n  bind_default:\n    ssl: {cert: c.pem, key: k.pem}\nconnect:\n  ssl: true\n",
            "test",
        )
        .unwrap();
        let tls = c.server().unwrap().tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert_eq!(tls.client_ca, None);
        assert_eq!(c.connect().unwrap().tls, Some(ClientTls::default()));

        // `-C` turns the default `false` into a map.
        let mut c = Config::default();
        c.set_override("connect.ssl.ca=ca.pem").unwrap();
        let tls = c.connect().unwrap().tls.unwrap();
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(tls.identity, None);

        let refused = |yaml: &str, key: &str| {
            let mut c = Config::default();
            c.merge_str(yaml, "test").unwrap();
            let e = c.server().map(|_| ()).and(c.connect().map(|_| ()));
            let text = e.expect_err(yaml).to_string();
            assert!(text.contains(key), "{yaml}: {text}");
        };
        refused(
            "server:\n  bind_default:\n    ssl: true\n",
            "server.bind_default.ssl",
        );
        refused(
            "server:\n  bind_default:\n    ssl: {cert: c.pem}\n",
            "server.bind_default.ssl",
        );
        refused("connect:\n  ssl: {key: k.pem}\n", "connect.ssl");
        refused(
            "server:\n  bus:\n    ssl: {cert: c.pem, key: k.pem}\n",
            "server.bus.ssl",
        );
        // An external broker needs no certificate of this node.
        let mut c = Config::default();
        c.merge_str(
            "server:\n  mqtt: mqtts://b\n  bus:\n    ssl: {ca: ca.pem}\n",
            "test",
        )
        .unwrap();
        let bus = c.server().unwrap().cluster.tls.unwrap();
        assert_eq!((bus.identity, bus.ca.is_some()), (None, true));
    }

    #[test]
    fn file_values_merge_over_defaults() {
        let mut c = Config::default();
        c.merge_str("server:\n  bind_default:\n    port: 27590\n", "test")
            .unwrap();
        let s = c.server().unwrap();
        assert_eq!(s.port, 27590);
        assert_eq!(s.host, "127.0.0.1", "siblings survive the merge");
    }

    #[test]
    fn overrides_set_and_delete_keys() {
        let mut c = Config::default();
        c.set_override("server.bind_default.port=27600").unwrap();
        c.set_override("server.bind_default.host=0.0.0.0").unwrap();
        let s = c.server().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 27600));
        c.set_override("server.bind_default.host").unwrap();
        assert_eq!(
            c.server().unwrap().host,
            "127.0.0.1",
            "deleting restores the default"
        );
        assert!(c.set_override("a..b=1").is_err());
    }

    /// Every limit has a range; values outside it fail the start with the
    /// key named, the edges of the range are accepted.
    #[test]
    fn limits_out_of_range_are_refused() {
        let cases = [
            ("server.limits.max_depth", "100000", "7", "8", "256"),
            ("server.limits.max_frame", "10", "4095", "4096", "16777216"),
            ("server.limits.max_connections", "0", "0", "1", "1000000"),
            ("server.limits.log_records", "0", "1023", "1024", "65536"),
            (
                "server.persist.segment_max_bytes",
                "0",
                "1023",
                "1024",
                "67108864",
            ),
            ("server.persist.snapshot_records", "0", "9", "10", "1000000"),
            (
                "server.persist.fsync_interval",
                "0",
                "3601",
                "0.001",
                "3600",
            ),
            ("server.threads", "1025", "100000", "0", "1024"),
        ];
        for (key, bad, also_bad, low, high) in cases {
            for v in [bad, also_bad] {
                let mut c = Config::default();
                c.set_override(&format!("{key}={v}")).unwrap();
                let e = c.server().expect_err(&format!("{key}={v} accepted"));
                assert!(e.to_string().contains(key), "{key}={v}: {e}");
            }
            for v in [low, high] {
                let mut c = Config::default();
                c.set_override(&format!("{key}={v}")).unwrap();
                c.server()
                    .unwrap_or_else(|e| panic!("{key}={v} refused: {e}"));
            }
        }
        let mut c = Config::default();
        c.set_override("server.limits.max_frame=100000000").unwrap();
        assert!(c.server().is_err());
    }

    #[test]
    fn the_history_index_is_on_by_default_and_can_be_switched_off() {
        assert!(Config::default().server().unwrap().persist.history_index);
        let mut c = Config::default();
        c.set_override("server.persist.history_index=false")
            .unwrap();
        assert!(!c.server().unwrap().persist.history_index);
        let mut c = Config::default();
        c.set_override("server.persist.history_index=sometimes")
            .unwrap();
        let e = c.server().expect_err("a non-boolean accepted");
        assert!(e.to_string().contains("history_index"), "{e}");
    }

    #[test]
    fn connection_and_export_defaults_match_the_typed_defaults() {
        let s = Config::default().server().unwrap();
        assert_eq!(s.connections, ConnectionLimits::default());
        assert_eq!(s.export, ExportSettings::default());
    }

    #[test]
    fn connection_limits_out_of_range_are_refused_with_their_key() {
        for (kv, key) in [
            (
                "server.limits.max_connections_per_addr=0",
                "max_connections_per_addr",
            ),
            ("server.limits.handshake_timeout=0", "handshake_timeout"),
            ("server.limits.handshake_timeout=3601", "handshake_timeout"),
            ("server.limits.idle_timeout=0.5", "idle_timeout"),
            ("server.limits.idle_timeout=2592001", "idle_timeout"),
            ("server.limits.idle_timeout=-1", "idle_timeout"),
            ("server.limits.loopback_exempt=maybe", "loopback_exempt"),
            ("server.export.absolute=1", "server.export.absolute"),
            ("server.export.dir=[a]", "server.export.dir"),
        ] {
            let mut c = Config::default();
            c.set_override(kv).unwrap();
            let e = c.server().unwrap_err().to_string();
            assert!(e.contains(key), "{kv}: {e}");
        }
        let mut c = Config::default();
        c.set_override("server.limits.idle_timeout=3600").unwrap();
        c.set_override("server.limits.handshake_timeout=0.5")
            .unwrap();
        c.set_override("server.export.dir=/srv/dumps").unwrap();
        let s = c.server().unwrap();
        assert_eq!(
            s.connections.idle_timeout,
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            s.connections.handshake_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(s.export.dir.as_deref(), Some(FsPath::new("/srv/dumps")));
    }

    #[test]
    fn the_recovery_mode_is_one_of_three() {
        let mut c = Config::default();
        let mode = |c: &Config| c.server().map(|s| s.persist.recovery);
        assert_eq!(mode(&c).unwrap(), RecoveryMode::TruncateTail);
        for (v, m) in [
            ("strict", RecoveryMode::Strict),
            ("salvage", RecoveryMode::Salvage),
            ("truncate", RecoveryMode::TruncateTail),
        ] {
            c.set_override(&format!("server.persist.recovery={v}"))
                .unwrap();
            assert_eq!(mode(&c).unwrap(), m);
        }
        c.set_override("server.persist.recovery=repair").unwrap();
        let e = mode(&c).unwrap_err().to_string();
        assert!(
            e.contains("server.persist.recovery") && e.contains("salvage"),
            "{e}"
        );
    }

    #[test]
    fn python_code_needs_the_python_feature() {
        let mut c = Config::default();
        let scripts = |c: &Config| c.server().map(|s| s.scripts);
        assert_eq!(scripts(&c).unwrap(), ScriptSettings::default());
        for lang in ["python", "auto"] {
            c.set_override(&format!("server.scripts.lang={lang}"))
                .unwrap();
            let python = cfg!(feature = "python");
            match scripts(&c) {
                Ok(s) => {
                    assert!(python, "{lang} without the feature");
                    assert_ne!(s.lang, Lang::Rhai);
                }
                Err(e) => {
                    assert!(!python, "{e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("server.scripts.lang") && e.contains("`python` feature"),
                        "{e}"
                    );
                }
            }
        }
        c.set_override("server.scripts.lang=perl").unwrap();
        assert!(scripts(&c).is_err());
        c.set_override("server.scripts.lang=rhai").unwrap();
        c.set_override("server.scripts.python_timeout=0").unwrap();
        let e = scripts(&c).unwrap_err().to_string();
        assert!(e.contains("server.scripts.python_timeout"), "{e}");
        c.set_override("server.scripts.python_timeout=0.25")
            .unwrap();
        assert_eq!(
            scripts(&c).unwrap().python_timeout,
            std::time::Duration::from_millis(250)
        );
    }

    #[test]
    fn unknown_keys_are_named_and_wrong_types_name_key_and_type() {
        let mut c = Config::default();
        c.merge_str(
            "server:\n  limits:\n    max_dept: 10\n  bogus: 1\nlogging:\n  x: 1\n",
            "test",
        )
        .unwrap();
        let mut unknown = c.unknown_keys().unwrap();
        unknown.sort();
        assert_eq!(
            unknown,
            ["logging", "server.bogus", "server.limits.max_dept"]
        );
        c.server().expect("unknown keys are only warned about");
        c.set_override("server.limits.max_depth=deep").unwrap();
        let e = c.server().unwrap_err().to_string();
        assert!(
            e.contains("server.limits.max_depth") && e.contains("u64"),
            "{e}"
        );
        let mut c = Config::default();
        c.set_override("server.ping.cycle=[1]").unwrap();
        let e = c.server().unwrap_err().to_string();
        assert!(e.contains("server.ping.cycle") && e.contains("f64"), "{e}");
    }

    #[test]
    fn every_default_is_in_the_tree() {
        let c = Config::default();
        assert!(c.unknown_keys().unwrap().is_empty());
        assert_eq!(
            c.get("server.persist.fsync").and_then(Yaml::as_str),
            Some("interval")
        );
        assert_eq!(
            c.get("server.limits.max_depth").and_then(Yaml::as_u64),
            Some(64)
        );
        assert_eq!(c.connect().unwrap().port, 27586);
    }

    #[test]
    fn bad_values_are_reported_with_their_key() {
        let mut c = Config::default();
        c.set_override("server.buffer=2").unwrap();
        let e = c.server().unwrap_err().to_string();
        assert!(e.contains("server.buffer"), "{e}");
        assert!(c.merge_str("- a list", "x").is_err());
    }
}
