//! TLS, end to end over real TCP: the client port (our client, Python's
//! `ssl` module, clients that must be refused), the node's start with good
//! and bad certificate files (the binary), and a three-node cluster whose
//! bus links, broker ports and state transfers all run over TLS.
//!
//! Certificates are made at test time with rcgen (a CA, and a certificate
//! per node for `localhost` and `127.0.0.1` signed by it) into a temporary
//! directory: no private key is kept in the repository. Their keys come from
//! ring's system RNG, which cannot be seeded; nothing here depends on their
//! bytes.

mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Value};
use distkv_node::bus::Bus;
use distkv_node::client::{Client, ClientError, ConnectOptions, UpdateOptions};
use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode, MqttTls};
use distkv_node::node::{BusSpec, NodeBuilder, NodeError, Start};
use distkv_node::server::{self, ServerOptions};
use distkv_node::tls::{rustls::ClientConfig, ClientTls, Connector, ServerTls, TlsError};
use distkv_tests::{eventually, quick_cluster, within};
use process::{distkv_bin, python, workspace, Launch};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A CA and the certificates it signs, as PEM files in a temporary
/// directory.
struct Pki {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A node's certificate and key files.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Result<Pki> {
        let dir = tempfile::Builder::new().prefix("distkv-tls-").tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::write(dir.path().join("ca.pem"), issuer.pem())?;
        Ok(Pki { dir, issuer })
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `localhost` and `127.0.0.1`, signed by the CA.
    fn identity(&self, name: &str) -> Result<Identity> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let id = Identity {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&id.cert, cert.pem())?;
        std::fs::write(&id.key, key.serialize_pem())?;
        Ok(id)
    }

    /// A client configuration trusting this CA.
    fn client_config(&self) -> Result<Arc<ClientConfig>> {
        Ok(ClientTls {
            ca: Some(self.ca()),
            identity: None,
        }
        .config()?)
    }

    /// A TLS connector for `host` trusting this CA.
    fn connector(&self, host: &str) -> Result<Connector> {
        Ok(Connector::new(self.client_config()?, host)?)
    }
}

fn server_tls(id: &Identity) -> ServerTls {
    ServerTls {
        cert: id.cert.clone(),
        key: id.key.clone(),
        client_ca: None,
    }
}

/// An in-process node serving clients with TLS on `127.0.0.1:0`.
struct TlsNode {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    running: JoinHandle<Result<(), NodeError>>,
}

impl TlsNode {
    async fn start(name: &str, id: &Identity) -> Result<TlsNode> {
        TlsNode::start_with(name, server_tls(id)).await
    }

    async fn start_with(name: &str, tls: ServerTls) -> Result<TlsNode> {
        let opts = ServerOptions {
            tls: Some(tls.acceptor()?),
            ..ServerOptions::default()
        };
        let listener = server::bind("127.0.0.1", 0).await?;
        let node = NodeBuilder::new(name).options(opts).build(listener).await?;
        let addr = node.local_addr();
        let stop = CancellationToken::new();
        let running = tokio::spawn(node.run(stop.clone()));
        Ok(TlsNode {
            addr,
            stop,
            running,
        })
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        within("the node to stop", self.running).await???;
        Ok(())
    }
}

fn tls_opts(c: Connector) -> ConnectOptions {
    ConnectOptions {
        tls: Some(c),
        ..ConnectOptions::default()
    }
}

