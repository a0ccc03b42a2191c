//! Error records in the tree, kept as DistKV's client-side `ErrorRoot`
//! keeps them.
//!
//! Programs that work on the data (runners, importers, bridges) note what
//! went wrong where everybody can see it, and take the note back once the
//! problem is gone. The records are ordinary user data below a prefix,
//! [`DEFAULT_PREFIX`] (`.distkv error`):
//!
//! * `PREFIX/NODE/TOCK` — one record per problem, written by the client
//!   named NODE when it first saw it (TOCK: the server's tock then). A map:
//!   `path` (the offending entry), `subsystem`, `severity` (0 fatal … 7
//!   trace; smaller is worse), `resolved` (`false`, `true` or the time it
//!   was seen working again), `created`, `count`, `first_seen`,
//!   `last_seen` (Unix times) and optionally `message`.
//! * `PREFIX/NODE/TOCK/REPORTER` — what client REPORTER saw last: `seen`,
//!   `tock`, `comment`, `data`, and `trace`/`message` when given.
//!
//! A problem is identified by (subsystem, path): reporting it again reuses
//! its record ([`ErrorRoot::find`]), an unresolved one first. A report less
//! severe than the recorded one is ignored unless forced.
//!
//! There is no local cache: every call reads the records it needs from the
//! node, so several programs may report concurrently (the writes carry the
//! change chain they read, and a lost race fails instead of overwriting).
//! Two clients reporting the same new problem at once may still create two
//! records; DistKV's cluster-wide merge of such duplicates is not done here
//! (it is marked as not working in DistKV's own tests), but [`ErrorRoot::find`]
//! picks the same record that merge would keep.

use std::time::{SystemTime, UNIX_EPOCH};

use distkv_model::{Path, Value};

use crate::client::{Client, ClientError, StreamItem, TreeOptions, UpdateOptions};

/// Where DistKV keeps error records: `(".distkv", "error")`.
pub const DEFAULT_PREFIX: [&str; 2] = [".distkv", "error"];

/// One error record as read from the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRecord {
    /// The client that created it (first element below the prefix).
    pub node: Value,
    /// The tock at creation (second element).
    pub tock: Value,
    /// The record's map (see the module documentation).
    pub value: Value,
    /// The change chain it was read with (`Nil` for a record not yet
    /// written).
    pub chain: Value,
}

impl ErrorRecord {
    /// The record's `subsystem`.
    pub fn subsystem(&self) -> Option<&str> {
        self.value.get("subsystem").and_then(Value::as_str)
    }

