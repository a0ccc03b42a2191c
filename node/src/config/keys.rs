//! The configuration file's keys, as DistKV names them, with their
//! defaults: one serde struct per YAML map. This is the only place a key or
//! its default is written down: the defaults are these structs' `Default`,
//! serialized into the tree that files and overrides are merged over
//! ([`super::Config`]), which then checks the values and turns them into
//! what the node uses ([`super::ServerSettings`] and friends).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A number of seconds (DistKV writes durations as seconds, integer or
/// not). Checked when resolved: finite, not negative, within a range.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Keys {
    /// `config`: where the dynamic configuration lives in the tree.
    pub config: ConfigKeys,
    /// `connect`: where clients connect.
    pub connect: ConnectKeys,
    /// `server`: the node.
    pub server: ServerKeys,
}

/// `config`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ConfigKeys {
    /// `prefix`: the subtree clients watch for dynamic configuration.
    pub prefix: String,
}

impl Default for ConfigKeys {
    fn default() -> ConfigKeys {
        ConfigKeys {
            prefix: ":.distkv.config".into(),
        }
    }
}

/// `connect`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectKeys {
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `init_timeout`: for the connection and the greeting.
    pub init_timeout: Seconds,
    /// `auth`: accepted for DistKV's files (not used yet).
    pub auth: Option<yaml_serde::Value>,
    /// `name`: accepted for DistKV's files (not used yet).
    pub name: Option<String>,
    /// `ssl`: `false`, `true` (the system's CAs) or `{ca, cert, key}`.
    pub ssl: SslKeys,
}

impl Default for ConnectKeys {
    fn default() -> ConnectKeys {
        ConnectKeys {
            host: "localhost".into(),
            port: 27586,
            init_timeout: Seconds(5.0),
            auth: None,
            name: None,
            ssl: SslKeys::Flag(false),
        }
    }
}

/// `server`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerKeys {
    /// `buffer`: the flow-control window offered to clients.
    pub buffer: u64,
    /// `threads`: worker threads, 0 = one per core.
    pub threads: u64,
    /// `root`: the cluster's topic root, elements joined by `/`.
    pub root: Vec<String>,
    /// `paranoia`: accepted for DistKV's files (no effect).
    pub paranoia: bool,
    /// `bind`: the first item is merged over `bind_default`.
    pub bind: Vec<BindKeys>,
    /// `bind_default`.
    pub bind_default: BindKeys,
    /// `change`: accepted for DistKV's files (no effect).
    pub change: ChangeKeys,
    /// `ping`: the housekeeper election.
    pub ping: ActorKeys,
    /// `delete`: the deleter group's election.
    pub delete: ActorKeys,
    /// `bus`: the mesh of embedded brokers.
    pub bus: BusKeys,
    /// `mqtt`: one external broker instead of the mesh.
    pub mqtt: Option<MqttKeys>,
    /// `data_dir`: default `./distkv-data/NAME`.
    pub data_dir: Option<PathBuf>,
    /// `export`: where `save` and `log` write.
    pub export: ExportKeys,
    /// `persist`: the data directory.
    pub persist: PersistKeys,
    /// `limits`: what clients may send and hold.
    pub limits: LimitsKeys,
    /// `scripts`: how type and codec code runs (ours).
    pub scripts: ScriptsKeys,
}

impl Default for ServerKeys {
    fn default() -> ServerKeys {
        ServerKeys {
            buffer: 1024,
            threads: 0,
            root: vec![":distkv".into()],
            paranoia: false,
            bind: vec![BindKeys::default()],
            bind_default: BindKeys {
                host: Some("127.0.0.1".into()),
                port: Some(27586),
                ssl: Some(SslKeys::Flag(false)),
            },
            change: ChangeKeys { length: 5 },
            ping: ActorKeys {
                cycle: Seconds(10.0),
                gap: Seconds(2.0),
            },
            delete: ActorKeys {
                cycle: Seconds(100.0),
                gap: Seconds(10.0),
            },
            bus: BusKeys::default(),
            mqtt: None,
            data_dir: None,
            export: ExportKeys::default(),
            persist: PersistKeys::default(),
            limits: LimitsKeys::default(),
            scripts: ScriptsKeys::default(),
        }
    }
}

/// An item of `bind` / `bind_default`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BindKeys {
    /// `host`: the address to bind (DistKV ignored it; we honour it).
    pub host: Option<String>,
    /// `port`: the client port.
    pub port: Option<u16>,
    /// `ssl`: `false`, or `{cert, key}` (and `ca` to require client
    /// certificates).
    pub ssl: Option<SslKeys>,
}

/// `ssl` (client port, client, bus): off, on, or the files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SslKeys {
    /// `false`: plain TCP; `true`: TLS with defaults (clients only).
    Flag(bool),
    /// The files, PEM.
    Files(SslFiles),
}

impl Default for SslKeys {
    fn default() -> SslKeys {
        SslKeys::Flag(false)
    }
}

/// The files of an `ssl` map.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SslFiles {
    /// `cert`: the certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// `key`: its private key.
    pub key: Option<PathBuf>,
    /// `ca`: the CA the other end's certificate must be signed by.
    pub ca: Option<PathBuf>,
}

/// `change`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ChangeKeys {
    /// `length`.
    pub length: u64,
}

