//! TLS for the client protocol and the bus: optional, off unless
//! configured.
//!
//! This module owns everything TLS: reading PEM files into rustls
//! configurations ([`ServerTls`], [`ClientTls`]), the accepting and
//! connecting ends ([`Acceptor`], [`Connector`]), and [`Socket`], a
//! connection that is plain TCP or TLS over TCP, split into halves that
//! the message reader and writer own.
//!
//! Invariants:
//!
//! * rustls runs on the `ring` provider, chosen explicitly for every
//!   configuration: nothing depends on a process-wide default provider.
//! * Files are read once, when a configuration is built (at a node's start
//!   or a client's connect); a bad file is an error naming the file and
//!   what is wrong, never a panic and never a silent fallback to plain TCP.
//! * A plain connection is the bare tokio TCP halves inside a one-branch
//!   match: no lock, no extra copy, no dynamic dispatch. A TLS connection
//!   is split with `tokio::io::split` (its two halves share the session).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

pub use tokio_rustls::rustls;

/// Why a TLS setting cannot be used: the text names the file and the
/// problem, for the operator to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} file {file}: {source}")]
    Read {
        /// What the file should hold (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM data of the kind needed.
    #[error("the {what} file {file} is not usable: {reason}")]
    Invalid {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files do not fit together (e.g. the key is not the
    /// certificate's), or rustls refused them.
    #[error("TLS settings refused: {0}")]
    Refused(String),
    /// A host name that cannot be checked against a certificate.
    #[error("{0:?} cannot be checked against a certificate: not a DNS name or IP address")]
    ServerName(String),
}

/// The crypto provider of every configuration made here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn load_certs(
    file: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, what, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(file, what, "it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "private key";
    let pem = read(file, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(file, what, "it holds no PEM private key".into())
        }
        e => invalid(file, what, e.to_string()),
    })
}

/// The certificates of a PEM file as trust anchors.
fn load_roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let what = "CA";
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file, what)? {
        roots
            .add(cert)
            .map_err(|e| invalid(file, what, e.to_string()))?;
    }
    Ok(roots)
}

/// The operating system's trust anchors (what `connect.ssl: true` uses).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::Refused(format!(
            "no system CA certificates ({why}); name a CA file"
        )));
    }
    Ok(roots)
}

fn read(file: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        what,
        file: file.to_path_buf(),
        source,
    })
}

fn invalid(file: &Path, what: &'static str, reason: String) -> TlsError {
    TlsError::Invalid {
        what,
        file: file.to_path_buf(),
        reason,
    }
}

/// The accepting end's files: `server.bind_default.ssl` (DistKV's
/// `{cert, key}`, plus `ca` to require client certificates), and a node's
/// bus listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// If set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Reads the files into an acceptor. Fails if a file is missing or
    /// unreadable, holds no certificate or key, or the key does not belong
    /// to the certificate.
    pub fn acceptor(&self) -> Result<Acceptor, TlsError> {
        let certs = load_certs(&self.cert, "certificate")?;
        let key = load_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(refused)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(refused)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError::Refused(format!(
                "certificate {} with key {}: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })?;
        Ok(Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// The connecting end's files: `connect.ssl` (`true`: the system's CAs;
/// `{ca, cert, key}`), and a node's links to other nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must be signed by; `None`: the
    /// operating system's CAs.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Reads the files into a rustls client configuration.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.ca {
            Some(ca) => load_roots(ca)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "certificate")?, load_key(key)?)
                .map_err(|e| {
                    TlsError::Refused(format!(
                        "certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
        };
        Ok(Arc::new(config))
    }
}

fn refused(e: impl std::fmt::Display) -> TlsError {
    TlsError::Refused(e.to_string())
}

/// Accepts TLS connections with one configuration.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// Runs the server side of the handshake on `tcp`. The caller bounds
    /// how long it may take.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Socket> {
        let tls = self.inner.accept(tcp).await?;
        Ok(Socket::Tls(Box::new(TlsStream::Server(tls))))
    }

    /// The server side of the handshake over any byte stream (the bus
    /// relay's connections).
    pub async fn accept_stream<S>(&self, io: S) -> io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.accept(io).await
    }
}

/// Connects with TLS to one server name.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Connects with `config`, checking the server's certificate against
    /// `host` (a DNS name or an IP address; IPv6 with or without
    /// brackets).
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Connector, TlsError> {
        let bare = host
            .trim()
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host.trim());
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| TlsError::ServerName(host.to_owned()))?;
        Ok(Connector { config, name })
    }

    /// Runs the client side of the handshake on `tcp`. The caller bounds
    /// how long it may take.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<Socket> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector.connect(self.name.clone(), tcp).await?;
        Ok(Socket::Tls(Box::new(TlsStream::Client(tls))))
    }
}

/// A connection of the client protocol: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Socket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (either end).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// Splits the connection into halves that can be used by two tasks.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Socket::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Socket::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// The reading half of a [`Socket`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`Socket`].
#[derive(Debug)]
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(w) => w.is_write_vectored(),
            WriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_config() -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[test]
    fn server_names_are_dns_names_or_addresses_with_or_without_brackets() {
        let name = |h: &str| Connector::new(empty_config(), h).map(|c| c.name);
        assert_eq!(
            name("localhost").ok(),
            Some(ServerName::try_from("localhost").unwrap())
        );
        let v6 = ServerName::try_from("::1").unwrap();
        assert_eq!(name("[::1]").ok(), Some(v6.clone()));
        assert_eq!(name("::1").ok(), Some(v6));
        assert!(matches!(name("not a name"), Err(TlsError::ServerName(_))));
        assert!(matches!(name(""), Err(TlsError::ServerName(_))));
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("distkv-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.join("missing.pem");
        let e = load_certs(&missing, "certificate").unwrap_err().to_string();
        assert!(
            e.contains("cannot read the certificate file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = load_certs(&empty, "CA").unwrap_err().to_string();
        assert!(
            e.contains("CA file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load_key(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM private key"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
