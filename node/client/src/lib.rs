//! DistKV's client protocol, shared by the node's server and every client.
//!
//! * [`wire`] — framed msgpack over async byte streams, with the limits
//!   checked before anything is built.
//! * [`client`] — an async client: one TCP connection, many concurrent
//!   requests and streams.
//! * [`fetch`] — reading a live node's whole state.
//! * [`login`] — the cryptography of password login, for both ends.
//! * [`auth`] — the client's side of login and user management.
//! * [`tls`] — optional TLS: PEM files into rustls configurations, and the
//!   connection that is plain TCP or TLS.
//! * [`errors`] — error records in the tree (DistKV's `ErrorRoot`).
//! * [`raw`] — a stream message's fields read in place, for consumers of
//!   big streams that need not build each message.
//!
//! It needs tokio's networking and nothing of the node: `distkv-replay`
//! reads a live node's state through it without linking the MQTT bus.

#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod errors;
pub mod fetch;
pub mod login;
pub mod raw;
pub mod tls;
pub mod wire;