impl Default for ChangeKeys {
    fn default() -> ChangeKeys {
        ChangeKeys { length: 5 }
    }
}

/// `ping` / `delete`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ActorKeys {
    /// `cycle`.
    pub cycle: Seconds,
    /// `gap`.
    pub gap: Seconds,
}

/// `bus`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BusKeys {
    /// `port`: the embedded broker's.
    pub port: u16,
    /// `peers`: other nodes' brokers, `host:port`.
    pub peers: Vec<String>,
    /// `advertise`: the host name others reach this node by.
    pub advertise: Option<String>,
    /// `ssl`: `false`, or `{cert, key, ca}` for TLS between the nodes
    /// (and `{ca}` at least for an external `mqtts://` broker).
    pub ssl: SslKeys,
}

impl Default for BusKeys {
    fn default() -> BusKeys {
        BusKeys {
            port: 27587,
            peers: Vec::new(),
            advertise: None,
            ssl: SslKeys::Flag(false),
        }
    }
}

/// `mqtt`: a URL, or DistKV's `{uri: URL}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum MqttKeys {
    /// `mqtt://host:port`.
    Url(String),
    /// `{uri: mqtt://host:port}`.
    Map {
        /// `uri`.
        uri: String,
    },
}

/// `export`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExportKeys {
    /// `dir`: default `export/` in the data directory.
    pub dir: Option<PathBuf>,
    /// `absolute`: names outside the export directory allowed.
    pub absolute: bool,
}

/// `scripts` (ours; DistKV ran Python only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ScriptsKeys {
    /// `lang`: the language of type and codec code.
    pub lang: LangKey,
    /// `python_timeout`: wall-clock time one run of Python code may take.
    pub python_timeout: Seconds,
}

impl Default for ScriptsKeys {
    fn default() -> ScriptsKeys {
        ScriptsKeys {
            lang: LangKey::Rhai,
            python_timeout: Seconds(1.0),
        }
    }
}

/// `scripts.lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LangKey {
    /// Rhai, sandboxed.
    Rhai,
    /// DistKV's Python (the `python` feature).
    Python,
    /// Rhai if the code compiles as Rhai, else Python (the `python`
    /// feature).
    Auto,
}

/// `persist.fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncKey {
    /// Every commit.
    Always,
    /// At most `fsync_interval` after a commit.
    Interval,
    /// Left to the operating system.
    Never,
}

/// `persist.recovery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryKey {
    /// Cut a torn tail, refuse other damage.
    Truncate,
    /// Refuse any damage.
    Strict,
    /// Also keep every valid block after damage.
    Salvage,
}

/// `persist`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct PersistKeys {
    /// `fsync`.
    pub fsync: FsyncKey,
    /// `fsync_interval`.
    pub fsync_interval: Seconds,
    /// `recovery`.
    pub recovery: RecoveryKey,
    /// `stop_retry`: how long a stop keeps trying to write the history.
    pub stop_retry: Seconds,
    /// `segment_max_bytes`.
    pub segment_max_bytes: u64,
    /// `segment_max_age`.
    pub segment_max_age: Seconds,
    /// `snapshot_records`.
    pub snapshot_records: u64,
    /// `snapshot_interval`.
    pub snapshot_interval: Seconds,
    /// `retention_max_age`.
    pub retention_max_age: Seconds,
    /// `retention_max_bytes`.
    pub retention_max_bytes: u64,
    /// `history_index`: keep the history index (`<data dir>/index/`).
    pub history_index: bool,
}

impl Default for PersistKeys {
    fn default() -> PersistKeys {
        PersistKeys {
            fsync: FsyncKey::Interval,
            fsync_interval: Seconds(1.0),
            recovery: RecoveryKey::Truncate,
            stop_retry: Seconds(5.0),
            segment_max_bytes: 64 << 20,
            segment_max_age: Seconds(3600.0),
            snapshot_records: 1_000_000,
            snapshot_interval: Seconds(600.0),
            retention_max_age: Seconds(7.0 * 86_400.0),
            retention_max_bytes: 10 << 30,
            history_index: true,
        }
    }
}

/// `limits`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LimitsKeys {
    /// `max_frame`: largest client message, bytes.
    pub max_frame: u64,
    /// `max_depth`: deepest client message.
    pub max_depth: u64,
    /// `max_connections`.
    pub max_connections: u64,
    /// `log_records`: records of the in-memory event log.
    pub log_records: u64,
    /// `log_bytes`: bytes of the in-memory event log.
    pub log_bytes: u64,
    /// `max_connections_per_addr`.
    pub max_connections_per_addr: u64,
    /// `loopback_exempt`.
    pub loopback_exempt: bool,
    /// `handshake_timeout`.
    pub handshake_timeout: Seconds,
    /// `idle_timeout`: 0 = never.
    pub idle_timeout: Seconds,
}

impl Default for LimitsKeys {
    fn default() -> LimitsKeys {
        LimitsKeys {
            max_frame: 16 << 20,
            max_depth: 64,
            max_connections: 10_000,
            log_records: 65_536,
            log_bytes: 64 << 20,
            max_connections_per_addr: 100,
            loopback_exempt: true,
            handshake_timeout: Seconds(10.0),
            idle_timeout: Seconds(0.0),
        }
    }
}
