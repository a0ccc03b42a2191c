//! The embedded broker: rumqttd's router with this node's in-process link
//! into it, its MQTT server on an internal loopback port, and the relay
//! that accepts the public connections for it (see the module docs for
//! why).

use rumqttd::local::{LinkRx, LinkTx};

use super::*;

/// This node's own link to the embedded broker: in-process, no socket.
pub(super) struct LocalLink {
    pub(super) tx: LinkTx,
    pub(super) rx: LinkRx,
    /// Makes a new link, for when the router dropped this one.
    pub(super) relink: Relink,
}

/// Makes a link into the embedded broker's router, under a client id of
/// its own. Blocks until the router acknowledges it (microseconds).
pub(super) type Relink = Arc<dyn Fn() -> Result<(LinkTx, LinkRx), String> + Send + Sync>;

/// Starts rumqttd: its router, a link into it for node `node`, and its
/// MQTT server on a free loopback port, once that accepts connections.
/// Returns that internal address and the link.
///
/// The node's own link is rumqttd's in-process one: the messages it
/// publishes reach the router as the very buffers the node encoded, and
/// the broker's log keeps those, not the read buffers of a connection
/// they would have arrived in (each keeping a neighbour's bytes alive:
/// ≈ 15 MB more at the log's bound), and neither side encodes, sends or
/// parses them as MQTT packets.
///
/// rumqttd binds the server's port itself, so a free one is found by
/// binding and releasing it first: another socket could take it in
/// between; if rumqttd then fails to bind, the server is started again on
/// a new port.
pub(super) async fn start_broker(node: &str) -> Result<(SocketAddr, LocalLink), MqttError> {
    let (router, connections) = broker_config();
    let router_tx = rumqttd::Router::new(0, router).spawn();
    let (node, to_router) = (node.to_owned(), router_tx.clone());
    // As for the network clients: a message on a topic nobody subscribed
    // to yet is kept, not refused (which would end the link).
    let dynamic = connections.dynamic_filters;
    let relink: Relink = Arc::new(move || {
        // A client id nobody can know: a network client connecting under
        // this link's id would make the router drop the link.
        let id = client_id(&node, &format!("embedded.{:016x}", rand::random::<u64>()));
        let (tx, rx, _ack) = rumqttd::local::LinkBuilder::new(&id, to_router.clone())
            .dynamic_filters(dynamic)
            .build()
            .map_err(|e| e.to_string())?;
        Ok((tx, rx))
    });
    let (tx, rx) = build_link(&relink)
        .await
        .map_err(|e| MqttError::Broker(format!("no link to the router: {e}")))?;
    let link = LocalLink { tx, rx, relink };
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
        let mut server = rumqttd::Server::new(
            server_settings(addr, connections.clone()),
            router_tx.clone(),
            rumqttd::protocol::v4::V4,
        );
        let thread = std::thread::Builder::new()
            .name("distkv-v4".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let served = match runtime {
                    Ok(runtime) => runtime
                        .block_on(server.start(rumqttd::LinkType::Remote))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = served {
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
                return Ok((addr, link));
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
/// long ago stays in memory until it is rotated out. The node's own
/// messages are kept as the buffers it encoded them in (its in-process
/// link); a message that came over a connection keeps the connection's
/// whole read buffer alive, which grows by doubling (when the node's own
/// messages came that way: ≈ 3.9 MB of RSS per segment under a node's
/// fill, ≈ 31 MB for the log, docs/perf.md). A subscriber whose
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

/// Runs `relink` off the async threads.
pub(super) async fn build_link(relink: &Relink) -> Result<(LinkTx, LinkRx), String> {
    let relink = relink.clone();
    tokio::task::spawn_blocking(move || relink())
        .await
        .map_err(|e| e.to_string())?
}

/// The embedded broker's settings: its router's, and its connections'.
fn broker_config() -> (rumqttd::RouterConfig, rumqttd::ConnectionSettings) {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 10_000,
        // QoS 0 messages handed to a connection per router pass.
        max_outgoing_packet_count: 1_000,
        max_segment_size: BROKER_SEGMENT_BYTES,
        max_segment_count: BROKER_SEGMENTS,
        ..Default::default()
    };
    (router, connections)
}

/// The MQTT server of the embedded broker, on `listen`.
fn server_settings(
    listen: SocketAddr,
    connections: rumqttd::ConnectionSettings,
) -> rumqttd::ServerSettings {
    rumqttd::ServerSettings {
        name: "distkv-v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
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
