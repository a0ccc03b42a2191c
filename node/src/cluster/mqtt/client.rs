//! What a link talks through: an MQTT client over the network (a peer's
//! broker, an external broker), or the in-process link of this node's own
//! embedded broker (see [`super::broker::start_broker`]).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;

use super::broker::{build_link, Relink};
use super::*;

/// One broker's client, of either kind.
#[derive(Clone)]
pub(super) enum Client {
    /// rumqttc, over TCP (and TLS).
    Net(AsyncClient),
    /// The embedded broker's router, in-process.
    Local(Arc<Mutex<LinkTx>>),
}

/// Why a client did not take a request.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientError {
    /// rumqttc's request queue is full or its event loop is gone.
    #[error(transparent)]
    Net(Box<rumqttc::ClientError>),
    /// The embedded broker's router is gone.
    #[error(transparent)]
    Local(Box<LinkError>),
    /// The embedded broker's router did not take the request at once.
    #[error("the embedded broker's router did not take the request")]
    Waited,
}

impl From<rumqttc::ClientError> for ClientError {
    fn from(e: rumqttc::ClientError) -> ClientError {
        ClientError::Net(Box::new(e))
    }
}

impl From<LinkError> for ClientError {
    fn from(e: LinkError) -> ClientError {
        ClientError::Local(Box::new(e))
    }
}

impl Client {
    /// Publishes `payload` on `topic` at QoS 0.
    pub(super) fn publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        match self {
            Client::Net(c) => c.try_publish(topic, QoS::AtMostOnce, retain, Vec::from(payload))?,
            Client::Local(tx) => {
                let topic = Bytes::copy_from_slice(topic.as_bytes());
                let publish = Publish::new(topic, payload, retain);
                local(tx.lock().send(Packet::Publish(publish, None)))?;
            }
        }
        Ok(())
    }

    /// Subscribes to every filter of `filters` at QoS 0.
    pub(super) fn subscribe(&self, filters: &[String]) -> Result<(), ClientError> {
        match self {
            Client::Net(c) => c.try_subscribe_many(
                filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce)),
            )?,
            Client::Local(tx) => {
                let mut tx = tx.lock();
                for f in filters {
                    tx.subscribe(f.as_str())?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn unsubscribe(&self, filter: &str) -> Result<(), ClientError> {
        match self {
            Client::Net(c) => c.try_unsubscribe(filter)?,
            Client::Local(tx) => {
                tx.lock().unsubscribe(filter)?;
            }
        }
        Ok(())
    }

    /// Says goodbye (a network client); the in-process link stays with the
    /// router, which cannot be stopped (see the module docs).
    pub(super) fn disconnect(&self) {
        if let Client::Net(c) = self {
            let _ = c.try_disconnect();
        }
    }
}

/// Runs one of [`LinkTx`]'s requests. They are `async` but never wait
/// (they hand the packet over and wake the router with a channel's blocking
/// send, which waits only while the router is a thousand events behind);
/// one that did wait would be dropped, as a full queue drops.
fn local<T>(request: impl Future<Output = Result<T, LinkError>>) -> Result<T, ClientError> {
    match pin!(request).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(done) => Ok(done?),
        Poll::Pending => Err(ClientError::Waited),
    }
}

/// Delivers what the embedded broker forwards on this node's own link
/// until the bus stops or the router is gone. Should the router drop the
/// link (it ends the link's channel, with a `Disconnect` first if it gives
/// a reason), a new one takes its place in `tx` under a new client id and
/// is set up like a reconnected client; if none can be made, the router is
/// gone.
pub(super) async fn run_local(
    shared: Arc<Shared>,
    link: Arc<Link>,
    tx: Arc<Mutex<LinkTx>>,
    mut rx: LinkRx,
    relink: Relink,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            next = rx.next() => next,
        };
        let dropped = match next {
            Ok(Some(Notification::Forward(f))) => {
                backoff = MIN_BACKOFF;
                if let Ok(topic) = String::from_utf8(f.publish.topic.to_vec()) {
                    shared.on_publish(&link, topic, f.publish.payload);
                }
                continue;
            }
            // The router stops forwarding when the link's buffer is full,
            // until it is told the link is ready again.
            Ok(Some(Notification::Unschedule)) => match rx.wake().await {
                Ok(()) => continue,
                Err(e) => e.to_string(),
            },
            Ok(Some(Notification::Disconnect(d, _))) => format!("{:?}", d.reason_code),
            Ok(_) => continue,
            Err(e) => e.to_string(),
        };
        warn!(
            node = shared.node,
            reason = dropped,
            "the embedded MQTT broker dropped this node's link; making a new one"
        );
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match build_link(&relink).await {
            Ok((new_tx, new_rx)) => {
                *tx.lock() = new_tx;
                rx = new_rx;
                shared.on_connack(&link);
            }
            Err(e) => {
                warn!(node = shared.node, error = %e, "embedded MQTT broker gone");
                break;
            }
        }
    }
    shared.forget(&mut shared.state.lock(), &link);
}
