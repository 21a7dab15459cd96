//! `logbook bench history`: the auditors' benchmark. Writes a history straight into a new
//! store (appends through the event log, the way the API writes them, 64 writers), then
//! starts `logbook serve` on it as a separate process and measures over HTTPS with kube-rs:
//! 1. the first page (100) of the revisions of one object that has 10,000 revisions;
//! 2. a list of a namespace of 10,000 objects as of an old position (every object has
//!    changed since), `resourceVersionMatch=Exact`;
//! 3. the first page (100) of one user's change feed in a log of 1,000,000 events, where the
//!    user made one event in a thousand;
//! 4. the first page of the same feed narrowed by resource, and of a busy namespace's feed
//!    with no user (read through the log itself, for comparison; a feed through the log
//!    examines at most `CHANGES_SCAN_ENTRIES_MAX` entries per page, so a quiet namespace
//!    may answer an empty page with a continue token, as Kubernetes lists may).
//!
//! Progress goes to stderr; the Markdown table to stdout and `<out>/results.md`, the raw
//! numbers to `<out>/results.json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use logbook_store::{
    Actor, AppendRequest, EmbeddedConfig, EventLog, EventType, Expect, LogConfig, ObjectKey,
    Position,
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::bench_api::{Lat, client, lat, lat_json, start_server_in};
use crate::bench_store::Progress;
use crate::cli::BenchApiArgs;

/// Events in the log when the queries run (`--quick`: second).
pub const BENCH_HISTORY_EVENTS_COUNT: (u64, u64) = (1_000_000, 100_000);
/// Revisions of the one object whose history is paged.
pub const BENCH_HISTORY_REVISIONS_COUNT: (u64, u64) = (10_000, 2_000);
/// Objects in the namespace listed as of an old position.
pub const BENCH_HISTORY_AS_OF_OBJECTS_COUNT: (u64, u64) = (10_000, 2_000);
/// One event in this many is made by the audited user.
pub const BENCH_HISTORY_USER_EVERY: u64 = 1_000;
/// Concurrent writers filling the store.
const BENCH_HISTORY_WRITERS_COUNT: u64 = 64;
/// Objects the filler events update, round robin.
const BENCH_HISTORY_FILLER_OBJECTS_COUNT: u64 = 1_000;
/// Times each query is repeated (the table shows p50 and p99 of these).
const BENCH_HISTORY_QUERY_RUNS_COUNT: usize = 100;
/// Times the list-as-of runs.
const BENCH_HISTORY_LIST_RUNS_COUNT: usize = 5;
/// Items per page in the paged queries.
const BENCH_HISTORY_PAGE_ITEMS: usize = 100;

const RESOURCE: &str = "configmaps";

fn object(ns: &str, name: &str, generation: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
            "creationTimestamp": "2026-11-22T00:00:00Z", "labels": {"app": "bench", "tier": "history"}},
        "apiVersion": "v1", "kind": "ConfigMap",
        "data": {"generation": generation.to_string(), "setting.conf": "key = value\nother = thing\n", "owner": "team-a"},
    }))
    .unwrap_or_default()
}

fn request(ns: &str, name: &str, user: &str, kind: EventType, generation: u64) -> AppendRequest {
    AppendRequest {
        key: ObjectKey::new(RESOURCE, ns, name),
        kind,
        object: object(ns, name, generation),
        uid: format!("uid-{ns}-{name}"),
        expect: Expect::default(),
        actor: Actor {
            user: user.into(),
            groups: vec!["bench".into()],
            user_agent: "logbook-bench".into(),
            source: "127.0.0.1:1".into(),
        },
        verb: if kind == EventType::Added {
            "create"
        } else {
            "update"
        }
        .into(),
        request_id: String::new(),
    }
}

