//! The transport of the node streams (`pods/log`, `exec`, `attach`, `portforward`): the API
//! server as a client of node agents, the way kube-apiserver is a client of kubelets.
//!
//! [`pod_actions`](crate::pod_actions) decides what to ask (the pod's node, the container,
//! the node path and query); this module asks it:
//! - [`NodeEndpoint::from_node`] finds a node agent in its Node: the first `InternalIP`
//!   address, else `ExternalIP`, else `Hostname`; the port in
//!   `status.daemonEndpoints.kubeletEndpoint.Port` ([`KUBELET_PORT_DEFAULT`] when unset);
//! - the API server dials it over TLS, HTTP/1.1 only, presenting its client certificate
//!   (CN [`KUBELET_CLIENT_CN`], O [`KUBELET_CLIENT_GROUP`], signed by the cluster CA) and
//!   accepting exactly the serving certificate whose SHA-256 the Node publishes in
//!   [`SERVING_CERT_ANNOTATION`] ([`PinnedServerCert`]). A node may write only its own Node
//!   (the node authorizer), so the annotation pins the certificate to the node;
//! - [`NodeProxy::logs`] streams a log response to the client as it arrives;
//! - [`NodeProxy::upgrade`] relays an upgrade request (SPDY/3.1 or WebSocket) the way
//!   kube's `UpgradeAwareHandler` does and, on `101 Switching Protocols`, splices the
//!   client's connection to the node's until both sides close.
//!
//! # The node agent's side of the contract
//! The node agent serves HTTPS (HTTP/1.1) with a self-signed certificate whose SHA-256
//! (lowercase hex of the DER, no separators) it writes to its Node's
//! [`SERVING_CERT_ANNOTATION`]; it trusts clients whose certificate the cluster CA signed
//! with CN [`KUBELET_CLIENT_CN`]. Paths, as the kubelet's:
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=true&previous=true&timestamps=true&tailLines=N&limitBytes=N&sinceSeconds=N&sinceTime=RFC3339`
//!   (each parameter only when set): a `text/plain` body, streamed while `follow`. It
//!   answers the response head within [`NODE_RESPONSE_HEAD_TIMEOUT_MS`], before the first
//!   log line if need be;
//! - `/exec/{namespace}/{pod}/{container}?command=…&stdin=1&stdout=1&stderr=1&tty=1`,
//!   `/attach/{namespace}/{pod}/{container}?…`, `/portForward/{namespace}/{pod}?…`: the
//!   client's `GET` (WebSocket) or `POST` (SPDY) with its `Connection`, `Upgrade`,
//!   `X-Stream-Protocol-Version` and `Sec-WebSocket-*` headers, answered `101` and then the
//!   raw upgraded byte stream. The query is the client's (less `container`, which is in
//!   the path), so booleans arrive as clients write them (`1`, `true`): read them as
//!   apimachinery does, true unless `0` or `false`;
//! - failures answered with a Kubernetes `Status` (JSON), passed to the client as they are.
//!
//! # Limits
//! A proxied stream holds one of [`NODE_STREAMS_MAX`] slots from the dial until its body ends
//! or its spliced connections close (429 when none is free). The request's fairness slots
//! ([`crate::fairness`]) are released when the handler returns the response head: like
//! kube's long-running requests, an open log or exec session does not count as in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::fairness::InProgress;

/// The common name of the client certificate the API server presents to node agents; a
/// node agent serves its streams only to this user (kube-apiserver's
/// `--kubelet-client-certificate` is conventionally `kube-apiserver-kubelet-client`).
pub const KUBELET_CLIENT_CN: &str = "logbook-apiserver-kubelet-client";
/// The organization (group) of that certificate.
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";
/// Node annotation: the SHA-256 of the node agent's serving certificate (lowercase hex of
/// the DER, no separators). The API server accepts exactly that certificate.
pub const SERVING_CERT_ANNOTATION: &str = "logbook.dev/serving-cert-sha256";
/// The node agent's port when its Node names none (the kubelet's default).
pub const KUBELET_PORT_DEFAULT: u16 = 10_250;
/// How long dialing a node agent may take, TCP connect and TLS handshake together, ms.
pub const NODE_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long a node agent may take to answer with its response head (status and headers),
/// ms. The request's fairness slots are held meanwhile, so this is bounded even for
/// `follow`: the node agent answers the head before it has a log line to send.
pub const NODE_RESPONSE_HEAD_TIMEOUT_MS: u64 = 30_000;
/// Streams proxied to node agents at once by this API server (open log bodies and spliced
/// connections); more get 429.
pub const NODE_STREAMS_MAX: usize = 1_024;
/// How much of a node agent's error body is read and relayed, bytes (kube-apiserver's
/// response checker reads 50,000).
pub const NODE_ERROR_BODY_BYTES_MAX: usize = 50_000;

/// Headers of an upgrade request that are forwarded to the node agent (besides every
/// `Sec-WebSocket-*`); nothing else is, the client's credentials least of all.
const UPGRADE_HEADERS: [&str; 3] = ["connection", "upgrade", "x-stream-protocol-version"];
/// Headers that describe one hop, not the message: not relayed from a node's non-101 answer.
const HOP_BY_HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Why the API server's client certificate for node agents could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error("reading the PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("the PEM holds no certificate")]
    NoCertificate,
    #[error("the private key cannot sign: {0}")]
    Key(#[source] rustls::Error),
    #[error("the client certificate for node agents is already set")]
    AlreadySet,
}

/// The API server's client of node agents: its certificate, bounds, and streams open.
#[derive(Debug)]
pub struct NodeProxy {
    /// The certificate presented to node agents; unset: every node stream is 503.
    client: OnceLock<Arc<rustls::sign::CertifiedKey>>,
    /// See [`NODE_CONNECT_TIMEOUT_MS`].
    connect_timeout_ms: AtomicU64,
    /// See [`NODE_RESPONSE_HEAD_TIMEOUT_MS`].
    head_timeout_ms: AtomicU64,
    /// See [`NODE_STREAMS_MAX`].
    streams_max: AtomicUsize,
    /// Streams open now.
    streams: Arc<AtomicUsize>,
}

impl Default for NodeProxy {
    fn default() -> Self {
        NodeProxy {
            client: OnceLock::new(),
            connect_timeout_ms: AtomicU64::new(NODE_CONNECT_TIMEOUT_MS),
            head_timeout_ms: AtomicU64::new(NODE_RESPONSE_HEAD_TIMEOUT_MS),
            streams_max: AtomicUsize::new(NODE_STREAMS_MAX),
            streams: Arc::default(),
        }
    }
}

/// Where a node agent listens and which certificate it serves, from its Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEndpoint {
    /// The Node's name.
    pub node: String,
    /// An IP address or DNS name.
    pub host: String,
    pub port: u16,
    /// The SHA-256 of the serving certificate (DER) the node agent must present.
    pub serving_cert_sha256: [u8; 32],
}

impl NodeEndpoint {
    /// The endpoint of the node agent of `node` (a Node object).
    ///
    /// # Errors
    /// 503 ServiceUnavailable when the Node has no usable address or publishes no (or a
    /// malformed) serving certificate fingerprint.
    pub fn from_node(node: &Map<String, Value>) -> ApiResult<NodeEndpoint> {
        let name = crate::object::meta_str(node, "name")
            .unwrap_or_default()
            .to_string();
        let status = node.get("status");
        let addresses: Vec<(&str, &str)> = status
            .and_then(|s| s.get("addresses"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|a| {
                        (
                            a.get("type").and_then(Value::as_str).unwrap_or_default(),
                            a.get("address").and_then(Value::as_str).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let host = ["InternalIP", "ExternalIP", "Hostname"]
            .iter()
            .find_map(|want| {
                addresses
                    .iter()
                    .find(|(kind, addr)| kind == want && !addr.is_empty())
            })
            .map(|(_, addr)| addr.to_string());
        let Some(host) = host else {
            // kube-apiserver's message, with the addresses as Go prints them.
            let known: Vec<String> = addresses
                .iter()
                .map(|(kind, addr)| format!("{{{kind} {addr}}}"))
                .collect();
            return Err(unavailable(format!(
                "node \"{name}\": no preferred addresses found; known addresses: [{}]",
                known.join(" ")
            )));
        };
        let port = status
            .and_then(|s| s.get("daemonEndpoints"))
            .and_then(|d| d.get("kubeletEndpoint"))
            .and_then(|k| k.get("Port"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(KUBELET_PORT_DEFAULT);
        let Some(fingerprint) = node
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(SERVING_CERT_ANNOTATION))
            .and_then(Value::as_str)
        else {
            return Err(unavailable(format!(
                "node \"{name}\" publishes no serving certificate (annotation {SERVING_CERT_ANNOTATION}), so its node agent cannot be reached"
            )));
        };
        let Some(serving_cert_sha256) = parse_sha256(fingerprint) else {
            return Err(unavailable(format!(
                "node \"{name}\" publishes a malformed serving certificate fingerprint in {SERVING_CERT_ANNOTATION}: want 64 hex digits, got {fingerprint:?}"
            )));
        };
        Ok(NodeEndpoint {
            node: name,
            host,
            port,
            serving_cert_sha256,
        })
    }

    /// `host:port` as a `Host` header and in messages (IPv6 in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The lowercase hex SHA-256 of `der`, as node agents publish it in
/// [`SERVING_CERT_ANNOTATION`].
pub fn cert_sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// An I/O error of a dial, with a certificate refusal in words rather than rustls' debug form.
fn describe_io(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("tls: {}", other.0)
        }
        _ => e.to_string(),
    }
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// kube-apiserver answers a failure to reach a kubelet with 500 and this prefix.
fn dial_error(ep: &NodeEndpoint, detail: impl std::fmt::Display) -> ApiError {
    tracing::warn!(node = %ep.node, address = %ep.authority(), error = %detail, "dialing a node agent failed");
    ApiError::internal(format!("error dialing backend: {detail}"))
}

/// Accepts exactly the server certificate whose DER has the pinned SHA-256, and checks the
/// handshake's signatures with the ring provider's algorithms (so the peer holds that
/// certificate's key). The name the node was dialed by, the chain and the validity period
/// are not looked at: the pin is the whole trust decision.
#[derive(Debug)]
pub struct PinnedServerCert {
    sha256: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// The message a pinned-certificate mismatch fails with.
#[derive(Debug, thiserror::Error)]
#[error("the node's serving certificate does not match its {SERVING_CERT_ANNOTATION} annotation")]
struct FingerprintMismatch;

impl PinnedServerCert {
    pub fn new(sha256: [u8; 32]) -> Self {
        PinnedServerCert {
            sha256,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(FingerprintMismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Always presents the API server's certificate for node agents.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One of the [`NODE_STREAMS_MAX`] stream slots, released when dropped.
#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The task driving the HTTP/1.1 connection to a node agent; aborted when dropped, so a
/// client that leaves closes the node's connection too.
#[derive(Debug)]
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client's side of an upgrade request: what [`NodeProxy::upgrade`] needs besides the
/// node path.
pub struct UpgradeClient {
    pub method: Method,
    pub headers: HeaderMap,
    /// The client connection's upgrade, from the request's extensions (`None` for an
    /// in-process request or one over HTTP/2, which cannot be upgraded).
    pub on_upgrade: Option<OnUpgrade>,
    /// The client connection's requests in progress ([`crate::fairness::GatedIo`]): the
    /// spliced connection counts as one, so its reads are never held back for its user's
    /// queue (it carries no more requests to queue).
    pub in_progress: Option<Arc<InProgress>>,
}

impl NodeProxy {
    /// Sets the client certificate presented to node agents (PEM: the certificate, then
    /// its chain; the PKCS#8, PKCS#1 or SEC1 key), once.
    ///
    /// # Errors
    /// A PEM without a certificate or a usable key; a certificate already set.
    pub fn set_client_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), ClientCertError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(ClientCertError::Pem)?;
        if chain.is_empty() {
            return Err(ClientCertError::NoCertificate);
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(ClientCertError::Pem)?;
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(ClientCertError::Key)?;
        self.client
            .set(Arc::new(rustls::sign::CertifiedKey::new(chain, signer)))
            .map_err(|_| ClientCertError::AlreadySet)
    }

    /// Overrides the bounds (tests shorten them): see [`NODE_CONNECT_TIMEOUT_MS`],
    /// [`NODE_RESPONSE_HEAD_TIMEOUT_MS`] and [`NODE_STREAMS_MAX`].
    pub fn set_limits(
        &self,
        connect_timeout: Duration,
        head_timeout: Duration,
        streams_max: usize,
    ) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.connect_timeout_ms
            .store(ms(connect_timeout), Ordering::Relaxed);
        self.head_timeout_ms
            .store(ms(head_timeout), Ordering::Relaxed);
        self.streams_max.store(streams_max, Ordering::Relaxed);
    }

    /// Streams proxied now (open log bodies and spliced connections).
    pub fn streams_open(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    fn slot(&self) -> ApiResult<StreamSlot> {
        let max = self.streams_max.load(Ordering::Relaxed);
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| StreamSlot(self.streams.clone()))
            .map_err(|_| {
                ApiError::too_many_requests(format!(
                    "{max} streams to node agents are open, this server's limit; retry later"
                ))
            })
    }

    /// Connects to the node agent at `ep` and starts the HTTP/1.1 connection.
    async fn dial(
        &self,
        ep: &NodeEndpoint,
    ) -> ApiResult<(
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        ConnTask,
    )> {
        let Some(client) = self.client.get().cloned() else {
            return Err(unavailable(
                "this API server has no client certificate for node agents".into(),
            ));
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::internal(format!("the TLS client configuration: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerCert::new(
                ep.serving_cert_sha256,
            )))
            .with_client_cert_resolver(Arc::new(FixedClientCert(client)));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The pin decides trust, not the name; a host that is no valid server name is sent
        // as a placeholder (SNI only).
        let server_name = match ServerName::try_from(ep.host.clone()) {
            Ok(n) => n,
            Err(_) => ServerName::try_from("node-agent.invalid")
                .map_err(|e| ApiError::internal(e.to_string()))?,
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(server_name, tcp)
                .await
        };
        let timeout = Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed));
        let tls = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                return Err(dial_error(
                    ep,
                    format!("dial tcp {}: {}", ep.authority(), describe_io(&e)),
                ));
            }
            Err(_) => {
                return Err(dial_error(
                    ep,
                    format!(
                        "dial tcp {}: no connection within {} ms",
                        ep.authority(),
                        timeout.as_millis()
                    ),
                ));
            }
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| dial_error(ep, e))?;
        let node = ep.node.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%node, error = %e, "a node agent connection ended with an error");
            }
        });
        Ok((sender, ConnTask(task)))
    }

    /// Sends `req` and waits for the response head, at most [`NODE_RESPONSE_HEAD_TIMEOUT_MS`].
    async fn send(
        &self,
        ep: &NodeEndpoint,
        mut sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        req: Request<Empty<Bytes>>,
    ) -> ApiResult<hyper::Response<Incoming>> {
        let timeout = Duration::from_millis(self.head_timeout_ms.load(Ordering::Relaxed));
        let answer = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(dial_error(ep, e)),
            Err(_) => Err(dial_error(
                ep,
                format!(
                    "the node agent sent no response within {} ms",
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// A request to the node agent at `ep` for `path_and_query`.
    fn request(
        ep: &NodeEndpoint,
        method: Method,
        path_and_query: &str,
    ) -> ApiResult<axum::http::request::Builder> {
        let host = HeaderValue::from_str(&ep.authority())
            .map_err(|_| unavailable(format!("node \"{}\" has an unusable address", ep.node)))?;
        Ok(Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, host))
    }

    /// GET `path_and_query` (a `/containerLogs/…` path) from the node agent at `ep` and
    /// stream its body to the client as it arrives, as `text/plain`. The body ends when the
    /// node's does, when the client leaves (the node's connection is closed), or at
    /// shutdown.
    ///
    /// # Errors
    /// 429 when [`NODE_STREAMS_MAX`] streams are open; 500 `error dialing backend` when the
    /// node agent cannot be reached or does not answer; the node's own failure (its
    /// status, its `Status` body) when it answers non-2xx.
    pub async fn logs(
        &self,
        ep: &NodeEndpoint,
        path_and_query: &str,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> ApiResult<Response> {
        let slot = self.slot()?;
        let (sender, conn) = self.dial(ep).await?;
        let req = Self::request(ep, Method::GET, path_and_query)?
            .body(Empty::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = self.send(ep, sender, req).await?;
        // kube-apiserver's response checker: 200 through 206 is a log.
        if !(200..=206).contains(&resp.status().as_u16()) {
            return Ok(self.node_failure(resp).await);
        }
        let body = ProxiedBody::new(resp.into_body(), slot, conn, shutdown);
        let mut out = Response::new(Body::new(body));
        out.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(out)
    }

    /// Relays an upgrade request to `path_and_query` on the node agent at `ep`: forwards
    /// the client's method and upgrade headers, answers with the node's response head and,
    /// on `101 Switching Protocols`, splices the two upgraded connections in a task of their
    /// own until both sides close (or shutdown); any other answer is relayed with its body.
    ///
    /// # Errors
    /// 400 `Upgrade request required` for a request that is not an HTTP/1.1 upgrade; 429,
    /// 500 as [`NodeProxy::logs`].
    pub async fn upgrade(
        &self,
        ep: &NodeEndpoint,
        path_and_query: &str,
        client: UpgradeClient,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> ApiResult<Response> {
        let required = || ApiError::bad_request("Upgrade request required");
        if !is_upgrade_request(&client.headers) {
            return Err(required());
        }
        let Some(client_upgrade) = client.on_upgrade else {
            return Err(required());
        };
        let slot = self.slot()?;
        let (sender, conn) = self.dial(ep).await?;
        let mut req = Self::request(ep, client.method, path_and_query)?;
        for (name, value) in &client.headers {
            let n = name.as_str();
            if UPGRADE_HEADERS.contains(&n) || n.starts_with("sec-websocket-") {
                req = req.header(name, value);
            }
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut resp = self.send(ep, sender, req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (parts, body) = resp.into_parts();
            let mut out = Response::new(Body::new(ProxiedBody::new(body, slot, conn, shutdown)));
            *out.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if !HOP_BY_HOP_HEADERS.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
                    out.headers_mut().append(name, value.clone());
                }
            }
            return Ok(out);
        }
        let node_upgrade = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(Body::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = resp.headers().clone();
        let splice = Splice {
            node: ep.node.clone(),
            slot,
            conn,
            in_progress: client.in_progress,
        };
        tokio::spawn(splice.run(client_upgrade, node_upgrade, shutdown));
        Ok(out)
    }

    /// The client's answer when the node agent answered a log request with a failure: its
    /// `Status` as it is, else (a plain-text body, as kubelets write) the Status
    /// kube-apiserver's response checker makes of it.
    async fn node_failure(&self, resp: hyper::Response<Incoming>) -> Response {
        let status = resp.status();
        let timeout = Duration::from_millis(self.head_timeout_ms.load(Ordering::Relaxed));
        let body = resp
            .into_body()
            .map_err(|e| std::io::Error::other(e.to_string()));
        let limited = http_body_util::Limited::new(body, NODE_ERROR_BODY_BYTES_MAX);
        let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            // Too long, broken or slow: the status alone says what happened.
            _ => Bytes::new(),
        };
        let is_status = serde_json::from_slice::<Value>(&bytes)
            .is_ok_and(|v| v.get("kind").and_then(Value::as_str) == Some("Status"));
        if is_status {
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return out;
        }
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        let text = if text.is_empty() {
            format!(
                "the node agent answered {} with no more information",
                status.as_u16()
            )
        } else {
            text
        };
        match status.as_u16() {
            500 => ApiError::internal(format!("Internal error occurred: {text}")),
            400 => ApiError::bad_request(text),
            code => ApiError::new(code, reason_for(code), text),
        }
        .into_response()
    }
}

/// The `Status` reason kube gives an HTTP status it did not make itself.
fn reason_for(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// Whether the request asks for a connection upgrade (`Connection: Upgrade`), as kube's
/// `httpstream.IsUpgradeRequest`.
fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// An upgraded client connection and the node agent's, spliced.
struct Splice {
    node: String,
    slot: StreamSlot,
    conn: ConnTask,
    in_progress: Option<Arc<InProgress>>,
}

impl Splice {
    async fn run(
        self,
        client: OnUpgrade,
        node: OnUpgrade,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let _reading = self.in_progress.as_ref().map(InProgress::start);
        let (client, node) = match tokio::join!(client, node) {
            (Ok(c), Ok(n)) => (c, n),
            (c, n) => {
                tracing::debug!(node = %self.node, client = ?c.err(), node_side = ?n.err(), "an upgrade did not complete");
                return;
            }
        };
        let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut node) => match r {
                Ok((up, down)) => tracing::debug!(node = %self.node, up, down, "a spliced node stream ended"),
                Err(e) => tracing::debug!(node = %self.node, error = %e, "a spliced node stream ended with an error"),
            },
            () = shutting_down(&mut shutdown) => {}
        }
        drop((self.slot, self.conn));
    }
}

/// Resolves when the server shuts down (never, if nobody can tell it to any more).
async fn shutting_down(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A node agent's response body on its way to the client: holds the stream slot and the
/// node connection while it lasts, and ends at shutdown.
struct ProxiedBody {
    inner: Incoming,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    _slot: StreamSlot,
    _conn: ConnTask,
}

impl ProxiedBody {
    fn new(
        inner: Incoming,
        slot: StreamSlot,
        conn: ConnTask,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        ProxiedBody {
            inner,
            shutdown: Box::pin(async move { shutting_down(&mut shutdown).await }),
            _slot: slot,
            _conn: conn,
        }
    }
}

impl hyper::body::Body for ProxiedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
