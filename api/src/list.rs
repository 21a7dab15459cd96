//! LIST: resourceVersion semantics (unset = consistent, `0`, NotOlderThan, Exact at any
//! retained position), limit/continue over one snapshot, label and field selectors. A list
//! without a limit is streamed page by page, so its size never sits in memory at once.

use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use logbook_schema::selector::{FieldSelector, LabelSelector};
use logbook_store::{ListAt, Position, StoredObject};
use serde_json::Value;

use crate::Api;
use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::{Ctx, json_response, parse_rv};
use crate::table::Renderer;

/// How long a read asking for a resourceVersion newer than the log head waits for it before
/// answering 504 ResourceVersionTooLarge (kube-apiserver's watch cache waits 3 s).
pub const FUTURE_RV_WAIT_MS: u64 = 3_000;
/// Store pages read per response chunk when streaming an unlimited list.
const STREAM_PAGE_ITEMS: usize = 1_000;
/// Chunks buffered between the store reader and the socket of a streamed list.
const STREAM_CHUNKS_BUFFERED_MAX: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RvMatch {
    Unset,
    NotOlderThan,
    Exact,
}

/// ListOptions as the query carries them, validated the way apimachinery validates them.
pub struct ListOptions {
    pub resource_version: Option<String>,
    pub rv_match: RvMatch,
    pub limit: usize,
    /// The store's continue token (the part before the last '.' of the client's token).
    pub continue_token: Option<String>,
    /// Items the earlier pages of this list returned (the part after the last '.').
    pub returned_before: u64,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub send_initial_events: Option<bool>,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
}

