//! WATCH: newline-delimited JSON events, one flushed chunk per event, from any retained
//! resourceVersion. Selectors turn an object entering or leaving them into ADDED / DELETED,
//! as kube's watch cache does. A position below retention answers HTTP 200 and one ERROR
//! event carrying a 410 Expired Status (the only form kube-rs relists on). Under a Table or
//! PartialObjectMetadata `Accept`, each event's object is a one-row Table (column
//! definitions in the first event only) or a PartialObjectMetadata.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use logbook_store::{Event, EventType, Position, WatchItem};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::{Ctx, parse_rv};
use crate::list::{ListOptions, RvMatch, collect_all, wait_for};
use crate::object::render_into;
use crate::table::Renderer;

/// Encoded events buffered between a watch's reader task and its socket. A slow client
/// stalls only its own reader task; the hub cuts that off (FellBehind) and the task resumes
/// from the log, so no commit ever waits for a client.
const WATCH_CHUNKS_BUFFERED_MAX: usize = 64;
/// Without `timeoutSeconds`, a watch ends after a random time in [min, 2×min], like
/// kube-apiserver's `--min-request-timeout` (1800 s), so clients spread their re-watches.
const WATCH_TIMEOUT_SECONDS_MIN: u64 = 1_800;
/// Events already queued for a watcher are coalesced into one write up to this size.
const WATCH_CHUNK_BYTES_MAX: usize = 64 * 1024;

