//! The node streams end to end inside one process: a real API server ([`crate::serve`] on a
//! store in a temporary directory) proxying to a small TLS server that plays the node
//! agent's endpoint (self-signed certificate, its fingerprint in the Node's annotation).

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::*;
use crate::{Api, Identity, ServeOptions};

/// Fails the test with `why` (the suspected bug) when `fut` takes longer than `secs`.
async fn within<T>(secs: u64, why: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {why}"),
    }
}

/// The cluster CA, and certificates it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate (PEM) and key (PEM) for `cn` in `groups`, or for the server `localhost`.
    fn issue(&self, cn: &str, groups: &[&str], server: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for g in groups {
            p.distinguished_name.push(DnType::OrganizationName, *g);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// A verifier of client certificates the CA signed.
    fn client_verifier(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .unwrap()
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// One request the fake node agent received.
#[derive(Clone, Debug)]
struct Seen {
    path_and_query: String,
    method: String,
    headers: HeaderMap,
    /// The user in the client certificate the API server presented.
    client: Option<Identity>,
}

/// A stand-in for a node agent's endpoint: HTTPS (HTTP/1.1) with a self-signed certificate,
/// client certificates from the cluster CA required.
///
/// - `GET /containerLogs/default/p/c`: `line 1\n`, then, once `release` is notified,
///   `line 2\n` and the end;
/// - `GET /containerLogs/…/init`: `init done\n`;
/// - `GET /containerLogs/…/b`: 404 with a `Status`; `…/a`: 400 with plain text;
/// - an upgrade to `/exec/default/p/c` or `/portForward/default/p`: 101, then an echo;
///   any other upgrade: 403 with a `Status`.
struct FakeNode {
    addr: SocketAddr,
    fingerprint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
}

impl FakeNode {
    async fn start(ca: &Ca) -> FakeNode {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["node-1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let fingerprint = cert_sha256_hex(cert.der());
        let roots = Arc::new(ca.roots());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key_of(&key))
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let (seen2, release2) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, release) = (acceptor.clone(), seen2.clone(), release2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::identity_from_cert(c.as_ref()));
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, release, client) =
                            (seen.clone(), release.clone(), client.clone());
                        async move { Ok::<_, Infallible>(fake_node_answer(req, client, &seen, release)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeNode {
            addr,
            fingerprint,
            seen,
            release,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn key_of(k: &KeyPair) -> PrivateKeyDer<'static> {
    key(&k.serialize_pem())
}

type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn status_body(code: u16, message: &str) -> FakeBody {
    let reason = if code == 404 { "NotFound" } else { "Forbidden" };
    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    Full::new(Bytes::from(s.to_string())).boxed()
}

fn fake_node_answer(
    mut req: Request<Incoming>,
    client: Option<Identity>,
    seen: &Mutex<Vec<Seen>>,
    release: Arc<Notify>,
) -> hyper::Response<FakeBody> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        path_and_query: path_and_query.clone(),
        method: req.method().to_string(),
        headers: req.headers().clone(),
        client,
    });
    let path = req.uri().path().to_string();
    let respond = |code: u16, body: FakeBody| {
        let mut r = hyper::Response::new(body);
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        r
    };
    if path.starts_with("/containerLogs/") {
        return match path.rsplit('/').next().unwrap_or_default() {
            "c" => {
                let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"line 1\n")).await;
                    release.notified().await;
                    let _ = tx.send(Bytes::from_static(b"line 2\n")).await;
                });
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                respond(200, StreamBody::new(stream).boxed())
            }
            "init" => respond(200, Full::new(Bytes::from_static(b"init done\n")).boxed()),
            "b" => respond(
                404,
                status_body(404, "container \"b\" not found in the runtime"),
            ),
            _ => respond(
                400,
                Full::new(Bytes::from_static(
                    b"container \"a\" in pod \"two\" is waiting to start: ContainerCreating",
                ))
                .boxed(),
            ),
        };
    }
    if path != "/exec/default/p/c" && path != "/portForward/default/p" {
        return respond(403, status_body(403, "the node agent refuses this stream"));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    let mut r = respond(101, Empty::new().boxed());
    let h = r.headers_mut();
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("upgrade", "SPDY/3.1".parse().unwrap());
    h.insert(
        "x-stream-protocol-version",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    r
}

/// A real API server over a temporary store, its user `alice` (a client certificate, not
/// in `system:masters`, so fairness-gated), and the fake node `n1` hosting pods.
struct Harness {
    api: Arc<Api>,
    addr: SocketAddr,
    alice: Arc<rustls::ClientConfig>,
    node: FakeNode,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Starts the server, calling `tune` on its Api before anything is served.
    async fn start_with(tune: impl FnOnce(&Api)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = logbook_store::EmbeddedConfig::new(dir.path());
        cfg.cache_bytes = 16 * 1024 * 1024;
        let (_kv, log, _) = logbook_store::open_embedded(cfg, logbook_store::VerifyScope::Tail(0))
            .await
            .unwrap();
        let hub = logbook_store::WatchHub::start(log.clone(), logbook_store::HubConfig::default())
            .await
            .unwrap();
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let ranges = crate::service_alloc::Ranges::parse("10.96.0.0/12", "30000-32767").unwrap();
        let auth = crate::auth::Auth {
            signer: None,
            anonymous: false,
            mode: crate::auth::AuthorizationMode::AlwaysAllow,
        };
        let api = Api::new(
            log,
            hub,
            logbook_schema::registry::Registry::builtin(),
            shutdown_rx,
            "127.0.0.1:6443".into(),
            ranges,
            auth,
        );
        let ca = Ca::new();
        let (kc_cert, kc_key) = ca.issue(KUBELET_CLIENT_CN, &[KUBELET_CLIENT_GROUP], false);
        api.node_proxy
            .set_client_certificate(&kc_cert, &kc_key)
            .unwrap();
        tune(&api);
        api.bootstrap().await.unwrap();

        let (server_cert, server_key) = ca.issue("logbook-apiserver", &[], true);
        let verifier = ca.client_verifier();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(crate::auth::tls::DeferredClientVerifier(
            verifier.clone(),
        )))
        .with_single_cert(certs(&server_cert), key(&server_key))
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServeOptions {
            client_verifier: Some(verifier),
            ..ServeOptions::default()
        };
        tokio::spawn(crate::serve(
            api.clone(),
            listener,
            Arc::new(tls),
            options,
            std::future::pending(),
        ));

        let (alice_cert, alice_key) = ca.issue("alice", &["developers"], false);
        let mut alice = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(certs(&alice_cert), key(&alice_key))
        .unwrap();
        alice.alpn_protocols = vec![b"http/1.1".to_vec()];

        let node = FakeNode::start(&ca).await;
        let h = Harness {
            api,
            addr,
            alice: Arc::new(alice),
            node,
            _dir: dir,
            _shutdown: shutdown_tx,
        };
        let fingerprint = h.node.fingerprint.clone();
        h.create_node("n1", &fingerprint, h.node.addr.port()).await;
        // Same address, another certificate's fingerprint.
        h.create_node("n-wrong", &"ab".repeat(32), h.node.addr.port())
            .await;
        h.create_pod(
            "p",
            Some("n1"),
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        )
        .await;
        h.create_pod(
            "two",
            Some("n1"),
            json!({"initContainers": [{"name": "init", "image": "busybox"}],
                   "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}),
        )
        .await;
        h.create_pod(
            "pinned-wrong",
            Some("n-wrong"),
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        )
        .await;
        h.create_pod(
            "nowhere",
            Some("ghost"),
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        )
        .await;
        h.create_pod(
            "unbound",
            None,
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        )
        .await;
        h
    }

    /// A request served in-process as the server itself.
    async fn system(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                "content-type",
                if method == "PATCH" {
                    "application/merge-patch+json"
                } else {
                    "application/json"
                },
            )
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = crate::handle(self.api.clone(), Identity::system(), req).await;
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn create_node(&self, name: &str, fingerprint: &str, port: u16) {
        let status = json!({
            "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        });
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {SERVING_CERT_ANNOTATION: fingerprint}},
            "status": status});
        let (code, body) = self.system("POST", "/api/v1/nodes", Some(node)).await;
        assert_eq!(code, StatusCode::CREATED, "{body:?}");
        // A create may drop the status, as kube's does for some kinds: set it for sure.
        let (code, body) = self
            .system(
                "PATCH",
                &format!("/api/v1/nodes/{name}/status"),
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body:?}");
    }

    async fn create_pod(&self, name: &str, node: Option<&str>, mut spec: Value) {
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec});
        let (code, body) = self
            .system("POST", "/api/v1/namespaces/default/pods", Some(pod))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{body:?}");
    }

    /// A new HTTP/1.1 connection to the server as `alice`.
    async fn alice(&self) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.alice.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        sender
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

