//! The embedded broker: rumqttd on an internal loopback port, and the
//! relay that accepts the public connections for it (see the module
//! docs for why).

use super::*;

/// Starts rumqttd on a free loopback port and waits until it accepts
/// connections. Returns that internal address.
///
/// rumqttd binds the port itself, so a free one is found by binding and
/// releasing it first: another socket could take it in between; if rumqttd
/// then fails to bind, the start is retried on a new port.
pub(super) async fn start_broker() -> Result<SocketAddr, MqttError> {
    let mut last_error = String::new();
    for _ in 0..3 {
        // A random loopback address (Linux routes all of 127/8 to the
        // loopback interface) makes it unlikely that another listener
        // takes the port before rumqttd binds it.
        let ip = std::net::Ipv4Addr::new(
            127,
            rand::random::<u8>() % 254 + 1,
            rand::random(),
            rand::random::<u8>() % 254 + 1,
        );
        let addr = StdTcpListener::bind((ip, 0))
            .or_else(|_| StdTcpListener::bind(("127.0.0.1", 0)))
            .and_then(|l| l.local_addr())
            .map_err(|e| MqttError::Broker(format!("no free loopback port: {e}")))?;
        let config = broker_config(addr);
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    warn!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(|e| MqttError::Broker(format!("cannot start a thread: {e}")))?;
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            if thread.is_finished() {
                last_error = format!("rumqttd could not serve {addr}");
                break;
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(addr);
            }
            if Instant::now() >= deadline {
                return Err(MqttError::Broker(format!(
                    "rumqttd did not accept connections on {addr} within {BROKER_START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Err(MqttError::Broker(last_error))
}

/// Bytes of one segment of the broker's in-memory log (see
/// [`BROKER_SEGMENTS`]).
const BROKER_SEGMENT_BYTES: usize = 2 << 20;

/// Segments of the broker's in-memory log, the one being filled included.
///
/// rumqttd appends every message to a log per subscribed filter and keeps
/// it in memory; each subscriber reads the log at its own cursor. When the
/// segment being filled is full and there are this many, the oldest one is
/// dropped whole, so the log holds 14 – 16 MiB of payload (counted as
/// topic + payload + 4; a segment overflows by its last message, up to
/// [`MAX_PACKET`]; the messages' own structs come on top) and
/// *always* that much once that much passed through — traffic a link read
/// long ago stays in memory until it is rotated out. In memory it is
/// nearly twice that: rumqttd keeps each message in the read buffer it
/// arrived in, which grows by doubling (≈ 3.9 MB of RSS per segment under
/// a node's fill, ≈ 31 MB for the log: docs/perf.md, "A snapshot loaded in
/// its own order"). A subscriber whose
/// cursor is in a dropped segment jumps to the oldest one still there: it
/// loses what it had not read, as the `Bus` contract allows.
///
/// What a subscriber needs: a link that keeps up lags by the messages in
/// flight (ms); a peer that stalls for a moment (a pause, a burst of
/// repair answers) needs its stall times the rate of the writes. At the
/// ≈ 30 MB/s of updates a replicating node publishes at 176 000 sets/s
/// (docs/perf.md), 16 MiB cover a stall of about half a second. A peer that
/// lags further, or keeps falling behind, is not helped by any finite log:
/// it loses updates, sees gaps in the senders' ticks and asks for them
/// (`info.missing`; the repair in `distkv_core::cluster::core::repair`), as
/// after a partition. A larger log (it was 64 MiB) only delays that, at a
/// fixed cost in memory on every node.
const BROKER_SEGMENTS: usize = 8;

/// The embedded broker's settings.
pub(super) fn broker_config(listen: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "distkv-v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            // QoS 0 messages handed to a connection per router pass.
            max_outgoing_packet_count: 1_000,
            max_segment_size: BROKER_SEGMENT_BYTES,
            max_segment_count: BROKER_SEGMENTS,
            ..Default::default()
        },
        v4: Some(HashMap::from([("distkv".to_owned(), server)])),
        ..Default::default()
    }
}

/// Binds the public listen address of the embedded broker.
pub(super) async fn bind_public(
    listen: &(String, u16),
) -> Result<(SocketAddr, TcpListener), MqttError> {
    let addr = addr::join(&listen.0, listen.1);
    let listener = crate::addr::bind(&listen.0, listen.1)
        .await
        .map_err(|source| MqttError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| MqttError::Listen { addr, source })?;
    Ok((local, listener))
}

/// Copies between a public connection and the embedded broker until either
/// side closes or `stop`.
async fn pipe<S>(mut inbound: S, broker: SocketAddr, from: SocketAddr, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut outbound = match TcpStream::connect(broker).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "embedded MQTT broker unreachable");
            return;
        }
    };
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        () = stop.cancelled() => {}
        done = tokio::io::copy_bidirectional_with_sizes(
            &mut inbound, &mut outbound, RELAY_BUFFER, RELAY_BUFFER,
        ) => debug!(%from, result = ?done, "MQTT connection closed"),
    }
}

/// Accepts connections on the public address and relays each to the
/// embedded broker, until `stop`; with `tls`, each completes its TLS
/// handshake first (a failed one is logged and dropped).
pub(super) async fn relay(
    listener: TcpListener,
    broker: SocketAddr,
    tls: Option<Acceptor>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (inbound, from) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // E.g. out of file descriptors: wait a little for relief.
                warn!(error = %e, "cannot accept an MQTT connection");
                tokio::time::sleep(MIN_BACKOFF).await;
                continue;
            }
        };
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match tls {
                None => pipe(inbound, broker, from, stop).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE, tls.accept_stream(inbound));
                    match handshake.await {
                        Ok(Ok(inbound)) => pipe(inbound, broker, from, stop).await,
                        Ok(Err(e)) => {
                            warn!(%from, error = %e, "TLS handshake on the bus port failed")
                        }
                        Err(_) => warn!(%from, "TLS handshake on the bus port timed out"),
                    }
                }
            }
        });
    }
}
