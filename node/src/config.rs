//! Configuration in DistKV's YAML keys.
//!
//! The configuration is a YAML tree: built-in defaults (DistKV's own), then
//! the user's file merged over them (user values win, maps merge
//! recursively), then `-C key=value` overrides, whose key is a dotted path
//! (`server.bind_default.port`) and whose value is parsed as a YAML scalar
//! (`27590` is a number, `[a, b]` a list, `x` a string). A `-C key` without
//! `=` deletes the key. Typed views ([`ServerSettings`], [`ConnectSettings`])
//! are read from the merged tree, with clear errors for wrong types.

use std::path::Path as FsPath;

use distkv_log::RecoveryMode;
use distkv_model::budget::{MAX_CLIENT_FRAME, MAX_MESSAGE_BYTES, MAX_NESTING};
use serde_yaml::{Mapping, Value as Yaml};

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
        source: serde_yaml::Error,
    },
    /// A key has a value of the wrong type.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

const DEFAULTS: &str = r#"
connect:
  host: localhost
  port: 27586
  init_timeout: 5
  auth: null
  name: null
server:
  buffer: 10
  threads: 0
  root: [":distkv"]
  paranoia: false
  bind: [{}]
  bind_default:
    host: 127.0.0.1
    port: 27586
  change:
    length: 5
  ping:
    cycle: 10
    gap: 2
  delete:
    cycle: 100
    gap: 10
  bus:
    port: 27587
    peers: []
    advertise: null
  mqtt: null
  data_dir: null
  export:
    dir: null
    absolute: false
  persist:
    fsync: interval
    fsync_interval: 1.0
    recovery: truncate
    segment_max_bytes: 67108864
    segment_max_age: 3600
    snapshot_records: 1000000
    snapshot_interval: 600
    retention_max_age: 604800
    retention_max_bytes: 10737418240
  limits:
    max_frame: 16777216
    max_depth: 64
    max_connections: 10000
    log_records: 65536
    log_bytes: 67108864
    max_connections_per_addr: 100
    loopback_exempt: true
    handshake_timeout: 10
    idle_timeout: 0
"#;