/// Appends `n` requests made by `make(i)` with the benchmark's writers.
async fn fill(
    log: &Arc<EventLog>,
    n: u64,
    counter: &Arc<AtomicU64>,
    make: impl Fn(u64) -> AppendRequest + Send + Sync + 'static,
) -> Result<()> {
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..BENCH_HISTORY_WRITERS_COUNT {
        let (log, make, next, counter) = (log.clone(), make.clone(), next.clone(), counter.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                log.append(&make(i)).await?;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Writes the history; returns the old position the list-as-of reads at.
async fn populate(dir: &std::path::Path, quick: bool) -> Result<Position> {
    let pick = |v: (u64, u64)| if quick { v.1 } else { v.0 };
    let (events, revisions, as_of_objects) = (
        pick(BENCH_HISTORY_EVENTS_COUNT),
        pick(BENCH_HISTORY_REVISIONS_COUNT),
        pick(BENCH_HISTORY_AS_OF_OBJECTS_COUNT),
    );
    let kv = logbook_store::Embedded::open(EmbeddedConfig::new(dir))?;
    let log = Arc::new(EventLog::open(Arc::new(kv.clone()), LogConfig::default()).await?);
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("populate".into(), "events", counter.clone(), Some(events));

    // The namespace listed as of an old position: created, then every object changed.
    fill(&log, as_of_objects, &counter, |i| {
        request("asof", &format!("cm-{i}"), "bench", EventType::Added, 0)
    })
    .await?;
    let old = log.head().await?;
    fill(&log, as_of_objects, &counter, |i| {
        request("asof", &format!("cm-{i}"), "bench", EventType::Modified, 1)
    })
    .await?;

    // The object with many revisions, written by one writer while the filler runs.
    let hot_log = log.clone();
    let hot_counter = counter.clone();
    let hot = tokio::spawn(async move {
        for i in 0..revisions {
            let kind = if i == 0 {
                EventType::Added
            } else {
                EventType::Modified
            };
            hot_log
                .append(&request("hist", "hot", "bench", kind, i))
                .await?;
            hot_counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(())
    });
    let filler_objects = BENCH_HISTORY_FILLER_OBJECTS_COUNT;
    fill(&log, filler_objects, &counter, move |i| {
        request("noise", &format!("cm-{i}"), "noise", EventType::Added, 0)
    })
    .await?;
    let rest = events.saturating_sub(2 * as_of_objects + revisions + filler_objects);
    fill(&log, rest, &counter, move |i| {
        let user = if i % BENCH_HISTORY_USER_EVERY == BENCH_HISTORY_USER_EVERY - 1 {
            "alice"
        } else {
            "noise"
        };
        request(
            "noise",
            &format!("cm-{}", i % filler_objects),
            user,
            EventType::Modified,
            i,
        )
    })
    .await?;
    hot.await??;
    drop(progress);
    // A running server checkpoints as it goes; without this, the server would spend its
    // first seconds checkpointing the whole log while the queries are timed.
    let started = Instant::now();
    let checkpoints = log.write_checkpoints().await?;
    eprintln!(
        "populate: {checkpoints} checkpoints written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let head = log.head().await?;
    eprintln!(
        "populate: {} events, head {head}",
        counter.load(Ordering::Relaxed)
    );
    drop(log);
    kv.close();
    Ok(old)
}

async fn get_json(c: &kube::Client, path: &str) -> Result<Value> {
    let req = http::Request::get(path).body(Vec::new())?;
    let text = c
        .request_text(req)
        .await
        .with_context(|| format!("GET {path}"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs `path` `runs` times; checks each answer with `check`; returns the latencies.
async fn timed(
    c: &kube::Client,
    path: &str,
    runs: usize,
    check: impl Fn(&Value) -> Result<()>,
) -> Result<Lat> {
    let mut nanos = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let v = get_json(c, path).await?;
        nanos.push(started.elapsed().as_nanos() as u64);
        check(&v)?;
    }
    Ok(lat(nanos))
}

fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub async fn run(args: BenchApiArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    std::fs::create_dir_all(&args.out)?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let started = Instant::now();
    let old = populate(&data, args.quick).await?;
    let populate_secs = started.elapsed().as_secs_f64();
    let pick = |v: (u64, u64)| if args.quick { v.1 } else { v.0 };
    let (events, revisions, as_of_objects) = (
        pick(BENCH_HISTORY_EVENTS_COUNT),
        pick(BENCH_HISTORY_REVISIONS_COUNT),
        pick(BENCH_HISTORY_AS_OF_OBJECTS_COUNT),
    );
    let server = start_server_in(&bin, tmp, &args.server_arg)?;
    let c = client(&server.kubeconfig).await?;
    let page = BENCH_HISTORY_PAGE_ITEMS;
    // The client's TLS connection is set up before anything is timed: the floors are about
    // the queries, not the handshake.
    get_json(&c, "/version").await?;

    eprintln!("phase 1: revisions of an object with {revisions} revisions, first page of {page}");
    let revs = timed(
        &c,
        &format!("/apis/history.logbook.dev/v1/namespaces/hist/revisions?resource=configmaps&name=hot&limit={page}"),
        BENCH_HISTORY_QUERY_RUNS_COUNT,
        |v| {
            let it = items(v);
            let newest = it.first().and_then(|i| i.pointer("/patch/0/value")).cloned();
            if it.len() != page || newest != Some(json!((revisions - 1).to_string())) {
                bail!("revisions page: {} items, newest patch {newest:?}", it.len());
            }
            Ok(())
        },
    )
    .await?;

    eprintln!("phase 2: list of {as_of_objects} objects as of position {old} (all changed since)");
    let as_of = timed(
        &c,
        &format!(
            "/api/v1/namespaces/asof/configmaps?resourceVersion={old}&resourceVersionMatch=Exact"
        ),
        BENCH_HISTORY_LIST_RUNS_COUNT,
        |v| {
            let it = items(v);
            let all_old = it
                .iter()
                .all(|i| i.pointer("/data/generation") == Some(&json!("0")));
            if it.len() as u64 != as_of_objects || !all_old {
                bail!(
                    "list as of: {} items, all at generation 0: {all_old}",
                    it.len()
                );
            }
            Ok(())
        },
    )
    .await?;

    eprintln!("phase 3: one user's change feed in {events} events, first page of {page}");
    let user_check = |v: &Value| {
        let it = items(v);
        let last_page = v.pointer("/metadata/continue").is_none();
        if (it.len() != page && !last_page)
            || it.is_empty()
            || it
                .iter()
                .any(|i| i.pointer("/user/username") != Some(&json!("alice")))
        {
            bail!("user feed: {} items", it.len());
        }
        Ok(())
    };
    let feed = timed(
        &c,
        &format!("/apis/history.logbook.dev/v1/changes?user=alice&limit={page}"),
        BENCH_HISTORY_QUERY_RUNS_COUNT,
        user_check,
    )
    .await?;
    let feed_res = timed(
        &c,
        &format!(
            "/apis/history.logbook.dev/v1/namespaces/noise/changes?user=alice&resource=configmaps&verb=update&limit={page}"
        ),
        BENCH_HISTORY_QUERY_RUNS_COUNT,
        user_check,
    )
    .await?;
    eprintln!("phase 4: a namespace's change feed without a user (read through the log)");
    let feed_ns = timed(
        &c,
        &format!("/apis/history.logbook.dev/v1/namespaces/noise/changes?limit={page}"),
        BENCH_HISTORY_QUERY_RUNS_COUNT,
        |v| {
            if items(v).len() != page {
                bail!("namespace feed: {} items", items(v).len());
            }
            Ok(())
        },
    )
    .await?;
    drop(server);

    let check = |ok: bool| if ok { "pass" } else { "**FAIL**" };
    let row = |what: String, l: &Lat, floor: &str, ok: Option<bool>| {
        format!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {floor} | {} |\n",
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            ok.map_or("—", check)
        )
    };
    let mut md = format!(
        "| query ({events} events, store filled in {populate_secs:.0} s) | p50 | p99 | max | floor | |\n|---|---:|---:|---:|---:|---|\n"
    );
    md += &row(
        format!("revisions of one object with {revisions} revisions, first page of {page}"),
        &revs,
        "< 20 ms",
        Some(revs.p99_ms < 20.0),
    );
    md += &row(
        format!("list as of an old position, namespace of {as_of_objects} objects"),
        &as_of,
        "< 1 s",
        Some(as_of.max_ms < 1_000.0),
    );
    md += &row(
        format!(
            "one user's change feed (1 event in {BENCH_HISTORY_USER_EVERY}), first page of {page}"
        ),
        &feed,
        "< 2 s",
        Some(feed.max_ms < 2_000.0),
    );
    md += &row(
        "same, narrowed to a namespace, resource and verb".into(),
        &feed_res,
        "",
        None,
    );
    md += &row(
        "a namespace's change feed without a user (through the log)".into(),
        &feed_ns,
        "",
        None,
    );
    print!("{md}");
    std::fs::write(args.out.join("results.md"), &md)?;
    let raw = json!({
        "events": events, "populate_secs": populate_secs,
        "revisions_first_page": lat_json(&revs),
        "list_as_of": lat_json(&as_of),
        "user_feed_first_page": lat_json(&feed),
        "user_feed_narrowed_first_page": lat_json(&feed_res),
        "namespace_feed_first_page": lat_json(&feed_ns),
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&raw)?,
    )?;
    Ok(())
}
