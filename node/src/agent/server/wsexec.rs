//! exec and attach over WebSocket (`v5.channel.k8s.io`, or `v4.channel.k8s.io`), translated
//! to the SPDY/3.1 `v4.channel.k8s.io` protocol that the runtime's streaming server speaks —
//! the role kube-apiserver's StreamTranslator plays in front of a kubelet. kubectl 1.30+
//! tries WebSocket first and offers only v5, which containerd 1.6's streaming server refuses.
//!
//! A session: the agent connects to the runtime's streaming URL as a SPDY client, opens the
//! streams the CRI request asked for (error first, then stdin, stdout, stderr, resize; each
//! a SYN_STREAM whose `streamtype` header names it) and waits for every SYN_REPLY (the
//! server drops data sent on a stream it has not replied to); only then does it answer the
//! client's handshake with 101, so that every failure before that is a plain HTTP error.
//!
//! Then, per direction, one reader and one writer task:
//! - client → runtime: binary messages `[channel, data…]`: 0 stdin and 4 resize become DATA
//!   frames on their streams; v5's `[255, channel]` closes a channel, which for stdin is an
//!   empty DATA frame with FLAG_FIN (the process sees EOF). Pings are answered with pongs; a
//!   close is echoed and ends the session.
//! - runtime → client: DATA on stdout, stderr and error become `[1, …]`, `[2, …]`, `[3, …]`
//!   (v4 and v5 carry the final `Status` as JSON on the error channel: success or the exit
//!   code). Once the error stream has ended (FIN or RST_STREAM), the remaining output is
//!   relayed until the runtime closes the output streams or the connection, bounded by
//!   [`STREAM_DRAIN_MS`], then the client gets a close frame (1000).
//!
//! The two directions never wait on each other, so a process that writes without reading
//! (or the reverse) cannot stall the other way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spdy::{self, Frame};
use super::websocket::{self as ws, Incoming, Opcode};
use super::{Body, STREAM_CONNECT_TIMEOUT_MS, full};

/// A client message (after reassembly) may carry at most this many bytes.
pub const WS_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Stdin is relayed in DATA frames of at most this many bytes.
pub const SPDY_DATA_CHUNK_BYTES: usize = 32 * 1024;
/// After the error stream has ended, output still arriving is relayed for at most this
/// long, in milliseconds (the runtime resets every stream right after the status).
pub const STREAM_DRAIN_MS: u64 = 2_000;
/// After our close frame, how long the client has to answer with its own, in milliseconds.
pub const WS_CLOSE_WAIT_MS: u64 = 2_000;
/// Frames queued towards either peer before the producing side waits.
pub const OUT_QUEUE_FRAMES: usize = 64;
/// Frames the runtime may send before the last SYN_REPLY that are kept for the client.
pub const EARLY_FRAMES_MAX: usize = 64;
/// How much of the runtime's refusal (a non-101 answer) is read for the error message, bytes.
pub const REFUSAL_BODY_BYTES_MAX: usize = 4 * 1024;
/// Bytes asked of a socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The SPDY subprotocol spoken to the runtime (`X-Stream-Protocol-Version`).
const SPDY_PROTOCOL: &str = "v4.channel.k8s.io";
/// The `streamType` header (k8s.io/api/core/v1 `StreamType`); lowercase on the wire.
const STREAM_TYPE_HEADER: &str = "streamtype";

/// Channels of the WebSocket remotecommand protocol (k8s.io/apimachinery
/// `pkg/util/remotecommand`): the first three are the file descriptors.
const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;
const CH_RESIZE: u8 = 4;
/// v5's CLOSE signal: `[255, channel]` half-closes `channel`.
const CH_CLOSE: u8 = 255;

/// The WebSocket subprotocols this agent terminates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v4.channel.k8s.io`: binary channels, the Status on the error channel.
    V4,
    /// `v5.channel.k8s.io`: v4 plus the CLOSE signal.
    V5,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }
}

/// A client's WebSocket upgrade that this agent answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub protocol: Protocol,
    key: String,
}