/// The merged configuration tree.
#[derive(Debug, Clone)]
pub struct Config {
    tree: Yaml,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tree: serde_yaml::from_str(DEFAULTS).expect("built-in defaults are valid YAML"),
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
        let y: Yaml = serde_yaml::from_str(text).map_err(|source| ConfigError::Yaml {
            origin: origin.to_string(),
            source,
        })?;
        match y {
            Yaml::Null => Ok(()),
            y @ Yaml::Mapping(_) => {
                merge(&mut self.tree, y);
                Ok(())
            }
            _ => Err(ConfigError::Invalid {
                key: origin.to_string(),
                reason: "the top level must be a map".into(),
            }),
        }
    }

    /// Applies one `-C key=value` (or `-C key` to delete).
    pub fn set_override(&mut self, spec: &str) -> Result<(), ConfigError> {
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (spec, None),
        };
        let parts: Vec<&str> = key.split('.').collect();
        if key.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Invalid {
                key: key.to_string(),
                reason: "empty key element".into(),
            });
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
                m.remove(&k);
            }
            Some(v) => {
                let parsed: Yaml = serde_yaml::from_str(v).unwrap_or(Yaml::String(v.to_string()));
                m.insert(k, parsed);
            }
        }
        Ok(())
    }

    /// The value at a dotted key.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        key.split('.').try_fold(&self.tree, |n, p| n.get(p))
    }

    fn int(&self, key: &str) -> Result<u64, ConfigError> {
        self.get(key)
            .and_then(Yaml::as_u64)
            .ok_or_else(|| ConfigError::Invalid {
                key: key.into(),
                reason: "must be a non-negative integer".into(),
            })
    }

    /// An integer that must lie in `range`.
    fn int_in(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, ConfigError> {
        let v = self.int(key)?;
        if !range.contains(&v) {
            return Err(ConfigError::Invalid {
                key: key.into(),
                reason: format!(
                    "{v} is out of range: must be from {} to {}",
                    range.start(),
                    range.end()
                ),
            });
        }
        Ok(v)
    }

    /// A number of seconds that must lie in `range`.
    fn seconds_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<std::time::Duration, ConfigError> {
        let v = self.seconds(key)?;
        if !range.contains(&v.as_secs_f64()) {
            return Err(ConfigError::Invalid {
                key: key.into(),
                reason: format!(
                    "{} s is out of range: must be from {} to {} s",
                    v.as_secs_f64(),
                    range.start(),
                    range.end()
                ),
            });
        }
        Ok(v)
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        self.get(key)
            .and_then(Yaml::as_bool)
            .ok_or_else(|| ConfigError::Invalid {
                key: key.into(),
                reason: "must be true or false".into(),
            })
    }

    fn string(&self, key: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            Some(Yaml::String(s)) => Ok(s.clone()),
            Some(Yaml::Number(n)) => Ok(n.to_string()),
            _ => Err(ConfigError::Invalid {
                key: key.into(),
                reason: "must be a string".into(),
            }),
        }
    }

    /// The server's settings.
    pub fn server(&self) -> Result<ServerSettings, ConfigError> {
        // `server.bind[0]` merged over `server.bind_default`, as in DistKV.
        let first = self
            .get("server.bind")
            .and_then(Yaml::as_sequence)
            .and_then(|s| s.first())
            .cloned()
            .unwrap_or(Yaml::Null);
        let mut bind = self
            .get("server.bind_default")
            .cloned()
            .unwrap_or(Yaml::Null);
        if first.is_mapping() {
            merge(&mut bind, first);
        }
        let host = match bind.get("host") {
            Some(Yaml::String(s)) => s.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = bind
            .get("port")
            .and_then(Yaml::as_u64)
            .filter(|p| *p <= u16::MAX as u64)
            .ok_or_else(|| ConfigError::Invalid {
                key: "server.bind_default.port".into(),
                reason: "must be a port number".into(),
            })? as u16;
        let buffer = self.int_in("server.buffer", 0..=1 << 20)?;
        if (1..4).contains(&buffer) {
            return Err(ConfigError::Invalid {
                key: "server.buffer".into(),
                reason: "must be 0 or at least 4".into(),
            });
        }
        Ok(ServerSettings {
            host,
            port,
            buffer,
            // Clients' limits keep every value inside the node's budget
            // (see `distkv_model::budget`).
            max_frame: self.int_in("server.limits.max_frame", 4096..=MAX_CLIENT_FRAME as u64)?
                as usize,
            max_depth: self.int_in("server.limits.max_depth", 8..=MAX_NESTING as u64)? as usize,
            max_connections: self.int_in("server.limits.max_connections", 1..=1_000_000)? as usize,
            log_records: self.int_in("server.limits.log_records", 1024..=1 << 32)? as usize,
            // Room for at least one change of the largest size.
            log_bytes: self.int_in(
                "server.limits.log_bytes",
                MAX_MESSAGE_BYTES as u64..=1 << 40,
            )? as usize,
            threads: self.int_in("server.threads", 0..=1024)? as usize,
            data_dir: match self.get("server.data_dir") {
                None | Some(Yaml::Null) => None,
                Some(Yaml::String(s)) => Some(s.into()),
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        key: "server.data_dir".into(),
                        reason: "must be a directory name".into(),
                    })
                }
            },
            persist: self.persist()?,
            cluster: self.cluster()?,
            connections: self.connections()?,
            export: self.export()?,
        })
    }

    /// `server.limits.*` for admitting and timing out client connections.
    fn connections(&self) -> Result<ConnectionLimits, ConfigError> {
        let max_per_addr = self.int_in("server.limits.max_connections_per_addr", 1..=1_000_000)?;
        let handshake_timeout = self.seconds_in("server.limits.handshake_timeout", 0.1..=3600.0)?;
        let key = "server.limits.idle_timeout";
        let idle = self.seconds(key)?;
        let idle_timeout = if idle.is_zero() {
            None
        } else {
            Some(self.seconds_in(key, 1.0..=MAX_IDLE_TIMEOUT_S)?)
        };
        Ok(ConnectionLimits {
            max_per_addr: max_per_addr as usize,
            loopback_exempt: self.boolean("server.limits.loopback_exempt")?,
            handshake_timeout,
            idle_timeout,
        })
    }

    /// `server.export.*`: where `save` and `log` write.
    fn export(&self) -> Result<ExportSettings, ConfigError> {
        let dir = match self.get("server.export.dir") {
            None | Some(Yaml::Null) => None,
            Some(Yaml::String(s)) if !s.is_empty() => Some(s.into()),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "server.export.dir".into(),
                    reason: "must be a directory name".into(),
                })
            }
        };
        Ok(ExportSettings {
            dir,
            absolute: self.boolean("server.export.absolute")?,
        })
    }

    fn cluster(&self) -> Result<ClusterSettings, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        let root = match self.get("server.root") {
            Some(Yaml::Sequence(parts)) if !parts.is_empty() => parts
                .iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("server.root", "must be a list of strings"))?
                .join("/"),
            _ => return Err(invalid("server.root", "must be a list of strings")),
        };
        let peers = match self.get("server.bus.peers") {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::Sequence(p)) => p
                .iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("server.bus.peers", "must be a list of host:port"))?,
            Some(_) => return Err(invalid("server.bus.peers", "must be a list of host:port")),
        };
        let mqtt = match self.get("server.mqtt") {
            None | Some(Yaml::Null) => None,
            Some(Yaml::String(s)) => Some(s.clone()),
            Some(m) => Some(
                m.get("uri")
                    .and_then(Yaml::as_str)
                    .ok_or_else(|| invalid("server.mqtt", "must be a URL or {uri: URL}"))?
                    .to_string(),
            ),
        };
        let advertise = match self.get("server.bus.advertise") {
            None | Some(Yaml::Null) => None,
            Some(Yaml::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("server.bus.advertise", "must be a host name")),
        };
        let port = self.int("server.bus.port")?;
        let ms =
            |key: &str| -> Result<u64, ConfigError> { Ok(self.seconds(key)?.as_millis() as u64) };
        Ok(ClusterSettings {
            root,
            bus_port: u16::try_from(port)
                .map_err(|_| invalid("server.bus.port", "must be a port number"))?,
            peers,
            mqtt,
            advertise,
            cycle_ms: ms("server.ping.cycle")?.max(1),
            gap_ms: ms("server.ping.gap")?.max(1),
            delete_cycle_ms: ms("server.delete.cycle")?.max(1),
            delete_gap_ms: ms("server.delete.gap")?.max(1),
        })
    }

    fn seconds(&self, key: &str) -> Result<std::time::Duration, ConfigError> {
        self.get(key)
            .and_then(Yaml::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| ConfigError::Invalid {
                key: key.into(),
                reason: "must be a number of seconds".into(),
            })
    }

    fn persist(&self) -> Result<PersistSettings, ConfigError> {
        let fsync = match self.string("server.persist.fsync")?.as_str() {
            "always" => FsyncSetting::Always,
            "interval" => FsyncSetting::Interval(
                self.seconds_in("server.persist.fsync_interval", 0.001..=3600.0)?,
            ),
            "never" => FsyncSetting::Never,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "server.persist.fsync".into(),
                    reason: "must be always, interval or never".into(),
                })
            }
        };
        let recovery = match self.string("server.persist.recovery")?.as_str() {
            "truncate" => RecoveryMode::TruncateTail,
            "strict" => RecoveryMode::Strict,
            "salvage" => RecoveryMode::Salvage,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "server.persist.recovery".into(),
                    reason: "must be truncate (cut a torn log tail), strict (refuse to start on \
                             any damage) or salvage (also skip damage that valid blocks follow)"
                        .into(),
                })
            }
        };
        Ok(PersistSettings {
            fsync,
            recovery,
            segment_max_bytes: self.int_in("server.persist.segment_max_bytes", 1024..=1 << 40)?,
            segment_max_age: self.seconds_in("server.persist.segment_max_age", 1.0..=1e9)?,
            snapshot_records: self.int_in("server.persist.snapshot_records", 10..=1 << 40)?,
            snapshot_interval: self.seconds_in("server.persist.snapshot_interval", 1.0..=1e9)?,
            // 0: keep only what the older snapshot needs.
            retention_max_age: self.seconds_in("server.persist.retention_max_age", 0.0..=1e10)?,
            retention_max_bytes: self.int_in("server.persist.retention_max_bytes", 0..=1 << 50)?,
        })
    }

    /// The client's connection settings.
    pub fn connect(&self) -> Result<ConnectSettings, ConfigError> {
        Ok(ConnectSettings {
            host: self.string("connect.host")?,
            port: self.int("connect.port")? as u16,
            init_timeout: self.int("connect.init_timeout")?,
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
    pub data_dir: Option<String>,
    /// How the data directory is kept (`server.persist.*`).
    pub persist: PersistSettings,
    /// How the node reaches the others.
    pub cluster: ClusterSettings,
    /// Who gets a connection, and how long it may stay silent.
    pub connections: ConnectionLimits,
    /// Where `save` and `log` write (`server.export.*`).
    pub export: ExportSettings,
}

/// The longest `server.limits.idle_timeout`: 30 days.
const MAX_IDLE_TIMEOUT_S: f64 = 30.0 * 86_400.0;

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
}

/// Where a client connects.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Seconds to wait for the connection and greeting.
    pub init_timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_distkv() {
        let c = Config::default();
        let s = c.server().unwrap();
        assert_eq!((s.port, s.buffer), (27586, 10));
        assert_eq!(c.connect().unwrap().host, "localhost");
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
        c.set_override("connect.host").unwrap();
        assert!(c.connect().is_err());
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
    fn bad_values_are_reported_with_their_key() {
        let mut c = Config::default();
        c.set_override("server.buffer=2").unwrap();
        let e = c.server().unwrap_err().to_string();
        assert!(e.contains("server.buffer"), "{e}");
        assert!(c.merge_str("- a list", "x").is_err());
    }
}
