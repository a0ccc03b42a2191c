//! Peer discovery and links (mesh): the retained `peer` and `broker`
//! messages, a client per broker found, and the spellings of one broker
//! told apart (see the module docs).

use super::*;

impl Shared {
    /// Creates a client for the broker at `host:port`, known as `key`, and
    /// starts its event loop.
    pub(super) fn add_link(
        self: &Arc<Self>,
        st: &mut State,
        key: String,
        host: String,
        port: u16,
        own: bool,
    ) {
        if st.stopped || st.links.contains_key(&key) {
            return;
        }
        let id = client_id(&self.node, &key);
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        // (A mesh node's own broker is reached in-process: `add_local_link`.)
        if let Some(config) = self.link_tls.as_ref() {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        eventloop.set_network_options(net);
        let link = self.new_link(st, key, Client::Net(client), own);
        tokio::spawn(run_link(self.clone(), link, eventloop));
    }

    /// Makes `local`, the in-process link to this node's own embedded
    /// broker (known as `key`, its advertised address), the publisher and
    /// starts delivering what it forwards. Its "connection" is then to be
    /// completed by the caller ([`Shared::on_connack`], which takes the
    /// state's lock).
    pub(super) fn add_local_link(
        self: &Arc<Self>,
        st: &mut State,
        key: String,
        local: LocalLink,
    ) -> Arc<Link> {
        let tx = Arc::new(Mutex::new(local.tx));
        let link = self.new_link(st, key, Client::Local(tx.clone()), true);
        let run = client::run_local(self.clone(), link.clone(), tx, local.rx, local.relink);
        tokio::spawn(run);
        link
    }

    fn new_link(&self, st: &mut State, key: String, client: Client, own: bool) -> Arc<Link> {
        let link = Arc::new(Link {
            key: key.clone(),
            client: client.clone(),
            own,
            // Peer brokers deliver once their owner is known and unique.
            deliver: AtomicBool::new(own || !self.mesh),
            owner: Mutex::new(None),
        });
        if own {
            *self.publisher.write() = Some(client);
        }
        debug!(node = self.node, broker = key, "new MQTT client");
        st.known.insert(key.clone());
        st.links.insert(key, link.clone());
        link
    }

    /// Removes `link` from the active clients, if it still is one.
    pub(super) fn forget(&self, st: &mut State, link: &Arc<Link>) {
        if st
            .links
            .get(&link.key)
            .is_some_and(|l| Arc::ptr_eq(l, link))
        {
            st.links.remove(&link.key);
        }
    }

    /// A broker named its owner: keep the link only if it is the one link
    /// to that owner's broker.
    pub(super) fn on_owner(&self, link: &Arc<Link>, payload: &[u8]) -> bool {
        let Ok(owner) = std::str::from_utf8(payload) else {
            return true;
        };
        if owner.is_empty() {
            return true;
        }
        let mut st = self.state.lock();
        if owner == self.identity && !link.own {
            warn!(
                node = self.node,
                broker = link.key,
                "this broker address leads to this node's own broker (nodes sharing a host \
                 name? give each its own --advertise); not using it"
            );
            self.forget(&mut st, link);
            return false;
        }
        if !link.own {
            // The identity is "name nonce".
            let name = owner.rsplit_once(' ').map_or(owner, |(name, _)| name);
            st.reached
                .entry(name.to_owned())
                .or_default()
                .insert(link.key.clone());
        }
        let duplicate = st
            .links
            .values()
            .any(|l| !Arc::ptr_eq(l, link) && l.owner.lock().as_deref() == Some(owner));
        if duplicate {
            info!(
                node = self.node,
                broker = link.key,
                "another address of an already connected broker; closing this client"
            );
            self.forget(&mut st, link);
            return false;
        }
        *link.owner.lock() = Some(owner.to_owned());
        link.deliver.store(true, Ordering::Release);
        drop(st);
        if !link.own {
            self.links_tx.send_modify(|n| *n += 1);
        }
        true
    }

    /// Another node announced its broker: connect there if new.
    pub(super) fn on_peer(self: &Arc<Self>, name: &str, payload: &[u8]) {
        if name == self.node {
            return;
        }
        let Ok(addr) = std::str::from_utf8(payload) else {
            return;
        };
        let addr = addr.trim();
        if addr.is_empty() {
            return;
        }
        let (key, host, port) = match parse_host_port(addr) {
            Ok(a) => a,
            Err(e) => {
                warn!(peer = name, error = %e, "ignoring a bad peer announcement");
                return;
            }
        };
        let mut st = self.state.lock();
        let other = if Some(&key) == self.advertise.as_ref() {
            Some(self.node.clone())
        } else {
            st.announced
                .insert(key.clone(), name.to_owned())
                .filter(|n| n != name)
        };
        if let Some(other) = other {
            let mut pair = [other, name.to_owned()];
            pair.sort();
            let [a, b] = pair;
            if st.clashes.insert((key.clone(), a.clone(), b.clone())) {
                warn!(
                    node = self.node,
                    nodes = format!("{a}, {b}"),
                    broker = key,
                    "two nodes announce the same broker address: give each its own --advertise"
                );
            }
        }
        if st.stopped || st.known.contains(&key) || Some(&key) == self.advertise.as_ref() {
            return;
        }
        info!(
            node = self.node,
            peer = name,
            broker = key,
            "learned a peer broker"
        );
        self.add_link(&mut st, key, host, port, false);
    }
}

/// The address to announce when none is configured.
pub(super) fn default_advertise(listen_host: &str, port: u16) -> String {
    if addr::is_unspecified(listen_host) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        addr::join(&host, port)
    } else {
        addr::join(listen_host, port)
    }
}

/// A client id unique per (node, broker) that brokers accept: rumqttd
/// refuses `+ # / $`.
pub(super) fn client_id(node: &str, broker: &str) -> String {
    format!("{node}@{broker}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:@[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