impl ListOptions {
    pub fn parse(ctx: &Ctx) -> ApiResult<Self> {
        let q = &ctx.query;
        let rv = q
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let rv_match = match q.get("resourceVersionMatch") {
            None | Some("") => RvMatch::Unset,
            Some("NotOlderThan") => RvMatch::NotOlderThan,
            Some("Exact") => RvMatch::Exact,
            Some(other) => {
                return Err(ApiError::invalid_options(
                    "ListOptions",
                    "resourceVersionMatch",
                    other,
                    "supported values: \"Exact\", \"NotOlderThan\", \"\"",
                ));
            }
        };
        let limit = match q.get("limit") {
            None | Some("") => 0,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if n <= 0 => 0,
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be an integer, got {l:?}"
                    )));
                }
            },
        };
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {}", e.0)))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.0))?;
        fields
            .check_fields(&ctx.info)
            .map_err(|e| ApiError::bad_request(e.0))?;
        let send_initial_events = match q.get("sendInitialEvents") {
            None | Some("") => None,
            Some(_) => Some(q.flag("sendInitialEvents")),
        };
        let timeout_seconds = match q.get("timeoutSeconds") {
            None | Some("") => None,
            Some(t) => Some(t.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "timeoutSeconds must be a non-negative integer, got {t:?}"
                ))
            })?),
        };
        let (continue_token, returned_before) = match q.get("continue").filter(|c| !c.is_empty()) {
            None => (None, 0),
            Some(c) => {
                let bad = || ApiError::bad_request("continue key is not valid: malformed token");
                let (store, n) = c.rsplit_once('.').ok_or_else(bad)?;
                (
                    Some(store.to_string()),
                    n.parse::<u64>().map_err(|_| bad())?,
                )
            }
        };
        let o = ListOptions {
            resource_version: rv,
            rv_match,
            limit,
            continue_token,
            returned_before,
            labels,
            fields,
            send_initial_events,
            allow_bookmarks: q.flag("allowWatchBookmarks"),
            timeout_seconds,
        };
        Ok(o)
    }

    /// The checks apimachinery's ValidateListOptions makes for a LIST.
    pub fn validate_list(&self) -> ApiResult<()> {
        if self.send_initial_events.is_some() {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "sendInitialEvents",
                "true",
                "sendInitialEvents is forbidden for list",
            ));
        }
        self.validate_rv_match(false)?;
        if self.continue_token.is_some()
            && self.resource_version.as_deref().is_some_and(|r| r != "0")
        {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        Ok(())
    }

    fn validate_rv_match(&self, watch: bool) -> ApiResult<()> {
        if self.rv_match == RvMatch::Unset {
            return Ok(());
        }
        let value = match self.rv_match {
            RvMatch::Exact => "Exact",
            _ => "NotOlderThan",
        };
        if watch && self.send_initial_events != Some(true) {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "resourceVersionMatch",
                value,
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if watch && self.rv_match != RvMatch::NotOlderThan {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "resourceVersionMatch",
                value,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if self.resource_version.is_none() && !watch {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "resourceVersionMatch",
                value,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if self.continue_token.is_some() {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "resourceVersionMatch",
                value,
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if self.rv_match == RvMatch::Exact && self.resource_version.as_deref() == Some("0") {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "resourceVersionMatch",
                value,
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        Ok(())
    }

    /// The checks for a WATCH.
    pub fn validate_watch(&self) -> ApiResult<()> {
        self.validate_rv_match(true)?;
        if self.send_initial_events == Some(true) && self.rv_match != RvMatch::NotOlderThan {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "sendInitialEvents",
                "true",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if self.send_initial_events == Some(true) && !self.allow_bookmarks {
            return Err(ApiError::invalid_options(
                "ListOptions",
                "sendInitialEvents",
                "true",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        Ok(())
    }

    pub fn filters(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    /// Whether an object passes the label and field selectors.
    pub fn matches_value(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(obj)
    }

    pub fn matches_stored(&self, stored: &[u8]) -> bool {
        if !self.filters() {
            return true;
        }
        match serde_json::from_slice::<Value>(stored) {
            Ok(v) => self.matches_value(&v),
            Err(_) => false,
        }
    }

    /// The namespace a list can narrow to from the path or a `metadata.namespace=` field.
    pub fn namespace<'a>(&'a self, ctx: &'a Ctx) -> Option<&'a str> {
        if !ctx.info.namespaced {
            return None;
        }
        ctx.target
            .namespace
            .as_deref()
            .or_else(|| self.fields.requirement_value("metadata.namespace"))
    }
}

/// Waits until the watch hub has applied `p` (a resourceVersion from a client), or answers
/// 504 ResourceVersionTooLarge.
pub async fn wait_for(api: &Api, p: Position) -> ApiResult<()> {
    let head = api.log.head().await.map_err(from_store)?;
    if p <= head {
        return Ok(());
    }
    let deadline = Duration::from_millis(FUTURE_RV_WAIT_MS);
    match tokio::time::timeout(deadline, async {
        loop {
            match api.log.head().await {
                Ok(h) if h >= p => return Ok(()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(from_store(e)),
        Err(_) => Err(ApiError::too_large_rv(format!(
            "Too large resource version: {p}, current: {head}"
        ))),
    }
}

/// Where a list reads, from its options.
async fn list_at(ctx: &Ctx, o: &ListOptions) -> ApiResult<ListAt> {
    let rv = match o.resource_version.as_deref() {
        None | Some("0") => return Ok(ListAt::Latest),
        Some(rv) => parse_rv(rv)?,
    };
    wait_for(&ctx.api, rv).await?;
    Ok(match o.rv_match {
        RvMatch::Exact => ListAt::Exact(rv),
        // NotOlderThan (the default for an explicit RV): the latest state is not older.
        _ => ListAt::Latest,
    })
}

fn map_list_error(e: logbook_store::Error, continuing: bool) -> ApiError {
    match e {
        logbook_store::Error::Compacted { requested, horizon } if continuing => {
            ApiError::expired(format!(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list. (requested {requested}, retained from {horizon})"
            ))
        }
        logbook_store::Error::Compacted { requested, horizon } => {
            ApiError::expired(format!("too old resource version: {requested} ({horizon})"))
        }
        logbook_store::Error::InvalidArgument(m) if continuing => {
            ApiError::bad_request(format!("continue key is not valid: {m}"))
        }
        other => from_store(other),
    }
}

/// One page of at most `limit` matching items (fewer when the scan budget runs out), the
/// list position, and the token for the rest.
pub async fn page(
    ctx: &Ctx,
    o: &ListOptions,
    limit: usize,
) -> ApiResult<(Vec<StoredObject>, Position, Option<String>)> {
    let resource = ctx.info.store_resource();
    let ns = o.namespace(ctx);
    let at = list_at(ctx, o).await?;
    let mut token = o.continue_token.clone();
    let mut out = Vec::new();
    let mut position = None;
    loop {
        let want = limit - out.len();
        let p = ctx
            .api
            .log
            .list(&resource, ns, at, want, token.as_deref())
            .await
            .map_err(|e| map_list_error(e, token.is_some()))?;
        position.get_or_insert(p.position);
        out.extend(p.items.into_iter().filter(|i| o.matches_stored(&i.object)));
        token = p.continue_token;
        if out.len() >= limit || token.is_none() {
            break;
        }
    }
    Ok((out, position.unwrap_or_default(), token))
}

/// Every matching item at one position (deletecollection, watch initial events).
pub async fn collect_all(ctx: &Ctx, o: &ListOptions) -> ApiResult<(Vec<StoredObject>, Position)> {
    let resource = ctx.info.store_resource();
    let ns = o.namespace(ctx);
    let at = list_at(ctx, o).await?;
    let mut token: Option<String> = None;
    let mut out = Vec::new();
    let mut position = None;
    loop {
        let p = ctx
            .api
            .log
            .list(&resource, ns, at, STREAM_PAGE_ITEMS, token.as_deref())
            .await
            .map_err(|e| map_list_error(e, false))?;
        let pos = *position.get_or_insert(p.position);
        token = p.continue_token;
        out.extend(p.items.into_iter().filter(|i| o.matches_stored(&i.object)));
        if token.is_none() {
            return Ok((out, pos));
        }
    }
}

pub async fn list(ctx: &Ctx) -> ApiResult<Response> {
    let o = ListOptions::parse(ctx)?;
    o.validate_list()?;
    let r = Renderer::new(ctx);
    r.check_list()?;
    if o.limit > 0 {
        let (items, position, token) = page(ctx, &o, o.limit).await?;
        let returned = o.returned_before + items.len() as u64;
        // An estimate from live counters (exact when nothing changed since the first page);
        // kube also omits it under selectors.
        let remaining = match &token {
            Some(_) if !o.filters() => {
                let total = ctx
                    .api
                    .log
                    .count(&ctx.info.store_resource(), o.namespace(ctx))
                    .await
                    .map_err(from_store)?;
                Some(total.saturating_sub(returned).max(1))
            }
            _ => None,
        };
        let token = token.map(|t| format!("{t}.{returned}"));
        let mut out = r.list_head(&ctx.info, position, token.as_deref(), remaining);
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            r.item(&mut out, &item.object, item.position.0);
        }
        out.extend_from_slice(b"]}");
        return Ok(json_response(StatusCode::OK, out));
    }
    stream_all(ctx, o, r).await
}

/// An unlimited list: the first page is read before answering (so errors are proper
/// statuses), the rest streamed.
async fn stream_all(ctx: &Ctx, o: ListOptions, r: Renderer) -> ApiResult<Response> {
    let resource = ctx.info.store_resource();
    let ns = o.namespace(ctx).map(str::to_string);
    let at = list_at(ctx, &o).await?;
    let log = ctx.api.log.clone();
    let first = log
        .list(&resource, ns.as_deref(), at, STREAM_PAGE_ITEMS, None)
        .await
        .map_err(|e| map_list_error(e, false))?;
    let mut head = r.list_head(&ctx.info, first.position, None, None);
    let mut any = false;
    for item in first.items.iter().filter(|i| o.matches_stored(&i.object)) {
        if any {
            head.push(b',');
        }
        any = true;
        r.item(&mut head, &item.object, item.position.0);
    }
    let Some(mut token) = first.continue_token else {
        head.extend_from_slice(b"]}");
        return Ok(json_response(StatusCode::OK, head));
    };
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHUNKS_BUFFERED_MAX);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        loop {
            let page = match log
                .list(
                    &resource,
                    ns.as_deref(),
                    at,
                    STREAM_PAGE_ITEMS,
                    Some(&token),
                )
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // The status line is gone; abort the body so the client sees a failure.
                    tracing::warn!(error = %e, "streamed list failed mid-way");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut chunk = Vec::with_capacity(page.items.len() * 512);
            for item in page.items.iter().filter(|i| o.matches_stored(&i.object)) {
                if any {
                    chunk.push(b',');
                }
                any = true;
                r.item(&mut chunk, &item.object, item.position.0);
            }
            let last = page.continue_token.is_none();
            if last {
                chunk.extend_from_slice(b"]}");
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() || last {
                return;
            }
            token = page.continue_token.unwrap_or_default();
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