/// An SPDY upgrade request as kubectl before 1.30 sends it, with a bearer token that must
/// not reach the node.
fn spdy(path: &str) -> Request<Empty<Bytes>> {
    Request::post(path)
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "v4.channel.k8s.io")
        .header("x-stream-protocol-version", "v3.channel.k8s.io")
        .header("authorization", "Bearer not-for-the-node")
        .body(Empty::new())
        .unwrap()
}

async fn text(resp: hyper::Response<Incoming>) -> String {
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_streams_each_chunk_before_the_node_ends_its_response() {
    within(60, "a log stream did not arrive", async {
        let h = Harness::start().await;
        let mut alice = h.alice().await;
        let resp = alice
            .send_request(get(
                "/api/v1/namespaces/default/pods/p/log?follow=true&tailLines=10&timestamps=false",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        let mut body = resp.into_body();
        let first = within(
            5,
            "the first chunk was held back until the node's response ended",
            body.frame(),
        )
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
        assert_eq!(first, "line 1\n");
        assert_eq!(
            h.api.node_proxy.streams_open(),
            1,
            "an open log holds a stream slot"
        );
        h.node.release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "line 2\n");

        let seen = h.node.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].path_and_query,
            "/containerLogs/default/p/c?follow=true&tailLines=10"
        );
        let client = seen[0]
            .client
            .clone()
            .expect("the API server presents a client certificate");
        assert_eq!(client.user, KUBELET_CLIENT_CN);
        assert!(
            client.groups.iter().any(|g| g == KUBELET_CLIENT_GROUP),
            "{:?}",
            client.groups
        );
        within(
            5,
            "the stream slot was not released when the log ended",
            async {
                while h.api.node_proxy.streams_open() != 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_upgrade_is_spliced_both_ways_and_holds_no_fairness_slot() {
    within(60, "the exec upgrade did not complete", async {
        // One executing slot and a queue of one for alice: a spliced connection that kept
        // the slot would block the next admission; one whose reads were gated would stall.
        let h = Harness::start_with(|api| api.gates.set_limits(1, 1)).await;
        let mut alice = h.alice().await;
        let resp = alice
            .send_request(spdy(
                "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=echo%20hi&stdin=1&stdout=1&container=c",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(resp.headers()["x-stream-protocol-version"], "v4.channel.k8s.io");
        let upgraded = within(5, "the client side never upgraded", hyper::upgrade::on(resp))
            .await
            .unwrap();
        let mut io = TokioIo::new(upgraded);

        let ticket = within(
            2,
            "the spliced connection still holds its user's executing slot",
            h.api.gates.admit("alice"),
        )
        .await
        .unwrap();
        // Alice's queue is now full (one waiting): idle connections of hers are not read.
        let api = h.api.clone();
        let waiting = tokio::spawn(async move { api.gates.admit("alice").await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        within(
            2,
            "the spliced connection's reads were held back for its user's full queue",
            io.read_exact(&mut buf),
        )
        .await
        .unwrap();
        assert_eq!(&buf, b"ping");
        drop(ticket);
        assert!(within(5, "the queued request was never admitted", waiting).await.unwrap());

        io.write_all(b"bytes both ways").await.unwrap();
        io.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        within(5, "the splice did not end after both sides closed", io.read_to_end(&mut echoed))
            .await
            .unwrap();
        assert_eq!(echoed, b"bytes both ways");

        let seen = h.node.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(
            seen[0].path_and_query,
            "/exec/default/p/c?command=sh&command=-c&command=echo+hi&stdin=1&stdout=1"
        );
        let versions: Vec<_> = seen[0].headers.get_all("x-stream-protocol-version").iter().collect();
        assert_eq!(versions, ["v4.channel.k8s.io", "v3.channel.k8s.io"]);
        assert_eq!(seen[0].headers["upgrade"], "SPDY/3.1");
        assert!(seen[0].headers.get("authorization").is_none(), "the client's credentials reached the node");
        within(5, "the stream slot was not released when the splice ended", async {
            while h.api.node_proxy.streams_open() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_port_forward_is_relayed_and_a_refused_upgrade_passes_the_nodes_answer_through()
{
    within(60, "an upgrade did not answer", async {
        let h = Harness::start().await;
        let mut alice = h.alice().await;
        let ws = Request::get("/api/v1/namespaces/default/pods/p/portforward?ports=8080")
            .header("host", "localhost")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "v5.portforward.k8s.io")
            .body(Empty::new())
            .unwrap();
        let resp = alice.send_request(ws).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
        io.write_all(b"frame").await.unwrap();
        let mut buf = [0u8; 5];
        within(
            5,
            "port-forward bytes did not come back",
            io.read_exact(&mut buf),
        )
        .await
        .unwrap();
        assert_eq!(&buf, b"frame");
        let seen = h.node.seen();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path_and_query, "/portForward/default/p?ports=8080");
        for name in [
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-protocol",
        ] {
            assert!(
                seen[0].headers.get(name).is_some(),
                "{name} was not forwarded"
            );
        }

        // The node refuses attach to `a`: its status and Status body reach the client.
        let mut alice = h.alice().await;
        let resp = alice
            .send_request(spdy(
                "/api/v1/namespaces/default/pods/two/attach?container=a&stdout=1",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(body["message"], "the node agent refuses this stream");
        assert_eq!(
            h.node.seen()[1].path_and_query,
            "/attach/default/two/a?stdout=1"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_does_not_match_its_annotation_is_refused() {
    within(60, "the refusal did not arrive", async {
        let h = Harness::start().await;
        let (code, body) = h
            .system(
                "GET",
                "/api/v1/namespaces/default/pods/pinned-wrong/log",
                None,
            )
            .await;
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{status}");
        let msg = status["message"].as_str().unwrap();
        assert!(msg.starts_with("error dialing backend: "), "{msg}");
        assert!(
            msg.contains("does not match its logbook.dev/serving-cert-sha256"),
            "{msg}"
        );
        assert!(
            h.node.seen().is_empty(),
            "a request reached an unpinned node"
        );
    })
    .await;
}

/// One table, one checker: what a node stream answers for requests the API server decides
/// alone or relays (`node`: whether the fake node saw it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stream_requests_are_answered_as_kube_apiserver_answers_them() {
    within(60, "a node stream request did not answer", async {
        let h = Harness::start().await;
        let pods = "/api/v1/namespaces/default/pods";
        let cases: &[(&str, u16, &str)] = &[
            ("two/log", 400, "a container name must be specified for pod two, choose one of: [init a b]"),
            ("two/log?container=x", 400, "container x is not valid for pod two"),
            ("two/log?container=init", 200, "init done\n"),
            ("two/log?container=b", 404, "container \"b\" not found in the runtime"),
            ("two/log?container=a", 400, "container \"a\" in pod \"two\" is waiting to start: ContainerCreating"),
            ("p/log?tailLines=-1", 422, "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"),
            ("p/log?tailLines=ten", 400, "strconv.ParseInt: parsing \"ten\": invalid syntax"),
            ("p/log?limitBytes=0", 422, "limitBytes: Invalid value: 0: must be greater than 0"),
            ("p/log?sinceSeconds=0", 422, "sinceSeconds: Invalid value: 0: must be greater than 0"),
            ("p/log?sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z", 422, "at most one of `sinceTime` or `sinceSeconds` may be specified"),
            ("p/log?sinceTime=yesterday", 400, "parsing time \"yesterday\""),
            ("p/exec?command=ls", 400, "Upgrade request required"),
            ("unbound/log", 400, "pod unbound does not have a host assigned"),
            ("nowhere/log", 503, "needs the node agent of node \"ghost\", and there is no Node \"ghost\""),
            ("missing/log", 404, "pods \"missing\" not found"),
        ];
        for (path, code, want) in cases {
            let (got, body) = h.system("GET", &format!("{pods}/{path}"), None).await;
            let body = String::from_utf8_lossy(&body).into_owned();
            let text = match serde_json::from_str::<Value>(&body) {
                Ok(v) if v["kind"] == "Status" => v["message"].as_str().unwrap_or_default().to_string(),
                _ => body,
            };
            assert_eq!(got.as_u16(), *code, "{path}: {text}");
            assert!(text.contains(want), "{path}: want {want:?} in {text:?}");
        }
        let seen: Vec<String> = h.node.seen().into_iter().map(|s| s.path_and_query).collect();
        assert_eq!(
            seen,
            ["/containerLogs/default/two/init", "/containerLogs/default/two/b", "/containerLogs/default/two/a"],
            "only valid requests reach the node"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_servers_limit_are_refused_until_one_ends() {
    within(60, "a stream did not answer", async {
        let h = Harness::start_with(|api| {
            api.node_proxy
                .set_limits(Duration::from_secs(5), Duration::from_secs(5), 1)
        })
        .await;
        let mut first = h.alice().await;
        let resp = first
            .send_request(get("/api/v1/namespaces/default/pods/p/log?follow=1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (code, body) = h
            .system(
                "GET",
                "/api/v1/namespaces/default/pods/two/log?container=init",
                None,
            )
            .await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body:?}");
        h.node.release.notify_one();
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all, "line 1\nline 2\n");
        within(5, "the slot of an ended stream was never released", async {
            loop {
                let (code, _) = h
                    .system(
                        "GET",
                        "/api/v1/namespaces/default/pods/two/log?container=init",
                        None,
                    )
                    .await;
                if code == StatusCode::OK {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    })
    .await;
}

fn node(annotations: Value, status: Value) -> Map<String, Value> {
    json!({"metadata": {"name": "n", "annotations": annotations}, "status": status})
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn a_node_endpoint_prefers_internal_ip_then_external_ip_then_hostname() {
    let pin = json!({SERVING_CERT_ANNOTATION: "AB".repeat(32)});
    let addrs = |list: Value| json!({"addresses": list});
    let cases = [
        (
            addrs(
                json!([{"type": "Hostname", "address": "h"}, {"type": "ExternalIP", "address": "1.2.3.4"}, {"type": "InternalIP", "address": "10.0.0.1"}]),
            ),
            Ok(("10.0.0.1", 10_250)),
        ),
        (
            addrs(
                json!([{"type": "Hostname", "address": "h"}, {"type": "ExternalIP", "address": "1.2.3.4"}]),
            ),
            Ok(("1.2.3.4", 10_250)),
        ),
        (
            json!({"addresses": [{"type": "Hostname", "address": "h"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10_443}}}),
            Ok(("h", 10_443)),
        ),
        (
            json!({"addresses": [{"type": "InternalIP", "address": "fd00::1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}),
            Ok(("fd00::1", 10_250)),
        ),
        (
            addrs(json!([{"type": "InternalDNS", "address": "n.local"}])),
            Err(
                "node \"n\": no preferred addresses found; known addresses: [{InternalDNS n.local}]",
            ),
        ),
        (
            json!({}),
            Err("no preferred addresses found; known addresses: []"),
        ),
    ];
    for (status, want) in cases {
        let got = NodeEndpoint::from_node(&node(pin.clone(), status.clone()));
        match (got, want) {
            (Ok(ep), Ok((host, port))) => {
                assert_eq!((ep.host.as_str(), ep.port), (host, port), "{status}");
                assert_eq!(
                    ep.serving_cert_sha256, [0xab; 32],
                    "hex is read in either case"
                );
            }
            (Err(e), Err(msg)) => {
                assert_eq!((e.code, e.reason), (503, "ServiceUnavailable"), "{status}");
                assert!(e.message.contains(msg), "{status}: {}", e.message);
            }
            (got, want) => panic!("{status}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_node_without_a_well_formed_fingerprint_has_no_endpoint() {
    let status = json!({"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]});
    for (annotations, want) in [
        (json!({}), "node \"n\" publishes no serving certificate"),
        (
            json!({SERVING_CERT_ANNOTATION: "abc"}),
            "malformed serving certificate fingerprint",
        ),
        (
            json!({SERVING_CERT_ANNOTATION: "zz".repeat(32)}),
            "malformed serving certificate fingerprint",
        ),
    ] {
        let e = NodeEndpoint::from_node(&node(annotations.clone(), status.clone())).unwrap_err();
        assert_eq!(
            (e.code, e.reason),
            (503, "ServiceUnavailable"),
            "{annotations}"
        );
        assert!(e.message.contains(want), "{annotations}: {}", e.message);
    }
}

#[test]
fn the_published_fingerprint_is_lowercase_hex_of_the_ders_sha256() {
    // SHA-256 of the empty input.
    assert_eq!(
        cert_sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