/// Sets `key` to `value` and reads it back.
async fn round_trip(c: &Client, key: &str, value: &str) -> Result<()> {
    let p = path![key];
    c.set_value(&p, Value::str(value), &UpdateOptions::default())
        .await?;
    let got = c.get_value(&p, 0).await?;
    ensure!(
        got.get("value") == Some(&Value::str(value)),
        "read back {got}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_node_serves_clients_that_trust_its_ca() -> Result<()> {
    let pki = Pki::new("serve")?;
    let node = TlsNode::start("tls1", &pki.identity("tls1")?).await?;
    // By DNS name and by IP address, both in the certificate.
    for host in ["localhost", "127.0.0.1"] {
        let c = Client::connect(node.addr, tls_opts(pki.connector(host)?)).await?;
        ensure!(c.greeting().node == "tls1", "greeting {:?}", c.greeting());
        round_trip(&c, host, "over TLS").await?;
    }
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_tls_or_without_the_ca_are_refused_and_the_node_keeps_serving() -> Result<()>
{
    let pki = Pki::new("refuse")?;
    let node = TlsNode::start("tls2", &pki.identity("tls2")?).await?;

    // Plain TCP: the node waits for a TLS hello and never greets.
    let plain = ConnectOptions {
        timeout: Duration::from_millis(500),
        ..ConnectOptions::default()
    };
    match Client::connect(node.addr, plain).await {
        Err(e @ ClientError::Timeout(_)) => ensure!(
            e.to_string().contains("connect.ssl"),
            "the timeout should point at TLS: {e}"
        ),
        Err(e) => bail!("plain client: unexpected error {e}"),
        Ok(_) => bail!("a plain client was greeted by a TLS node"),
    }

    // TLS with another CA: the certificate is not trusted.
    let other = Pki::new("other")?;
    match Client::connect(node.addr, tls_opts(other.connector("localhost")?)).await {
        Err(e @ ClientError::Tls(_)) => ensure!(
            e.to_string().contains("UnknownIssuer"),
            "the error should say the issuer is unknown: {e}"
        ),
        Err(e) => bail!("client without the CA: unexpected error {e}"),
        Ok(_) => bail!("a client without the CA was greeted"),
    }

    // TLS with the CA but a name the certificate does not hold.
    match Client::connect(node.addr, tls_opts(pki.connector("elsewhere.example")?)).await {
        Err(e @ ClientError::Tls(_)) => ensure!(
            e.to_string().contains("not valid for name"),
            "the error should name the mismatch: {e}"
        ),
        Err(e) => bail!("client with a wrong name: unexpected error {e}"),
        Ok(_) => bail!("a certificate was accepted for a name it does not hold"),
    }

    let c = Client::connect(node.addr, tls_opts(pki.connector("localhost")?)).await?;
    round_trip(&c, "still", "serving").await?;
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_on_the_client_port_requires_client_certificates() -> Result<()> {
    let pki = Pki::new("mtls")?;
    let tls = ServerTls {
        client_ca: Some(pki.ca()),
        ..server_tls(&pki.identity("tlsm")?)
    };
    let node = TlsNode::start_with("tlsm", tls).await?;
    // Without a certificate: TLS 1.3 ends the client's handshake before the
    // node has checked it, so the refusal is the node's alert.
    match Client::connect(node.addr, tls_opts(pki.connector("localhost")?)).await {
        Err(e) => ensure!(
            e.to_string().contains("CertificateRequired"),
            "the error should say a certificate is required: {e}"
        ),
        Ok(_) => bail!("a client without a certificate was greeted"),
    }
    let me = pki.identity("client")?;
    let with_cert = ClientTls {
        ca: Some(pki.ca()),
        identity: Some((me.cert, me.key)),
    }
    .config()?;
    let c = Client::connect(node.addr, tls_opts(Connector::new(with_cert, "localhost")?)).await?;
    round_trip(&c, "mutual", "TLS").await?;
    node.stop().await
}

#[test]
fn bad_certificate_files_are_named_in_the_error() -> Result<()> {
    let pki = Pki::new("bad")?;
    let good = pki.identity("good")?;
    let other = pki.identity("other")?;
    let dir = pki.dir.path();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let missing = dir.join("missing.pem");
    let err = |cert: &Path, key: &Path| -> Result<String> {
        let tls = ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: None,
        };
        match tls.acceptor() {
            Ok(_) => bail!("{} with {} was accepted", cert.display(), key.display()),
            Err(e) => Ok(e.to_string()),
        }
    };
    let e = err(&missing, &good.key)?;
    ensure!(
        e.contains("cannot read the certificate file") && e.contains("missing.pem"),
        "{e}"
    );
    let e = err(&garbage, &good.key)?;
    ensure!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = err(&good.cert, &garbage)?;
    ensure!(
        e.contains("garbage.pem") && e.contains("no PEM private key"),
        "{e}"
    );
    // A key that is not the certificate's.
    let e = err(&good.cert, &other.key)?;
    ensure!(e.contains("good.pem") && e.contains("other.key"), "{e}");
    // A CA file without certificates.
    let bad_ca = ClientTls {
        ca: Some(garbage.clone()),
        identity: None,
    };
    match bad_ca.config() {
        Err(e @ TlsError::Invalid { .. }) => ensure!(e.to_string().contains("CA file"), "{e}"),
        Err(e) => bail!("unexpected error {e}"),
        Ok(_) => bail!("an empty CA file was accepted"),
    }
    Ok(())
}

#[test]
fn the_server_refuses_to_start_on_a_bad_certificate_and_serves_tls_with_a_good_one() -> Result<()> {
    let pki = Pki::new("bin")?;
    let id = pki.identity("tlsbin")?;
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;

    // Bad: the process exits at once, naming the file; nothing is served.
    let out = Command::new(distkv_bin()?)
        .args(["server", "--no-data-dir", "--port", "0", "--bus-port", "0"])
        .arg("--tls-cert")
        .arg(&garbage)
        .arg("--tls-key")
        .arg(&id.key)
        .arg("tlsbad")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "started on a bad certificate");
    ensure!(
        stderr.contains("TLS on the client port") && stderr.contains("garbage.pem"),
        "the error should name the setting and the file: {stderr}"
    );

    // Good, given as configuration keys (DistKV's `ssl: {cert, key}`).
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("distkv-tls-bin-")
            .tempdir()?;
        let launch = Launch::new("tlsbin", dir.path())
            .no_data_dir()
            .conf(&format!(
                "server.bind_default.ssl.cert={}",
                id.cert.display()
            ))
            .conf(&format!("server.bind_default.ssl.key={}", id.key.display()));
        let node = launch.start_bound().await?;
        let c = tls_client_of(&node, &pki).await?;
        ensure!(c.greeting().node == "tlsbin");
        round_trip(&c, "binary", "TLS").await?;
        // The command line with `connect.ssl`, and without.
        let port = node.addr.port().to_string();
        let cli = |conf: &str| {
            Command::new(distkv_bin()?)
                .args(["-C", conf, "-C", "connect.init_timeout=0.5", "client"])
                .args(["-h", "localhost", "-p", &port, "data", "binary", "get"])
                .output()
                .context("distkv client")
        };
        let out = cli(&format!("connect.ssl.ca={}", pki.ca().display()))?;
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("TLS"),
            "distkv client with connect.ssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli("connect.ssl=false")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("connect.ssl"),
            "distkv client without TLS should fail pointing at connect.ssl: {stderr}"
        );
        node.terminate().await
    })
}

