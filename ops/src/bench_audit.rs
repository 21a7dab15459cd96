//! `logbook bench audit`: how fast `logbook audit verify` checks a store.
//!
//! Writes `--events` events (1,000,000 by default; 1 KiB objects, each object updated
//! [`BENCH_AUDIT_REVISIONS_PER_OBJECT`] times, spread over two resources so both chains and
//! per-resource checkpoints are exercised), writes the checkpoints, closes the store, then
//! opens it as the offline tool does and times a full verify (event hashes, chain links,
//! checkpoints, current state). The floor is from issue 6.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use logbook_store::{
    Actor, AppendRequest, EmbeddedConfig, EventLog, EventType, Expect, LogConfig, ObjectKey,
    VerifyScope,
};
use tokio::task::JoinSet;

use crate::bench_store::Progress;
use crate::cli::BenchAuditArgs;

/// Revisions written per object (the first creates it).
pub const BENCH_AUDIT_REVISIONS_PER_OBJECT: u64 = 10;
/// Concurrent writers loading the store.
pub const BENCH_AUDIT_WRITERS_COUNT: u64 = 64;
/// Object size in bytes.
pub const BENCH_AUDIT_OBJECT_BYTES: usize = 1024;
/// Floor from issue 6: `audit verify` over 1,000,000 events.
pub const FLOOR_AUDIT_VERIFY_EVENTS_PER_SEC: f64 = 200_000.0;

fn object(i: u64, rev: u64) -> Vec<u8> {
    let mut v =
        format!("{{\"metadata\":{{\"name\":\"o{i}\"}},\"rev\":{rev},\"fill\":\"").into_bytes();
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rev | 1;
    while v.len() < BENCH_AUDIT_OBJECT_BYTES - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v.extend_from_slice(b"\"}");
    v
}

fn request(i: u64, rev: u64) -> AppendRequest {
    let resource = if i.is_multiple_of(2) {
        "pods"
    } else {
        "coordination.k8s.io/leases"
    };
    AppendRequest {
        key: ObjectKey::new(resource, "bench", format!("o{i}")),
        kind: if rev == 0 {
            EventType::Added
        } else {
            EventType::Modified
        },
        object: object(i, rev),
        uid: format!("uid-{i}"),
        expect: Expect::default(),
        actor: Actor {
            user: "bench".into(),
            groups: Vec::new(),
            ..Default::default()
        },
        verb: if rev == 0 { "create" } else { "update" }.into(),
        request_id: String::new(),
    }
}

pub async fn run(args: BenchAuditArgs) -> Result<()> {
    let tmp = match &args.tmp_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = tmp.path().join("audit");
    let objects = args.events.div_ceil(BENCH_AUDIT_REVISIONS_PER_OBJECT);
    eprintln!(
        "[audit] writing {} events ({objects} objects x {BENCH_AUDIT_REVISIONS_PER_OBJECT} revisions) with {BENCH_AUDIT_WRITERS_COUNT} writers",
        args.events
    );
    let kv = logbook_store::Embedded::open(EmbeddedConfig::new(&dir))?;
    let log = EventLog::open(Arc::new(kv.clone()), LogConfig::default()).await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    {
        let _progress = Progress::start(
            "audit load".into(),
            "appends",
            done.clone(),
            Some(args.events),
        );
        let mut tasks = JoinSet::new();
        for w in 0..BENCH_AUDIT_WRITERS_COUNT {
            let (log, done, total) = (log.clone(), done.clone(), args.events);
            // Writer w owns objects w, w + W, ...: revisions of one object are written in
            // order by one writer, so no write conflicts.
            tasks.spawn(async move {
                for rev in 0..BENCH_AUDIT_REVISIONS_PER_OBJECT {
                    let mut i = w;
                    while i < objects {
                        if rev * objects + i < total {
                            log.append(&request(i, rev))
                                .await
                                .with_context(|| format!("append of o{i} rev {rev}"))?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        i += BENCH_AUDIT_WRITERS_COUNT;
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let checkpoints = log.write_checkpoints().await?;
    let checkpoint_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "[audit] wrote {} events in {load_secs:.1} s, {checkpoints} checkpoints in {checkpoint_secs:.1} s; closing and verifying",
        done.load(Ordering::Relaxed)
    );
    drop(log);
    tokio::task::spawn_blocking(move || kv.close()).await?;

    let (kv, log) = crate::verify::open_stopped(&dir).await?;
    let summary = crate::verify::verify_with_progress(&log, VerifyScope::Full).await?;
    drop(log);
    kv.close();
    let rate = summary.events_per_second();
    println!("## audit verify\n");
    print!("{}", summary.table());
    println!(
        "\nfloor: >= {FLOOR_AUDIT_VERIFY_EVENTS_PER_SEC:.0} events/s over 1,000,000 events: {}",
        if rate >= FLOOR_AUDIT_VERIFY_EVENTS_PER_SEC {
            "met"
        } else {
            "MISSED"
        }
    );
    println!("checkpoints written in {checkpoint_secs:.2} s after the load");
    Ok(())
}