/// The streams of an exec or attach, exactly as asked of CRI (the runtime's server expects
/// these and no others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    /// Never with a TTY.
    pub stderr: bool,
    /// A TTY brings the resize stream.
    pub tty: bool,
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("runtime URL {0:?} is not an http URL with a host")]
    Url(String),
    #[error("connecting to the runtime's streaming server: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the runtime's streaming server did not answer in time")]
    Timeout,
    #[error("the runtime's streaming server: {0}")]
    Http(#[source] hyper::Error),
    #[error("the runtime's streaming server answered {code}: {body}")]
    Refused { code: StatusCode, body: String },
    #[error("the runtime's streaming server chose protocol {0:?}, not v4.channel.k8s.io")]
    Protocol(String),
    #[error("SPDY: {0}")]
    Spdy(#[from] spdy::SpdyError),
    #[error("the runtime's streaming connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the runtime reset the {0} stream")]
    StreamReset(&'static str),
    #[error("the runtime closed the connection before replying to every stream")]
    Closed,
}

fn header_tokens<'a>(
    headers: &'a HeaderMap,
    name: header::HeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The offer in a request, if it is a WebSocket upgrade (GET, `Upgrade: websocket`,
/// `Connection: upgrade`, version 13, a valid key) offering v5 (preferred) or v4 of the
/// channel protocol. Anything else is spliced to the runtime unchanged.
pub fn offer(method: &Method, headers: &HeaderMap) -> Option<Offer> {
    if method != Method::GET {
        return None;
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection =
        header_tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| ws::valid_key(k))?;
    if !(upgrade && connection && version) {
        return None;
    }
    let offered: Vec<String> = header_tokens(headers, header::SEC_WEBSOCKET_PROTOCOL).collect();
    let protocol = [Protocol::V5, Protocol::V4]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p.name()))?;
    Some(Offer {
        protocol,
        key: key.trim().to_string(),
    })
}

/// The SPDY stream ids of one session, by type; the error stream always exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamIds {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl StreamIds {
    /// Client stream ids are odd and increasing, in the order client-go creates them.
    fn assign(s: Streams) -> Self {
        let mut next = 1u32;
        let mut take = |want: bool| {
            want.then(|| {
                let id = next;
                next += 2;
                id
            })
        };
        let error = take(true).unwrap_or(1);
        Self {
            error,
            stdin: take(s.stdin),
            stdout: take(s.stdout),
            stderr: take(s.stderr && !s.tty),
            resize: take(s.tty),
        }
    }

    /// (id, `streamtype` value), error stream first.
    fn opened(&self) -> Vec<(u32, &'static str)> {
        let mut v = vec![(self.error, "error")];
        v.extend(self.stdin.map(|id| (id, "stdin")));
        v.extend(self.stdout.map(|id| (id, "stdout")));
        v.extend(self.stderr.map(|id| (id, "stderr")));
        v.extend(self.resize.map(|id| (id, "resize")));
        v
    }

    /// The client channel a runtime stream's data goes to.
    fn channel_of(&self, stream: u32) -> Option<u8> {
        if stream == self.error {
            Some(CH_ERROR)
        } else if Some(stream) == self.stdout {
            Some(CH_STDOUT)
        } else if Some(stream) == self.stderr {
            Some(CH_STDERR)
        } else {
            None
        }
    }
}

/// A connected, upgraded SPDY connection to the runtime with every stream replied to.
struct Runtime<T> {
    io: T,
    /// Bytes read past the last SYN_REPLY.
    buf: BytesMut,
    /// Data frames that arrived before the last SYN_REPLY.
    early: Vec<Frame>,
    ids: StreamIds,
}