/// A TLS client of a node process, once it greets.
async fn tls_client_of(node: &process::NodeProc, pki: &Pki) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(node.addr, tls_opts(pki.connector("localhost")?)).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "no TLS greeting from {}: {e}\n{}",
                    node.name,
                    node.stderr_tail()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The flags alone: `--tls-cert`, `--tls-key` and `--tls-ca` put three
/// node processes on TLS everywhere (client ports, mesh, joins).
#[test]
fn three_node_processes_with_the_tls_flags_replicate() -> Result<()> {
    let pki = Pki::new("flags")?;
    let dir = tempfile::Builder::new()
        .prefix("distkv-tls-flags-")
        .tempdir()?;
    let launch = |name: &str| -> Result<Launch> {
        let id = pki.identity(name)?;
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        Ok(Launch::new(name, &d)
            .no_data_dir()
            .conf("server.ping.cycle=1")
            .conf("server.ping.gap=0.2")
            .with_bus()?
            .arg("--tls-cert")
            .arg(id.cert.display().to_string())
            .arg("--tls-key")
            .arg(id.key.display().to_string())
            .arg("--tls-ca")
            .arg(pki.ca().display().to_string()))
    };
    let l1 = launch("tf1")?;
    let l2 = launch("tf2")?.peer(&l1);
    let l3 = launch("tf3")?.peer(&l1);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let n1 = l1.start_bound().await?;
        let c1 = tls_client_of(&n1, &pki).await?;
        round_trip(&c1, "flags", "set before the joins").await?;
        let n2 = l2.start_bound().await?;
        let n3 = l3.start_bound().await?;
        let c2 = tls_client_of(&n2, &pki).await?;
        let c3 = tls_client_of(&n3, &pki).await?;
        until_value(&c2, "flags", "set before the joins").await?;
        until_value(&c3, "flags", "set before the joins").await?;
        c3.set_value(
            &path!["from3"],
            Value::str("tls"),
            &UpdateOptions::default(),
        )
        .await?;
        until_value(&c1, "from3", "tls").await?;
        until_value(&c2, "from3", "tls").await?;
        n3.terminate().await?;
        n2.terminate().await?;
        n1.terminate().await
    })
}