pub async fn watch(ctx: Ctx) -> ApiResult<Response> {
    let o = ListOptions::parse(&ctx)?;
    o.validate_watch()?;
    let timeout = Duration::from_secs(o.timeout_seconds.unwrap_or_else(|| {
        rand::rng().random_range(WATCH_TIMEOUT_SECONDS_MIN..=2 * WATCH_TIMEOUT_SECONDS_MIN)
    }));
    let rv = o.resource_version.clone();
    let initial = match o.send_initial_events {
        Some(b) => b,
        None => matches!(rv.as_deref(), None | Some("0")),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_CHUNKS_BUFFERED_MAX);
    let start = if initial {
        Start::Initial
    } else {
        let p = parse_rv(rv.as_deref().unwrap_or("0"))?;
        wait_for(&ctx.api, p).await?;
        Start::From(p)
    };
    let mut shutdown = ctx.api.shutdown.clone();
    let metrics = ctx.api.metrics.clone();
    let enc = Encoder {
        r: Renderer::new(&ctx),
        columns_sent: AtomicBool::new(false),
    };
    tokio::spawn(async move {
        metrics.watch_started();
        let run = run_watch(&ctx, &o, &enc, start, &tx);
        tokio::select! {
            r = tokio::time::timeout(timeout, run) => {
                if let Ok(Err(e)) = r {
                    let _ = tx.send(error_event(&e)).await;
                }
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
        }
        metrics.watch_ended();
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

enum Start {
    /// Synthetic ADDED events for the current state first.
    Initial,
    From(Position),
}

fn error_event(e: &ApiError) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn event_line(kind: &str, stored: &[u8], rv: u64) -> Bytes {
    let mut line = Vec::with_capacity(stored.len() + 48);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    render_into(&mut line, stored, rv);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// Event lines in the watch's negotiated form. A Table watch sends `columnDefinitions` in
/// its first event only, as kube-apiserver does (kubectl reuses them for later rows).
struct Encoder {
    r: Renderer,
    columns_sent: AtomicBool,
}

impl Encoder {
    fn columns_now(&self) -> bool {
        !self.columns_sent.swap(true, Ordering::Relaxed)
    }

    fn line(&self, kind: &str, stored: &[u8], rv: u64) -> Bytes {
        if self.r.is_object() {
            return event_line(kind, stored, rv);
        }
        let mut line = Vec::with_capacity(stored.len() + 256);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        self.r
            .event_object(&mut line, stored, rv, self.columns_now());
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn bookmark(&self, ctx: &Ctx, p: Position, initial_end: bool) -> Bytes {
        if self.r.is_object() {
            return bookmark_line(ctx, p, initial_end);
        }
        let obj = self.r.bookmark_object(p, initial_end, self.columns_now());
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// The lines of one write. A single line is sent as the shared `Bytes` it came in (with
/// 1,000 watchers of a busy resource, copying every line into a per-watcher buffer was a
/// gigabyte per second of memcpy); several are concatenated.
#[derive(Default)]
struct Chunk {
    first: Option<Bytes>,
    joined: Vec<u8>,
}

impl Chunk {
    fn push(&mut self, line: Bytes) {
        if self.first.is_none() && self.joined.is_empty() {
            self.first = Some(line);
            return;
        }
        if let Some(f) = self.first.take() {
            self.joined.extend_from_slice(&f);
        }
        self.joined.extend_from_slice(&line);
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.joined.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_bytes(self) -> Bytes {
        match self.first {
            Some(b) => b,
            None => Bytes::from(self.joined),
        }
    }
}

/// Rendered event lines shared by every watcher without selectors: with 1,000 watchers on
/// one resource, each event is rendered once instead of 1,000 times.
#[derive(Default)]
pub struct LineCache {
    inner: std::sync::Mutex<LineCacheInner>,
}

#[derive(Default)]
struct LineCacheInner {
    lines: std::collections::HashMap<u64, Bytes>,
    order: std::collections::VecDeque<u64>,
}

/// Event lines the cache keeps (the oldest go first); watchers read an event within
/// moments of each other, so a few thousand cover every live one.
const LINE_CACHE_EVENTS_MAX: usize = 4_096;

impl LineCache {
    fn line(&self, e: &Event, kind: &str) -> Bytes {
        let key = e.position.0;
        if let Ok(g) = self.inner.lock()
            && let Some(b) = g.lines.get(&key)
        {
            return b.clone();
        }
        let line = event_line(kind, &e.object, key);
        if let Ok(mut g) = self.inner.lock()
            && !g.lines.contains_key(&key)
        {
            g.lines.insert(key, line.clone());
            g.order.push_back(key);
            while g.order.len() > LINE_CACHE_EVENTS_MAX {
                if let Some(old) = g.order.pop_front() {
                    g.lines.remove(&old);
                }
            }
        }
        line
    }
}

fn bookmark_line(ctx: &Ctx, p: Position, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": p.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj =
        json!({"kind": ctx.info.kind, "apiVersion": ctx.info.api_version(), "metadata": meta});
    let mut line =
        serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Streams until the client goes away or an error ends the watch (returned to be sent as
/// an ERROR event).
async fn run_watch(
    ctx: &Ctx,
    o: &ListOptions,
    enc: &Encoder,
    start: Start,
    tx: &mpsc::Sender<Bytes>,
) -> ApiResult<()> {
    let from = match start {
        Start::From(p) => p,
        Start::Initial => {
            let mut list_opts = ListOptions::parse(ctx)?;
            // The snapshot is the latest state not older than the given RV.
            list_opts.rv_match = RvMatch::Unset;
            if list_opts.resource_version.as_deref() == Some("0") {
                list_opts.resource_version = None;
            }
            let (items, position) = collect_all(ctx, &list_opts).await?;
            for item in items {
                if tx
                    .send(enc.line("ADDED", &item.object, item.position.0))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            if o.send_initial_events == Some(true)
                && tx.send(enc.bookmark(ctx, position, true)).await.is_err()
            {
                return Ok(());
            }
            position
        }
    };
    let resource = ctx.info.store_resource();
    let ns = o.namespace(ctx).map(str::to_string);
    let mut sub = ctx
        .api
        .hub
        .subscribe(&resource, ns.as_deref(), from)
        .await
        .map_err(from_store)?;
    loop {
        let first = sub.next().await;
        let mut chunk = Chunk::default();
        let mut item = Some(first);
        // Coalesce what is already queued into one write (never waiting for more): with
        // many watchers, one TLS record per event per watcher is the dominant cost.
        while let Some(next) = item.take() {
            match next {
                Ok(WatchItem::Event(e)) => {
                    if let Some(line) = render_event(ctx, o, enc, &e).await? {
                        chunk.push(line);
                    }
                }
                Ok(WatchItem::Bookmark(p)) => {
                    if o.allow_bookmarks {
                        chunk.push(enc.bookmark(ctx, p, false));
                    }
                }
                Err(logbook_store::Error::FellBehind { last_delivered }) => {
                    // Resume from the log where the hub cut us off: nothing lost, nothing twice.
                    sub = ctx
                        .api
                        .hub
                        .subscribe(&resource, ns.as_deref(), last_delivered)
                        .await
                        .map_err(from_store)?;
                }
                Err(logbook_store::Error::Closed) => {
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk.into_bytes()).await;
                    }
                    return Ok(());
                }
                Err(e) => {
                    if !chunk.is_empty() {
                        let _ = tx.send(chunk.into_bytes()).await;
                    }
                    return Err(from_store(e));
                }
            }
            if chunk.len() < WATCH_CHUNK_BYTES_MAX {
                item = sub.try_next().map(Ok);
            }
        }
        if !chunk.is_empty() && tx.send(chunk.into_bytes()).await.is_err() {
            return Ok(());
        }
    }
}

/// The line for one event, or `None` when the selectors hide it. An object that stops
/// matching is DELETED (carrying its previous state), one that starts matching is ADDED.
async fn render_event(
    ctx: &Ctx,
    o: &ListOptions,
    enc: &Encoder,
    e: &Event,
) -> ApiResult<Option<Bytes>> {
    let kind = match e.kind {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    };
    if !o.filters() {
        if enc.r.is_object() {
            return Ok(Some(ctx.api.lines.line(e, kind)));
        }
        return Ok(Some(enc.line(kind, &e.object, e.position.0)));
    }
    let now: Option<Value> = serde_json::from_slice(&e.object).ok();
    let now_matches = now.as_ref().is_some_and(|v| o.matches_value(v));
    match e.kind {
        EventType::Added | EventType::Deleted => {
            Ok(now_matches.then(|| enc.line(kind, &e.object, e.position.0)))
        }
        EventType::Modified => {
            let before = match e.prev_position {
                Some(p) => ctx.api.log.get_as_of(&e.key, p).await.map_err(from_store)?,
                None => None,
            };
            let before_matches = before.as_ref().is_some_and(|b| o.matches_stored(&b.object));
            Ok(match (before_matches, now_matches) {
                (true, true) => Some(enc.line("MODIFIED", &e.object, e.position.0)),
                (false, true) => Some(enc.line("ADDED", &e.object, e.position.0)),
                (true, false) => before.map(|b| enc.line("DELETED", &b.object, e.position.0)),
                (false, false) => None,
            })
        }
    }
}
