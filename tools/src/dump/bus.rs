//! `distkv dump msg|post`: a plain MQTT client on the cluster's bus.
//!
//! With an external broker (`server.mqtt`) every node's messages pass
//! through it. In mesh mode each node publishes to its own embedded broker
//! only, so connecting to one node's broker shows that node's messages, and
//! a message posted there reaches every node (each subscribes to every
//! broker).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use distkv_model::codec::{self, Limits};
use distkv_model::{Path, Value};
use distkv_node::config::keys::MqttKeys;
use distkv_node::config::Config;
use distkv_yaml::top_level;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::client::output::{iso_time, now};
use crate::msgfile::yaml_documents;

/// Largest message accepted or sent (the node's own limit).
const MAX_PACKET: usize = distkv_model::budget::MAX_MESSAGE_BYTES + 64 * 1024;
/// How long `post` waits for the broker to take its messages.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker to use: `server.mqtt`, else the embedded broker of the node
/// at `connect.host`.
fn broker(cfg: &Config) -> anyhow::Result<(String, u16)> {
    let keys = cfg.keys()?;
    let url = match &keys.server.mqtt {
        Some(MqttKeys::Url(u)) | Some(MqttKeys::Map { uri: u }) => u.clone(),
        None => {
            let host = cfg.connect()?.host;
            return Ok((host, keys.server.bus.port));
        }
    };
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(&url);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse().map_err(|_| anyhow!("bad port in {url}"))?;
            Ok((h.trim_matches(['[', ']']).to_string(), port))
        }
        None => Ok((rest.to_string(), 1883)),
    }
}

/// The topic of a command-line path: `:` is the root's `update`, `+NAME`
/// the root's NAME (`+` alone: everything below the root).
fn topic(cfg: &Config, path: &Path) -> anyhow::Result<String> {
    let root = cfg.keys()?.server.root.join("/");
    let els = path.elements();
    Ok(match els {
        [] => format!("{root}/update"),
        [Value::Str(s)] if s.starts_with('+') => match &s[1..] {
            "" => format!("{root}/#"),
            name => format!("{root}/{name}"),
        },
        _ => topic_of(path),
    })
}

/// Path elements joined by `/`.
fn topic_of(path: &Path) -> String {
    path.iter()
        .map(|e| match e {
            Value::Str(s) => s.to_string(),
            e => e.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn options(cfg: &Config, what: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = broker(cfg)?;
    let id = format!("distkv-dump-{what}-{}", std::process::id());
    let mut o = MqttOptions::new(id, host, port);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_keep_alive(Duration::from_secs(5));
    Ok(o)
}

/// `dump msg`: prints every message on the topic as YAML, with `_topic`
/// and `_timestamp`, until interrupted.
pub async fn monitor(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    let topic = topic(cfg, path)?;
    let opts = options(cfg, "msg")?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(&topic, QoS::AtMostOnce)
        .await
        .context("subscribing")?;
    let limits = Limits {
        max_frame: MAX_PACKET,
        foreign_ext: true,
        ..Limits::default()
    };
    loop {
        let ev = tokio::select! {
            ev = events.poll() => ev.context("MQTT connection")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Event::Incoming(Packet::Publish(p)) = ev else {
            continue;
        };
        let mut v = match codec::decode_with(&p.payload, limits) {
            Ok(v @ Value::Map(_)) => v,
            Ok(v) => Value::map([("_data", v)]),
            Err(_) => Value::map([("_data", Value::from(&p.payload[..]))]),
        };
        if let Value::Map(pairs) = &mut v {
            let t: Vec<Value> = p.topic.split('/').map(Value::str).collect();
            pairs.push((Value::str("_topic"), Value::Path(Path::new(t))));
            pairs.push((Value::str("_timestamp"), Value::str(&iso_time(now()))));
        }
        println!("{}---", top_level(&v));
    }
}

/// `dump post`: publishes each YAML document from standard input.
pub async fn post(cfg: &Config, path: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading standard input")?;
    let docs = yaml_documents(&text)?;
    let default = topic_of(path);
    let opts = options(cfg, "post")?;
    let (client, mut events) = AsyncClient::new(opts, docs.len() + 8);
    let mut n = 0;
    for mut d in docs {
        let t = match super::super::client::output::take(&mut d, "_topic") {
            Some(Value::Path(p)) => topic_of(&p),
            Some(Value::Str(s)) => s.to_string(),
            Some(other) => bail!("_topic must be a path: {other}"),
            None => default.clone(),
        };
        client
            .publish(t, QoS::AtMostOnce, false, codec::to_vec(&d))
            .await
            .context("publishing")?;
        n += 1;
    }
    client.disconnect().await.context("disconnecting")?;
    let deadline = tokio::time::Instant::now() + POST_TIMEOUT;
    let mut sent = 0;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .map_err(|_| anyhow!("the broker did not take the messages in time"))?
            .context("MQTT connection")?;
        match ev {
            Event::Outgoing(Outgoing::Publish(_)) => sent += 1,
            Event::Outgoing(Outgoing::Disconnect) if sent >= n => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_paths() {
        let cfg = Config::default();
        let t = |s: &str| topic(&cfg, &Path::parse(s).unwrap()).unwrap();
        assert_eq!(t(":"), ":distkv/update");
        assert_eq!(t("+ping"), ":distkv/ping");
        assert_eq!(t("+"), ":distkv/#");
        assert_eq!(t("a.b"), "a/b");
    }
}