#[test]
fn python_speaks_the_protocol_over_tls_and_distkv_client_refuses_ssl() -> Result<()> {
    let py = python()?;
    let pki = Pki::new("python")?;
    let id = pki.identity("tlspy")?;
    let rt = tokio::runtime::Runtime::new()?;
    let node = rt.block_on(TlsNode::start("tlspy", &id))?;
    let out = Command::new(&py)
        .arg(workspace().join("tests/python/tls.py"))
        .arg(node.addr.port().to_string())
        .arg(pki.ca())
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .context("running tls.py")?;
    rt.block_on(node.stop())?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "tls.py failed: {}", out.status);
    Ok(())
}

/// A cluster node with TLS everywhere: client port, embedded broker (which
/// requires the other nodes' certificates), links to the other brokers,
/// state transfer.
struct MeshNode {
    addr: std::net::SocketAddr,
    broker: String,
    mqtt: Arc<MqttBus>,
    stop: CancellationToken,
    running: JoinHandle<Result<(), NodeError>>,
}

impl MeshNode {
    async fn start(pki: &Pki, name: &str, peers: Vec<String>) -> Result<MeshNode> {
        let id = pki.identity(name)?;
        let peer_side = ClientTls {
            ca: Some(pki.ca()),
            identity: Some((id.cert.clone(), id.key.clone())),
        }
        .config()?;
        let broker_side = ServerTls {
            client_ca: Some(pki.ca()),
            ..server_tls(&id)
        };
        let mut config = MqttConfig::new(
            name,
            MqttMode::Mesh {
                listen: ("127.0.0.1".into(), 0),
                advertise: None,
                peers: peers.clone(),
            },
        );
        config.tls = Some(MqttTls {
            acceptor: Some(broker_side.acceptor()?),
            client: peer_side.clone(),
        });
        let mqtt = MqttBus::start(config).await?;
        let opts = ServerOptions {
            tls: Some(server_tls(&id).acceptor()?),
            ..ServerOptions::default()
        };
        let builder = NodeBuilder::new(name)
            .options(opts)
            .start(if peers.is_empty() {
                Start::Ready
            } else {
                Start::Join
            })
            .peer_tls(peer_side);
        MeshNode::run(builder, mqtt).await
    }

    /// A node with a plain client port on the external broker `url`
    /// (`mqtts://`), checking it against the CA; joins unless `first`.
    async fn on_broker(pki: &Pki, name: &str, url: &str, first: bool) -> Result<MeshNode> {
        let mut config = MqttConfig::new(name, MqttMode::External { url: url.into() });
        config.tls = Some(MqttTls {
            acceptor: None,
            client: pki.client_config()?,
        });
        let mqtt = MqttBus::start(config).await?;
        let builder = NodeBuilder::new(name).start(if first { Start::Ready } else { Start::Join });
        MeshNode::run(builder, mqtt).await
    }

    async fn run(builder: NodeBuilder, mqtt: Arc<MqttBus>) -> Result<MeshNode> {
        let broker = mqtt
            .broker_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let seed = builder.name().len() as u64;
        let listener = server::bind("127.0.0.1", 0).await?;
        let node = builder
            .bus(BusSpec::Given(mqtt.clone()))
            .cluster(quick_cluster())
            .seed(seed)
            .build(listener)
            .await?;
        let addr = node.local_addr();
        let stop = CancellationToken::new();
        let running = tokio::spawn(node.run(stop.clone()));
        Ok(MeshNode {
            addr,
            broker,
            mqtt,
            stop,
            running,
        })
    }

    /// A TLS client (plain without `pki`), once the node serves (a joining
    /// node serves after its state transfer).
    async fn client(&self, pki: Option<&Pki>) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let opts = match pki {
                Some(pki) => tls_opts(pki.connector("localhost")?),
                None => ConnectOptions::default(),
            };
            match Client::connect(self.addr, opts).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => bail!("no TLS client: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        within("the node to stop", self.running).await???;
        self.mqtt.shutdown();
        Ok(())
    }
}