    /// The offending path, if the record has one.
    pub fn path(&self) -> Option<&Path> {
        match self.value.get("path") {
            Some(Value::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// Whether it is marked resolved (`true` or a time).
    pub fn resolved(&self) -> bool {
        self.value.get("resolved").is_some_and(Value::truthy)
    }

    /// The recorded severity, if any.
    pub fn severity(&self) -> Option<i64> {
        self.value.get("severity").and_then(Value::as_i64)
    }

    /// `NODE.TOCK`, the record's place below the prefix.
    pub fn subpath(&self) -> Path {
        Path::new(vec![self.node.clone(), self.tock.clone()])
    }

    /// The order in which DistKV's duplicate merge prefers records: the
    /// smaller `first_seen` (missing counts as very late), then the smaller
    /// node name.
    fn keep_order(&self) -> (f64, String) {
        let first = match self.value.get("first_seen") {
            Some(Value::Int(i)) => *i as f64,
            Some(Value::UInt(u)) => *u as f64,
            Some(Value::Float(f)) => *f,
            _ => 99_999_999_999_999.0,
        };
        let node = self.node.as_str().map(str::to_string).unwrap_or_default();
        (first, node)
    }
}

/// What [`ErrorRoot::record_error`] records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorReport {
    /// The subsystem that had the problem (`run`, `compile`, …).
    pub subsystem: String,
    /// The entry the problem is about.
    pub path: Path,
    /// 0 fatal, 1 error, 2 warning, 3 info, 4 note, 5 debug, 6/7 trace.
    pub severity: i64,
    /// The error itself, as text (DistKV stores the exception's `repr`):
    /// the detail's `comment` unless `comment` is given.
    pub error: Option<String>,
    /// A multi-line trace of where it happened.
    pub trace: Option<String>,
    /// A fixed text explaining the problem (formatted with `data` when
    /// shown).
    pub message: Option<String>,
    /// Explicit comment text.
    pub comment: Option<String>,
    /// Data needed to reproduce the problem; an empty map if `None`.
    pub data: Option<Value>,
    /// Record even if a more severe report is already recorded.
    pub force: bool,
}

/// The error records below one prefix, as reported by one client.
pub struct ErrorRoot<'a> {
    client: &'a Client,
    prefix: Path,
    name: String,
}

impl<'a> ErrorRoot<'a> {
    /// Records below [`DEFAULT_PREFIX`], reported as client `name` (DistKV
    /// uses the connection's name, by default the host name).
    pub fn new(client: &'a Client, name: &str) -> ErrorRoot<'a> {
        let prefix = Path::new(DEFAULT_PREFIX.iter().map(|e| Value::str(e)).collect());
        ErrorRoot::with_prefix(client, name, prefix)
    }

    /// Records below `prefix` (DistKV's `errors.prefix`).
    pub fn with_prefix(client: &'a Client, name: &str, prefix: Path) -> ErrorRoot<'a> {
        ErrorRoot {
            client,
            prefix,
            name: name.to_string(),
        }
    }

    /// The prefix the records are kept below.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Every record (`PREFIX/NODE/TOCK`), in tree order.
    pub async fn records(&self) -> Result<Vec<ErrorRecord>, ClientError> {
        let opts = TreeOptions {
            nchain: 3,
            min_depth: Some(2),
            max_depth: Some(2),
            ..TreeOptions::default()
        };
        let mut stream = match self.client.get_tree(&self.prefix, &opts).await {
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            s => s?,
        };
        let mut out = Vec::new();
        loop {
            let item = match stream.next().await {
                Err(e) if is_missing(&e) && out.is_empty() => return Ok(out),
                Ok(None) => break,
                item => item?,
            };
            let Some(StreamItem::Data(msg)) = item else {
                continue;
            };
            if let Some(r) = record_from(&msg) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The record at `PREFIX/NODE/TOCK`, if there is one.
    pub async fn get(
        &self,
        node: &Value,
        tock: &Value,
    ) -> Result<Option<ErrorRecord>, ClientError> {
        let path = self.prefix.join(&[node.clone(), tock.clone()]);
        let reply = self.client.get_value(&path, 3).await?;
        Ok(reply.get("value").map(|v| ErrorRecord {
            node: node.clone(),
            tock: tock.clone(),
            value: v.clone(),
            chain: reply.get("chain").cloned().unwrap_or(Value::Nil),
        }))
    }

    /// The record of (`subsystem`, `path`): an unresolved one if there is
    /// one, else a resolved one; among duplicates the one DistKV's merge
    /// keeps.
    pub async fn find(
        &self,
        subsystem: &str,
        path: &Path,
    ) -> Result<Option<ErrorRecord>, ClientError> {
        let all = self.records().await?;
        Ok(pick(all, subsystem, path))
    }

    /// Records a problem: reuses the record of (subsystem, path) or
    /// creates one at `PREFIX/NAME/TOCK`; ignores the report (returning the
    /// existing record) if that record is more severe and the report is not
    /// forced — as in DistKV, even if that record is resolved; else marks
    /// it unresolved, counts it, and writes this client's detail below it.
    pub async fn record_error(&self, report: &ErrorReport) -> Result<ErrorRecord, ClientError> {
        let mut rec = match self.find(&report.subsystem, &report.path).await? {
            Some(r) => r,
            None => self.allocate().await?,
        };
        if !report.force && rec.severity().is_some_and(|s| s < report.severity) {
            return Ok(rec);
        }
        let now = now();
        let count = rec.value.get("count").and_then(Value::as_i64).unwrap_or(0);
        let fresh = rec.chain.is_nil();
        let map = map_of(&mut rec.value);
        put(map, "path", Value::Path(report.path.clone()));
        put(map, "subsystem", Value::str(&report.subsystem));
        put(map, "severity", Value::Int(report.severity));
        put(map, "resolved", Value::Bool(false));
        if fresh {
            put(map, "created", Value::Float(now));
        }
        put(map, "count", Value::Int(count + 1));
        if map_get(map, "first_seen").is_none_or(Value::is_nil) {
            put(map, "first_seen", Value::Float(now));
        }
        put(map, "last_seen", Value::Float(now));
        self.save(&mut rec).await?;
        if let Some(m) = &report.message {
            tracing::warn!(
                "Error {} {}: {m}",
                self.prefix.join(rec.subpath().elements()),
                self.name
            );
        }
        self.add_detail(&rec, report).await?;
        Ok(rec)
    }

    /// Notes that (subsystem, path) works again: an unresolved record is
    /// marked resolved with the current time. With `force`, a record is
    /// created if there is none. A `comment` or `data` is written as this
    /// client's detail. Returns the record, if there is one.
    pub async fn record_working(
        &self,
        subsystem: &str,
        path: &Path,
        comment: Option<&str>,
        data: Option<Value>,
        force: bool,
    ) -> Result<Option<ErrorRecord>, ClientError> {
        let mut rec = match self.find(subsystem, path).await? {
            Some(r) => r,
            None if force => {
                let mut r = self.allocate().await?;
                let map = map_of(&mut r.value);
                put(map, "path", Value::Path(path.clone()));
                put(map, "subsystem", Value::str(subsystem));
                r
            }
            None => return Ok(None),
        };
        if !rec.resolved() {
            put(map_of(&mut rec.value), "resolved", Value::Float(now()));
            self.save(&mut rec).await?;
        }
        if comment.is_some() || data.is_some() {
            let detail = self.client.get_tock().await?;
            let value = Value::map([
                ("seen", Value::Float(now())),
                ("tock", Value::uint(detail)),
                ("comment", comment.map(Value::str).unwrap_or(Value::Nil)),
                ("data", data.unwrap_or(Value::Nil)),
            ]);
            let path = self.detail_path(&rec, &self.name);
            let opts = UpdateOptions {
                nchain: 3,
                idem: Some(true),
                ..UpdateOptions::default()
            };
            self.client.set_value(&path, value, &opts).await?;
        }
        Ok(Some(rec))
    }

    /// Marks `rec` resolved (`resolved: true`), as DistKV's `resolve`.
    pub async fn resolve(&self, rec: &mut ErrorRecord) -> Result<(), ClientError> {
        put(map_of(&mut rec.value), "resolved", Value::Bool(true));
        self.save(rec).await
    }

    /// `PREFIX/NODE/TOCK/REPORTER`.
    pub fn detail_path(&self, rec: &ErrorRecord, reporter: &str) -> Path {
        let mut e = rec.subpath().elements().to_vec();
        e.push(Value::str(reporter));
        self.prefix.join(&e)
    }

    /// A new, unwritten record at `PREFIX/NAME/TOCK`.
    async fn allocate(&self) -> Result<ErrorRecord, ClientError> {
        let tock = self.client.get_tock().await?;
        Ok(ErrorRecord {
            node: Value::str(&self.name),
            tock: Value::uint(tock),
            value: Value::Map(Vec::new()),
            chain: Value::Nil,
        })
    }

    /// Writes `rec`'s value with the chain it was read with (a new record
    /// must still be new), and keeps the new chain.
    async fn save(&self, rec: &mut ErrorRecord) -> Result<(), ClientError> {
        let path = self.prefix.join(rec.subpath().elements());
        let opts = UpdateOptions {
            chain: Some(rec.chain.clone()),
            nchain: 3,
            idem: Some(true),
            ..UpdateOptions::default()
        };
        let reply = self
            .client
            .set_value(&path, rec.value.clone(), &opts)
            .await?;
        if let Some(c) = reply.get("chain") {
            rec.chain = c.clone();
        }
        Ok(())
    }

    /// Updates this client's detail below `rec` with `report`, keeping
    /// fields the report does not replace.
    async fn add_detail(&self, rec: &ErrorRecord, report: &ErrorReport) -> Result<(), ClientError> {
        let path = self.detail_path(rec, &self.name);
        let old = self.client.get_value(&path, 3).await?;
        let mut value = old.get("value").cloned().unwrap_or(Value::Map(Vec::new()));
        if !matches!(value, Value::Map(_)) {
            value = Value::Map(Vec::new());
        }
        let tock = self.client.get_tock().await?;
        let map = map_of(&mut value);
        put(map, "seen", Value::Float(now()));
        put(map, "tock", Value::uint(tock));
        // DistKV: `comment or repr(exc)`, which is "None" without either.
        let comment = report
            .comment
            .as_deref()
            .or(report.error.as_deref())
            .unwrap_or("None");
        put(map, "comment", Value::str(comment));
        if let Some(t) = &report.trace {
            put(map, "trace", Value::str(t));
        }
        if let Some(m) = &report.message {
            put(map, "message", Value::str(m));
        }
        let data = report.data.clone().unwrap_or(Value::Map(Vec::new()));
        put(map, "data", data);
        let opts = UpdateOptions {
            chain: Some(old.get("chain").cloned().unwrap_or(Value::Nil)),
            nchain: 3,
            idem: Some(true),
            ..UpdateOptions::default()
        };
        self.client.set_value(&path, value, &opts).await?;
        Ok(())
    }
}

/// Whether `e` is the node's answer to reading a subtree that does not
/// exist (no error was ever recorded).
pub fn is_missing(e: &ClientError) -> bool {
    matches!(e, ClientError::Server(text) if text.starts_with("KeyError"))
}

/// A `get_tree` item at depth 2 below the prefix as a record.
fn record_from(msg: &Value) -> Option<ErrorRecord> {
    let Some(Value::Path(p)) = msg.get("path") else {
        return None;
    };
    let [node, tock] = p.elements() else {
        return None;
    };
    Some(ErrorRecord {
        node: node.clone(),
        tock: tock.clone(),
        value: msg.get("value")?.clone(),
        chain: msg.get("chain").cloned().unwrap_or(Value::Nil),
    })
}

/// The record of (`subsystem`, `path`) among `all`; see [`ErrorRoot::find`].
fn pick(all: Vec<ErrorRecord>, subsystem: &str, path: &Path) -> Option<ErrorRecord> {
    all.into_iter()
        .filter(|r| r.subsystem() == Some(subsystem) && r.path() == Some(path))
        .min_by(|a, b| {
            let ka = (a.resolved(), a.keep_order());
            let kb = (b.resolved(), b.keep_order());
            ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// The pairs of a map value, turning anything else into an empty map.
fn map_of(v: &mut Value) -> &mut Vec<(Value, Value)> {
    if !matches!(v, Value::Map(_)) {
        *v = Value::Map(Vec::new());
    }
    match v {
        Value::Map(pairs) => pairs,
        _ => unreachable!("just made a map"),
    }
}

fn map_get<'v>(pairs: &'v [(Value, Value)], key: &str) -> Option<&'v Value> {
    pairs
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// `d[key] = value`: replaces in place, else appends.
fn put(pairs: &mut Vec<(Value, Value)>, key: &str, value: Value) {
    match pairs.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
        Some(slot) => slot.1 = value,
        None => pairs.push((Value::str(key), value)),
    }
}

/// Wall-clock time in seconds since the epoch (DistKV's `time()`).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, tock: i64, value: Value) -> ErrorRecord {
        ErrorRecord {
            node: Value::str(node),
            tock: Value::Int(tock),
            value,
            chain: Value::Nil,
        }
    }

    fn val(sub: &str, path: &str, resolved: bool, first: Option<f64>) -> Value {
        Value::map([
            ("subsystem", Value::str(sub)),
            ("path", Value::Path(Path::parse(path).unwrap())),
            ("resolved", Value::Bool(resolved)),
            ("first_seen", first.map(Value::Float).unwrap_or(Value::Nil)),
        ])
    }

    #[test]
    fn find_prefers_unresolved_then_the_record_a_merge_keeps() {
        let p = Path::parse("a.b").unwrap();
        let all = vec![
            rec("n1", 1, val("run", "a.b", true, Some(1.0))),
            rec("n3", 2, val("run", "a.b", false, Some(5.0))),
            rec("n2", 3, val("run", "a.b", false, Some(5.0))),
            rec("n0", 4, val("run", "a.b", false, None)),
            rec("n0", 5, val("other", "a.b", false, Some(0.0))),
            rec("n0", 6, val("run", "a", false, Some(0.0))),
        ];
        let got = pick(all.clone(), "run", &p).unwrap();
        assert_eq!((got.node.as_str(), &got.tock), (Some("n2"), &Value::Int(3)));
        let resolved_only = all.into_iter().filter(ErrorRecord::resolved).collect();
        let got = pick(resolved_only, "run", &p).unwrap();
        assert_eq!(got.node.as_str(), Some("n1"));
        assert!(pick(Vec::new(), "run", &p).is_none());
    }

    #[test]
    fn records_come_from_depth_two_items_only() {
        let item = Value::map([
            ("path", Value::Path(Path::parse("n1:5").unwrap())),
            ("value", Value::map([("count", Value::Int(1))])),
        ]);
        let r = record_from(&item).unwrap();
        assert_eq!(r.subpath(), Path::parse("n1:5").unwrap());
        assert_eq!(r.chain, Value::Nil);
        let deeper = Value::map([
            ("path", Value::Path(Path::parse("n1:5.n2").unwrap())),
            ("value", Value::Int(1)),
        ]);
        assert!(record_from(&deeper).is_none());
    }
}