/// Runs one exec or attach over WebSocket: connects to the runtime's streaming `url`, opens
/// the streams, answers the client's handshake and translates in a task of its own, which
/// holds `permit` until the session ends.
///
/// # Errors
/// The runtime could not be reached, refused the upgrade or a stream; nothing was sent to
/// the client yet.
pub async fn serve(
    offer: Offer,
    url: &str,
    streams: Streams,
    client_upgrade: hyper::upgrade::OnUpgrade,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response<Body>, StartError> {
    let timeout = Duration::from_millis(STREAM_CONNECT_TIMEOUT_MS);
    let runtime = tokio::time::timeout(timeout, connect(url, streams))
        .await
        .map_err(|_| StartError::Timeout)??;
    let protocol = offer.protocol;
    tokio::spawn(async move {
        let _permit = permit;
        match client_upgrade.await {
            Ok(client) => session(TokioIo::new(client), runtime, protocol, streams).await,
            Err(e) => {
                tracing::debug!(error = %e, "the client's WebSocket upgrade did not complete")
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&ws::accept_key(&offer.key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.name()),
    );
    Ok(r)
}

/// The SPDY upgrade (POST with `Upgrade: SPDY/3.1`, as client-go's SPDY executor sends it),
/// then the streams, then every SYN_REPLY.
async fn connect(
    url: &str,
    streams: Streams,
) -> Result<Runtime<TokioIo<hyper::upgrade::Upgraded>>, StartError> {
    let uri: hyper::Uri = url.parse().map_err(|_| StartError::Url(url.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| StartError::Url(url.to_string()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(StartError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(StartError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended with an error");
        }
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", SPDY_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .map_err(|_| StartError::Url(url.to_string()))?;
    let mut resp = sender.send_request(req).await.map_err(StartError::Http)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), REFUSAL_BODY_BYTES_MAX);
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(StartError::Refused { code, body });
    }
    let chosen = resp
        .headers()
        .get("X-Stream-Protocol-Version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if chosen != SPDY_PROTOCOL {
        return Err(StartError::Protocol(chosen));
    }
    let upgraded = hyper::upgrade::on(&mut resp)
        .await
        .map_err(StartError::Http)?;
    let mut io = TokioIo::new(upgraded);
    let ids = StreamIds::assign(streams);
    let mut enc = spdy::HeaderEncoder::new()?;
    let mut out = Vec::new();
    for (id, kind) in ids.opened() {
        let block = enc.encode(&[(STREAM_TYPE_HEADER, kind)])?;
        spdy::encode_syn_stream(&mut out, id, false, &block);
    }
    io.write_all(&out).await?;
    io.flush().await?;
    let mut waiting = ids.opened();
    let mut buf = BytesMut::new();
    let mut early = Vec::new();
    loop {
        while let Some(frame) = spdy::decode_frame(&mut buf)? {
            match frame {
                Frame::SynReply { stream, .. } => waiting.retain(|(id, _)| *id != stream),
                Frame::RstStream { stream, .. } => {
                    if let Some((_, kind)) = ids.opened().into_iter().find(|(id, _)| *id == stream)
                    {
                        return Err(StartError::StreamReset(kind));
                    }
                }
                Frame::Ping { id } if id % 2 == 0 => {
                    let mut pong = Vec::new();
                    spdy::encode_ping(&mut pong, id);
                    io.write_all(&pong).await?;
                }
                Frame::GoAway { .. } => return Err(StartError::Closed),
                f @ Frame::Data { .. } if early.len() < EARLY_FRAMES_MAX => early.push(f),
                f => tracing::debug!(frame = ?f, "a frame before the streams were set up, skipped"),
            }
        }
        if waiting.is_empty() {
            // The process may say nothing before it reads stdin: do not wait for more.
            break;
        }
        buf.reserve(READ_CHUNK_BYTES);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(StartError::Closed);
        }
    }
    Ok(Runtime {
        io,
        buf,
        early,
        ids,
    })
}

/// What the writer towards the client sends.
#[derive(Debug)]
enum WsOut {
    /// A binary message, channel byte first.
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame; nothing is sent after it.
    Close(u16),
}

/// Translates until either side is done.
async fn session<C, T>(client: C, runtime: Runtime<T>, protocol: Protocol, streams: Streams)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let Runtime {
        io,
        buf,
        early,
        ids,
    } = runtime;
    let (client_rd, client_wr) = tokio::io::split(client);
    let (runtime_rd, runtime_wr) = tokio::io::split(io);
    let (ws_tx, ws_rx) = mpsc::channel::<WsOut>(OUT_QUEUE_FRAMES);
    let (spdy_tx, spdy_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE_FRAMES);
    let mut ws_writer = tokio::spawn(write_ws(client_wr, ws_rx));
    let mut spdy_writer = tokio::spawn(write_spdy(runtime_wr, spdy_rx));
    // An empty message on the lowest channel the client reads tells it the session is up,
    // as kube-apiserver's translator does.
    let hello = if streams.stdout {
        CH_STDOUT
    } else if streams.stderr && !streams.tty {
        CH_STDERR
    } else {
        CH_ERROR
    };
    let _ = ws_tx.send(WsOut::Binary(vec![hello])).await;
    // The two directions live in this block: leaving it drops their ends of the queues.
    {
        let reset = Arc::new(ResetStreams::default());
        let to_runtime = client_to_runtime(
            client_rd,
            protocol,
            ids,
            reset.clone(),
            ws_tx.clone(),
            spdy_tx.clone(),
        );
        let to_client = runtime_to_client(
            runtime_rd,
            buf,
            early,
            ids,
            reset,
            ws_tx.clone(),
            spdy_tx.clone(),
        );
        tokio::pin!(to_runtime, to_client);
        tokio::select! {
            end = &mut to_client => {
                tracing::debug!(?end, "the runtime's side of a WebSocket session ended");
                // Our close frame is queued: give the client a moment to answer with its own.
                let _ = tokio::time::timeout(Duration::from_millis(WS_CLOSE_WAIT_MS), to_runtime).await;
            }
            end = &mut to_runtime => {
                tracing::debug!(?end, "the client's side of a WebSocket session ended");
            }
        }
    }
    drop(ws_tx);
    // As client-go closes a SPDY connection: every stream reset, then GOAWAY. The runtime
    // tears down what is left of the exec or attach.
    let mut bye = Vec::new();
    for (id, _) in ids.opened() {
        spdy::encode_rst_stream(&mut bye, id, spdy::RST_CANCEL);
    }
    spdy::encode_goaway(&mut bye, 0, 0);
    let _ = spdy_tx.try_send(bye);
    drop(spdy_tx);
    let close_wait = Duration::from_millis(WS_CLOSE_WAIT_MS);
    // The writers flush what is queued (a close frame last towards the client) and end; a
    // peer that does not read by then is dropped.
    let _ = tokio::join!(
        tokio::time::timeout(close_wait, &mut ws_writer),
        tokio::time::timeout(close_wait, &mut spdy_writer)
    );
    ws_writer.abort();
    spdy_writer.abort();
}

async fn write_ws<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<WsOut>) {
    tokio::pin!(wr);
    let mut frame = Vec::new();
    while let Some(m) = rx.recv().await {
        frame.clear();
        let closing = matches!(m, WsOut::Close(_));
        match m {
            WsOut::Binary(b) => ws::encode_frame(&mut frame, true, Opcode::Binary, &b, None),
            WsOut::Pong(p) => ws::encode_frame(&mut frame, true, Opcode::Pong, &p, None),
            WsOut::Close(code) => ws::encode_frame(
                &mut frame,
                true,
                Opcode::Close,
                &ws::close_payload(code),
                None,
            ),
        }
        if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        if closing {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

async fn write_spdy<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    tokio::pin!(wr);
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
}

/// How the client's side ended.
#[derive(Debug)]
#[expect(dead_code, reason = "read through Debug, in the session's log line")]
enum ClientEnd {
    Closed(Option<u16>),
    Eof,
    Protocol(ws::WsError),
    Io(std::io::Error),
    /// A writer is gone.
    Gone,
}

/// The client's streams that the runtime reset: nothing more is sent on them.
#[derive(Debug, Default)]
struct ResetStreams {
    stdin: AtomicBool,
    resize: AtomicBool,
}

async fn client_to_runtime<R: AsyncRead>(
    rd: R,
    protocol: Protocol,
    ids: StreamIds,
    reset: Arc<ResetStreams>,
    ws_tx: mpsc::Sender<WsOut>,
    spdy_tx: mpsc::Sender<Vec<u8>>,
) -> ClientEnd {
    tokio::pin!(rd);
    let mut buf = BytesMut::new();
    let mut asm = ws::Assembler::new(WS_MESSAGE_BYTES_MAX);
    let mut stdin = ids.stdin;
    let mut resize = ids.resize;
    loop {
        loop {
            let frame = match ws::decode_frame(&mut buf, true, WS_MESSAGE_BYTES_MAX)
                .and_then(|f| f.map(|f| asm.push(f)).transpose())
            {
                Ok(Some(Some(m))) => m,
                Ok(Some(None)) => continue,
                Ok(None) => break,
                Err(e) => {
                    let _ = ws_tx.send(WsOut::Close(e.close_code())).await;
                    return ClientEnd::Protocol(e);
                }
            };
            match frame {
                Incoming::Message(m) => {
                    let mut out = Vec::new();
                    match (m.first().copied(), m.get(1).copied()) {
                        (Some(CH_STDIN), _) => {
                            if let Some(id) = stdin
                                && !reset.stdin.load(Ordering::Relaxed)
                            {
                                for chunk in m[1..].chunks(SPDY_DATA_CHUNK_BYTES) {
                                    spdy::encode_data(&mut out, id, false, chunk);
                                }
                            }
                        }
                        (Some(CH_RESIZE), _) => {
                            if let Some(id) = resize
                                && m.len() > 1
                                && !reset.resize.load(Ordering::Relaxed)
                            {
                                spdy::encode_data(&mut out, id, false, &m[1..]);
                            }
                        }
                        (Some(CH_CLOSE), Some(ch)) if protocol == Protocol::V5 => {
                            let closed = match ch {
                                CH_STDIN => stdin.take(),
                                CH_RESIZE => resize.take(),
                                _ => None,
                            };
                            if let Some(id) = closed {
                                spdy::encode_data(&mut out, id, true, &[]);
                            }
                        }
                        (ch, _) => tracing::debug!(?ch, "a message on a channel no stream reads"),
                    }
                    if !out.is_empty() && spdy_tx.send(out).await.is_err() {
                        return ClientEnd::Gone;
                    }
                }
                Incoming::Ping(p) => {
                    if ws_tx.send(WsOut::Pong(p)).await.is_err() {
                        return ClientEnd::Gone;
                    }
                }
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    let _ = ws_tx.send(WsOut::Close(ws::CLOSE_NORMAL)).await;
                    return ClientEnd::Closed(code);
                }
            }
        }
        buf.reserve(READ_CHUNK_BYTES);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return ClientEnd::Eof,
            Ok(_) => {}
            Err(e) => return ClientEnd::Io(e),
        }
    }
}

/// How the runtime's side ended.
#[derive(Debug)]
#[expect(dead_code, reason = "read through Debug, in the session's log line")]
enum RuntimeEnd {
    /// The status arrived and the output streams ended (or the drain bound passed).
    Done,
    /// The connection closed first.
    Eof,
    /// GOAWAY came before the status, and the connection stayed open past the drain bound.
    GoAway,
    Protocol(spdy::SpdyError),
    Io(std::io::Error),
    /// The client's writer is gone.
    Gone,
}

/// Per-stream state of the runtime's output.
#[derive(Debug, Default)]
struct Output {
    error_ended: bool,
    status_bytes: usize,
    /// Output streams (stdout, stderr) not yet ended by FIN or RST_STREAM.
    open: Vec<u32>,
}

impl Output {
    fn end(&mut self, ids: &StreamIds, stream: u32) {
        if stream == ids.error {
            self.error_ended = true;
        }
        self.open.retain(|s| *s != stream);
    }
}

async fn runtime_to_client<R: AsyncRead>(
    rd: R,
    mut buf: BytesMut,
    early: Vec<Frame>,
    ids: StreamIds,
    reset: Arc<ResetStreams>,
    ws_tx: mpsc::Sender<WsOut>,
    spdy_tx: mpsc::Sender<Vec<u8>>,
) -> RuntimeEnd {
    tokio::pin!(rd);
    let mut out = Output {
        open: ids.stdout.into_iter().chain(ids.stderr).collect(),
        ..Output::default()
    };
    let mut drain_until: Option<Instant> = None;
    let mut goaway = false;
    let mut pending: std::collections::VecDeque<Frame> = early.into();
    let end = 'run: loop {
        loop {
            let frame = match pending.pop_front() {
                Some(f) => f,
                None => match spdy::decode_frame(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => break 'run RuntimeEnd::Protocol(e),
                },
            };
            match frame {
                Frame::Data { stream, fin, data } => {
                    if let Some(ch) = ids.channel_of(stream)
                        && !data.is_empty()
                    {
                        if ch == CH_ERROR {
                            out.status_bytes += data.len();
                        }
                        let mut m = Vec::with_capacity(data.len() + 1);
                        m.push(ch);
                        m.extend_from_slice(&data);
                        if ws_tx.send(WsOut::Binary(m)).await.is_err() {
                            break 'run RuntimeEnd::Gone;
                        }
                    }
                    if fin {
                        out.end(&ids, stream);
                    }
                }
                Frame::SynReply {
                    stream, fin: true, ..
                }
                | Frame::Headers {
                    stream, fin: true, ..
                } => {
                    out.end(&ids, stream);
                }
                Frame::RstStream { stream, .. } => {
                    out.end(&ids, stream);
                    if Some(stream) == ids.stdin {
                        reset.stdin.store(true, Ordering::Relaxed);
                    } else if Some(stream) == ids.resize {
                        reset.resize.store(true, Ordering::Relaxed);
                    }
                }
                Frame::SynStream { stream, .. } => {
                    // The server opens no streams in this protocol.
                    let mut rst = Vec::new();
                    spdy::encode_rst_stream(&mut rst, stream, spdy::RST_REFUSED_STREAM);
                    let _ = spdy_tx.try_send(rst);
                }
                Frame::Ping { id } if id % 2 == 0 => {
                    // The server's ping (even ids): echo it. Never wait for the writer here.
                    let mut pong = Vec::new();
                    spdy::encode_ping(&mut pong, id);
                    let _ = spdy_tx.try_send(pong);
                }
                // No new streams; the open ones may still finish (spdystream resets them
                // before its GOAWAY, and closes the connection right after).
                Frame::GoAway { .. } => goaway = true,
                _ => {}
            }
        }
        if out.error_ended && out.open.is_empty() {
            break RuntimeEnd::Done;
        }
        if out.error_ended || goaway {
            drain_until
                .get_or_insert_with(|| Instant::now() + Duration::from_millis(STREAM_DRAIN_MS));
        }
        buf.reserve(READ_CHUNK_BYTES);
        let read = match drain_until {
            Some(t) => match tokio::time::timeout_at(t, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) if out.error_ended => break RuntimeEnd::Done,
                Err(_) => break RuntimeEnd::GoAway,
            },
            None => rd.read_buf(&mut buf).await,
        };
        match read {
            Ok(0) => break RuntimeEnd::Eof,
            Ok(_) => {}
            Err(e) => break RuntimeEnd::Io(e),
        }
    };
    // A connection that failed before any status arrived is the client's InternalError, as
    // kube-apiserver's translator reports a SPDY executor's failure.
    if out.status_bytes == 0 && matches!(end, RuntimeEnd::Protocol(_) | RuntimeEnd::Io(_)) {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "InternalError", "code": 500,
            "message": format!("the runtime's streaming connection failed: {end:?}"),
        });
        let mut m = vec![CH_ERROR];
        m.extend_from_slice(status.to_string().as_bytes());
        let _ = ws_tx.send(WsOut::Binary(m)).await;
    }
    let _ = ws_tx.send(WsOut::Close(ws::CLOSE_NORMAL)).await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn ws_headers(protocols: &str) -> HeaderMap {
        headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-protocol", protocols),
        ])
    }

    #[test]
    fn a_websocket_upgrade_offering_v5_or_v4_is_answered_here_and_v5_wins() {
        let cases = [
            ("v5.channel.k8s.io", Some(Protocol::V5)),
            ("v4.channel.k8s.io", Some(Protocol::V4)),
            ("v4.channel.k8s.io, v5.channel.k8s.io", Some(Protocol::V5)),
            ("channel.k8s.io, base64.channel.k8s.io", None),
            ("v4.base64.channel.k8s.io", None),
        ];
        for (protocols, want) in cases {
            assert_eq!(
                offer(&Method::GET, &ws_headers(protocols)).map(|o| o.protocol),
                want,
                "{protocols}"
            );
        }
    }

    #[test]
    fn spdy_upgrades_and_malformed_websocket_requests_are_left_to_the_splice() {
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(offer(&Method::POST, &spdy), None);
        assert_eq!(offer(&Method::POST, &ws_headers("v5.channel.k8s.io")), None);
        let mut h = ws_headers("v5.channel.k8s.io");
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(offer(&Method::GET, &h), None);
        let mut h = ws_headers("v5.channel.k8s.io");
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(offer(&Method::GET, &h), None);
        let mut h = ws_headers("v5.channel.k8s.io");
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(offer(&Method::GET, &h), None);
    }

    #[test]
    fn streams_get_odd_ids_error_first_and_no_stderr_with_a_tty() {
        let ids = StreamIds::assign(Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        });
        assert_eq!(
            ids.opened(),
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
        );
        let ids = StreamIds::assign(Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        });
        assert_eq!(
            ids.opened(),
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")]
        );
        let ids = StreamIds::assign(Streams {
            stdin: false,
            stdout: true,
            stderr: false,
            tty: false,
        });
        assert_eq!(ids.opened(), [(1, "error"), (3, "stdout")]);
        assert_eq!(ids.channel_of(1), Some(CH_ERROR));
        assert_eq!(ids.channel_of(3), Some(CH_STDOUT));
        assert_eq!(ids.channel_of(5), None);
    }

    const STATUS_OK: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

    fn client_msg(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
        ws::encode_frame(out, true, opcode, payload, Some([1, 2, 3, 4]));
    }

    /// Reads what the agent sends the client until its close frame, answers it and returns
    /// every frame, the close included.
    async fn client_reads<S: AsyncRead + AsyncWrite + Unpin>(peer: &mut S) -> Vec<ws::Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            while let Some(f) = ws::decode_frame(&mut buf, false, 1 << 20).expect("server frame") {
                let close = f.opcode == Opcode::Close;
                frames.push(f);
                if close {
                    let mut out = Vec::new();
                    client_msg(
                        &mut out,
                        Opcode::Close,
                        &ws::close_payload(ws::CLOSE_NORMAL),
                    );
                    let _ = peer.write_all(&out).await;
                    return frames;
                }
            }
            buf.reserve(4096);
            if peer.read_buf(&mut buf).await.expect("read") == 0 {
                return frames;
            }
        }
    }

    /// Reads the agent's SPDY frames until `until` holds for one.
    async fn runtime_reads<S: AsyncRead + Unpin>(
        peer: &mut S,
        until: impl Fn(&Frame) -> bool,
    ) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        loop {
            while let Some(f) = spdy::decode_frame(&mut buf).expect("agent frame") {
                let last = until(&f);
                frames.push(f);
                if last {
                    return frames;
                }
            }
            buf.reserve(4096);
            assert_ne!(
                peer.read_buf(&mut buf).await.expect("read"),
                0,
                "{frames:?}"
            );
        }
    }

    fn binary(ch: u8, data: &[u8]) -> ws::Frame {
        let mut payload = vec![ch];
        payload.extend_from_slice(data);
        ws::Frame {
            fin: true,
            opcode: Opcode::Binary,
            payload,
        }
    }

    fn start(
        protocol: Protocol,
        streams: Streams,
    ) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (client, client_peer) = tokio::io::duplex(1 << 20);
        let (runtime, runtime_peer) = tokio::io::duplex(1 << 20);
        let runtime = Runtime {
            io: runtime,
            buf: BytesMut::new(),
            early: Vec::new(),
            ids: StreamIds::assign(streams),
        };
        tokio::spawn(session(client, runtime, protocol, streams));
        (client_peer, runtime_peer)
    }

    const EXEC_I: Streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };

    /// A fake streaming server: checks the upgrade request, answers 101, checks the
    /// SYN_STREAMs and replies to each, then says nothing more (as `cat` waiting for stdin).
    async fn fake_runtime(listener: tokio::net::TcpListener) -> Vec<(u32, String)> {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.expect("request head");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("post /exec/token http/1.1\r\n"), "{head}");
        for h in [
            "connection: upgrade",
            "upgrade: spdy/3.1",
            "x-stream-protocol-version: v4.channel.k8s.io",
        ] {
            assert!(head.contains(h), "{h} in {head}");
        }
        tcp.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .expect("101");
        let mut dec = spdy::HeaderDecoder::default();
        let mut enc = spdy::HeaderEncoder::new().expect("encoder");
        let mut buf = BytesMut::new();
        let mut opened = Vec::new();
        loop {
            while let Some(f) = spdy::decode_frame(&mut buf).expect("frame") {
                let Frame::SynStream {
                    stream,
                    header_block,
                    ..
                } = f
                else {
                    panic!("only SYN_STREAMs before the replies: {f:?}");
                };
                let headers = dec.decode(&header_block).expect("headers");
                assert_eq!(headers.len(), 1, "{headers:?}");
                assert_eq!(headers[0].0, "streamtype");
                opened.push((stream, headers[0].1.clone()));
            }
            if opened.len() == 4 {
                break;
            }
            buf.reserve(4096);
            assert_ne!(tcp.read_buf(&mut buf).await.expect("read"), 0);
        }
        // Replies in another order than the streams were opened, as spdystream's workers may.
        for (stream, _) in opened.iter().rev() {
            let block = enc.encode(&[]).expect("empty headers");
            let mut reply = vec![0x80, 3, 0, 2];
            reply.extend_from_slice(&((4 + block.len()) as u32).to_be_bytes());
            reply.extend_from_slice(&stream.to_be_bytes());
            reply.extend_from_slice(&block);
            tcp.write_all(&reply).await.expect("reply");
        }
        // Keep the connection open and silent until the agent is done with it.
        let _ = tcp.read_buf(&mut buf).await;
        opened
    }

    #[tokio::test]
    async fn the_session_starts_once_every_stream_is_replied_to_though_the_process_is_silent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/exec/token", listener.local_addr().expect("addr"));
        let server = tokio::spawn(fake_runtime(listener));
        let runtime = tokio::time::timeout(Duration::from_secs(5), connect(&url, EXEC_I))
            .await
            .expect("connect returns without waiting for output (regression: it read once more)")
            .expect("connected");
        assert_eq!(runtime.ids.opened().len(), 4);
        assert!(runtime.early.is_empty());
        drop(runtime);
        let opened = server.await.expect("fake runtime");
        let opened: Vec<(u32, &str)> = opened.iter().map(|(i, k)| (*i, k.as_str())).collect();
        assert_eq!(
            opened,
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
        );
    }

    #[tokio::test]
    async fn stdin_and_its_close_signal_reach_the_runtime_and_output_status_and_close_come_back() {
        let (mut client, mut runtime) = start(Protocol::V5, EXEC_I);
        let mut out = Vec::new();
        client_msg(&mut out, Opcode::Ping, b"hb");
        // A fragmented stdin message, then v5's CLOSE signal for stdin.
        ws::encode_frame(
            &mut out,
            false,
            Opcode::Binary,
            &[CH_STDIN, b't'],
            Some([9; 4]),
        );
        ws::encode_frame(
            &mut out,
            true,
            Opcode::Continuation,
            b"yped-in\n",
            Some([7; 4]),
        );
        client_msg(&mut out, Opcode::Binary, &[CH_CLOSE, CH_STDIN]);
        client.write_all(&out).await.expect("client writes");
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            runtime_reads(&mut runtime, |f| matches!(f, Frame::Data { fin: true, .. })),
        )
        .await
        .expect("stdin and its FIN reach the runtime");
        assert_eq!(
            got,
            [
                Frame::Data {
                    stream: 3,
                    fin: false,
                    data: Bytes::from_static(b"typed-in\n")
                },
                Frame::Data {
                    stream: 3,
                    fin: true,
                    data: Bytes::new()
                },
            ]
        );
        // The runtime answers as containerd does: output, the status, every stream reset,
        // GOAWAY, and the connection closed.
        let mut rt = Vec::new();
        spdy::encode_data(&mut rt, 5, false, b"typed-in\n:end\n");
        spdy::encode_data(&mut rt, 7, false, b"warning\n");
        spdy::encode_data(&mut rt, 1, false, STATUS_OK);
        for id in [1, 3, 5, 7] {
            spdy::encode_rst_stream(&mut rt, id, spdy::RST_CANCEL);
        }
        spdy::encode_goaway(&mut rt, 0, 0);
        runtime.write_all(&rt).await.expect("runtime writes");
        drop(runtime);
        let frames = tokio::time::timeout(Duration::from_secs(10), client_reads(&mut client))
            .await
            .expect("the client gets a close frame once the status has come");
        let close = ws::Frame {
            fin: true,
            opcode: Opcode::Close,
            payload: ws::close_payload(ws::CLOSE_NORMAL).to_vec(),
        };
        let pong = ws::Frame {
            fin: true,
            opcode: Opcode::Pong,
            payload: b"hb".to_vec(),
        };
        assert_eq!(frames[0], binary(CH_STDOUT, b""), "the hello comes first");
        assert!(frames.contains(&pong), "{frames:?}");
        let rest: Vec<_> = frames.into_iter().filter(|f| *f != pong).skip(1).collect();
        assert_eq!(
            rest,
            [
                binary(CH_STDOUT, b"typed-in\n:end\n"),
                binary(CH_STDERR, b"warning\n"),
                binary(CH_ERROR, STATUS_OK),
                close
            ]
        );
    }

    #[tokio::test]
    async fn v4_has_no_close_signal_and_resize_goes_to_the_resize_stream() {
        let tty = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let (mut client, mut runtime) = start(Protocol::V4, tty);
        let mut out = Vec::new();
        client_msg(&mut out, Opcode::Binary, &[CH_CLOSE, CH_STDIN]);
        client_msg(
            &mut out,
            Opcode::Binary,
            br#"{"Width":80,"Height":24}"#.as_slice(),
        );
        let mut resize = vec![CH_RESIZE];
        resize.extend_from_slice(br#"{"Width":80,"Height":24}"#);
        client_msg(&mut out, Opcode::Binary, &resize);
        client.write_all(&out).await.expect("client writes");
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            runtime_reads(&mut runtime, |_| true),
        )
        .await
        .expect("the resize reaches the runtime");
        assert_eq!(
            got,
            [Frame::Data {
                stream: 7,
                fin: false,
                data: Bytes::from_static(br#"{"Width":80,"Height":24}"#)
            }],
            "stream 7 is resize (error 1, stdin 3, stdout 5); nothing else was sent"
        );
    }

    #[tokio::test]
    async fn a_stdin_stream_the_runtime_reset_gets_no_more_data() {
        let tty = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let (mut client, mut runtime) = start(Protocol::V5, tty);
        // RST_STREAM on stdin (3), then output: once the client has the output, the agent
        // has seen the reset.
        let mut rt = Vec::new();
        spdy::encode_rst_stream(&mut rt, 3, spdy::RST_CANCEL);
        spdy::encode_data(&mut rt, 5, false, b"prompt");
        runtime.write_all(&rt).await.expect("runtime writes");
        let mut buf = BytesMut::new();
        let seen = async {
            loop {
                while let Some(f) = ws::decode_frame(&mut buf, false, 1 << 20).expect("frame") {
                    if f == binary(CH_STDOUT, b"prompt") {
                        return;
                    }
                }
                buf.reserve(4096);
                assert_ne!(client.read_buf(&mut buf).await.expect("read"), 0);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the output reaches the client");
        let mut out = Vec::new();
        client_msg(&mut out, Opcode::Binary, &[CH_STDIN, b'x']);
        client_msg(&mut out, Opcode::Binary, &[CH_RESIZE, b'{', b'}']);
        client.write_all(&out).await.expect("client writes");
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            runtime_reads(&mut runtime, |_| true),
        )
        .await
        .expect("the resize reaches the runtime");
        assert_eq!(
            got,
            [Frame::Data {
                stream: 7,
                fin: false,
                data: Bytes::from_static(b"{}")
            }],
            "the stdin byte was dropped, the resize went through"
        );
    }

    #[tokio::test]
    async fn a_runtime_connection_that_breaks_before_a_status_is_an_internal_error() {
        let (mut client, mut runtime) = start(Protocol::V5, EXEC_I);
        // A SPDY/2 control frame: not the protocol that was negotiated.
        runtime
            .write_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2])
            .await
            .expect("runtime writes");
        let frames = tokio::time::timeout(Duration::from_secs(10), client_reads(&mut client))
            .await
            .expect("the client is told and closed");
        let status = frames
            .iter()
            .find(|f| f.payload.first() == Some(&CH_ERROR))
            .expect("a status on the error channel");
        let v: serde_json::Value = serde_json::from_slice(&status.payload[1..]).expect("json");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(frames.last().map(|f| f.opcode), Some(Opcode::Close));
    }

    #[tokio::test]
    async fn an_unmasked_client_frame_closes_the_session_with_a_protocol_error() {
        let (mut client, _runtime) = start(Protocol::V5, EXEC_I);
        let mut out = Vec::new();
        ws::encode_frame(&mut out, true, Opcode::Binary, &[CH_STDIN, b'x'], None);
        client.write_all(&out).await.expect("client writes");
        let frames = tokio::time::timeout(Duration::from_secs(10), client_reads(&mut client))
            .await
            .expect("the client is closed");
        assert_eq!(
            frames.last(),
            Some(&ws::Frame {
                fin: true,
                opcode: Opcode::Close,
                payload: ws::close_payload(ws::CLOSE_PROTOCOL_ERROR).to_vec()
            })
        );
    }
}