/// Waits until `c` reads `value` at `key`.
async fn until_value(c: &Client, key: &str, value: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c.get_value(&path![key], 0).await?;
        if got.get("value") == Some(&Value::str(value)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{key} never became {value}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_tls_links() -> Result<()> {
    let pki = Pki::new("mesh")?;
    let n1 = MeshNode::start(&pki, "tm1", vec![]).await?;
    let c1 = n1.client(Some(&pki)).await?;
    round_trip(&c1, "before", "the others joined").await?;
    // They fetch n1's data from its TLS client port, then serve.
    let n2 = MeshNode::start(&pki, "tm2", vec![n1.broker.clone()]).await?;
    let n3 = MeshNode::start(&pki, "tm3", vec![n1.broker.clone()]).await?;
    let c2 = n2.client(Some(&pki)).await?;
    let c3 = n3.client(Some(&pki)).await?;
    until_value(&c2, "before", "the others joined").await?;
    until_value(&c3, "before", "the others joined").await?;

    // Every node's change reaches the two others over the TLS bus.
    for (i, c) in [&c1, &c2, &c3].into_iter().enumerate() {
        let key = format!("from{i}");
        c.set_value(
            &path![key.as_str()],
            Value::str("tls"),
            &UpdateOptions::default(),
        )
        .await?;
    }
    for c in [&c1, &c2, &c3] {
        for i in 0..3 {
            until_value(c, &format!("from{i}"), "tls").await?;
        }
    }
    // n3 learned n2's broker from n1 and linked to it directly.
    eventually("n3 to know n2's broker", Duration::from_secs(20), || {
        n3.mqtt.peers().contains(&n2.broker)
    })
    .await?;

    // The broker port speaks only TLS: a plain MQTT CONNECT gets no CONNACK.
    let mut plain = tokio::net::TcpStream::connect(&n1.broker).await?;
    let connect = [
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'x',
    ];
    plain.write_all(&connect).await?;
    let mut buf = [0u8; 16];
    let n = within("the plain MQTT client to be dropped", plain.read(&mut buf))
        .await?
        .unwrap_or(0);
    ensure!(
        n == 0 || buf[0] != 0x20,
        "a plain MQTT client got a CONNACK"
    );

    n3.stop().await?;
    n2.stop().await?;
    n1.stop().await
}

/// A `mosquitto` with a TLS listener on a free port; dropping it kills it.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mosquitto serving TLS with `id` (no client certificates asked
/// for); `None` if it is not installed (and `DISTKV_REQUIRE_MOSQUITTO` is
/// unset).
fn start_tls_mosquitto(pki: &Pki, id: &Identity) -> Result<Option<Mosquitto>> {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(bin) = bin else {
        ensure!(
            std::env::var_os("DISTKV_REQUIRE_MOSQUITTO").is_none(),
            "mosquitto is not installed but DISTKV_REQUIRE_MOSQUITTO is set"
        );
        return Ok(None);
    };
    let mut last = String::new();
    for attempt in 0..5 {
        let port = process::free_port()?;
        let conf = pki.dir.path().join(format!("mosquitto.{attempt}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
                pki.ca().display(),
                id.cert.display(),
                id.key.display()
            ),
        )?;
        let log = pki.dir.path().join(format!("mosquitto.{attempt}.log"));
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut m = Mosquitto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = m.child.try_wait()? {
                // Most likely somebody took the port: try another one.
                last = format!(
                    "mosquitto exited with {st}: {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(m));
            }
            ensure!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within 10 s: {}",
                std::fs::read_to_string(&m.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    bail!("could not start mosquitto: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_over_an_external_broker_with_mqtts() -> Result<()> {
    let pki = Pki::new("mqtts")?;
    let Some(broker) = start_tls_mosquitto(&pki, &pki.identity("broker")?)? else {
        println!("skipping: mosquitto not installed");
        return Ok(());
    };
    let url = format!("mqtts://localhost:{}", broker.port);
    let n1 = MeshNode::on_broker(&pki, "tq1", &url, true).await?;
    let c1 = n1.client(None).await?;
    round_trip(&c1, "first", "on n1").await?;
    let n2 = MeshNode::on_broker(&pki, "tq2", &url, false).await?;
    let c2 = n2.client(None).await?;
    until_value(&c2, "first", "on n1").await?;
    c2.set_value(
        &path!["second"],
        Value::str("on n2"),
        &UpdateOptions::default(),
    )
    .await?;
    until_value(&c1, "second", "on n2").await?;

    // A node that does not trust the broker's CA never gets a link.
    let other = Pki::new("mqtts-other")?;
    let mut config = MqttConfig::new("tq3", MqttMode::External { url: url.clone() });
    config.tls = Some(MqttTls {
        acceptor: None,
        client: other.client_config()?,
    });
    let stranger = MqttBus::start(config).await?;
    let mut rx = stranger.subscribe(":distkv/#");
    ensure!(
        tokio::time::timeout(distkv_tests::SILENCE, rx.recv())
            .await
            .is_err(),
        "a node without the CA got a message"
    );
    ensure!(
        *stranger.links().borrow() == 0,
        "a link came up without the CA"
    );
    stranger.shutdown();

    n2.stop().await?;
    n1.stop().await?;
    drop(broker);
    Ok(())
}
