//! Per-resource retention and checkpoints (issue 6, items 6 and 7): compacting one resource
//! removes its old revisions but never its current objects and never another resource's
//! history; reads of it below its horizon answer Compacted; checkpoints chain per resource,
//! survive retention, and `verify` catches rewritten events and altered checkpoints, naming
//! the position and object.

mod common;

use std::time::Duration;

use common::fresh;
use logbook_store::kv::Kv;
use logbook_store::{
    Actor, AppendRequest, CompactTo, Error, EventLog, EventType, Expect, HubConfig, ListAt,
    ObjectKey, Position, VerifyScope, WatchHub, keys,
};

const LEASES: &str = "coordination.k8s.io/leases";
/// Bound of every async step in these tests.
const STEP_TIMEOUT_SECONDS: u64 = 30;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(STEP_TIMEOUT_SECONDS), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn req(resource: &str, kind: EventType, name: &str, object: &str) -> AppendRequest {
    AppendRequest {
        key: ObjectKey::new(resource, "default", name),
        kind,
        object: object.as_bytes().to_vec(),
        uid: format!("uid-{name}"),
        expect: Expect::default(),
        actor: Actor {
            user: "tester".into(),
            groups: Vec::new(),
            ..Default::default()
        },
        verb: "update".into(),
        request_id: String::new(),
    }
}

async fn put(log: &EventLog, resource: &str, name: &str, rev: u32) -> Position {
    let kind = if rev == 0 {
        EventType::Added
    } else {
        EventType::Modified
    };
    log.append(&req(resource, kind, name, &format!("{{\"rev\":{rev}}}")))
        .await
        .expect("append")
        .position
}

/// Leases `a` (6 revisions) and `gone` (created, deleted), pods `p` (6 revisions), written
/// interleaved; returns the position after the first round.
async fn history(log: &EventLog) -> Position {
    put(log, LEASES, "gone", 0).await;
    let mut first = Position::ZERO;
    for rev in 0..6 {
        put(log, LEASES, "a", rev).await;
        let p = put(log, "pods", "p", rev).await;
        if rev == 0 {
            first = p;
        }
    }
    log.append(&req(LEASES, EventType::Deleted, "gone", "{}"))
        .await
        .expect("delete");
    first
}

#[tokio::test]
async fn compacting_one_resource_removes_its_old_revisions_but_never_current_objects_or_other_resources_history()
 {
    let s = fresh().await;
    let first = history(&s.log).await;
    let head = s.log.head().await.expect("head");
    let report = within(
        "compact_resource",
        s.log
            .compact_resource(LEASES, CompactTo::Horizon(head), |_| {}),
    )
    .await
    .expect("compact leases");
    assert_eq!(report.horizon, head);
    assert_eq!(
        report.removed_events,
        5 + 2,
        "5 old lease revisions and the deleted lease"
    );
    let a = ObjectKey::new(LEASES, "default", "a");
    let revs = s.log.revisions(&a).await.expect("revisions");
    assert_eq!(revs.len(), 1, "only the current lease revision stays");
    assert_eq!(revs[0].object, b"{\"rev\":5}");
    assert!(
        s.log.get(&a).await.expect("get").is_some(),
        "the current lease stays"
    );
    let gone = ObjectKey::new(LEASES, "default", "gone");
    assert!(s.log.revisions(&gone).await.expect("revisions").is_empty());
    let p = ObjectKey::new("pods", "default", "p");
    assert_eq!(s.log.revisions(&p).await.expect("pod revisions").len(), 6);
    let old = s
        .log
        .list("pods", None, ListAt::Exact(first), 0, None)
        .await
        .expect("pods at an old position still list");
    assert_eq!(old.items[0].object, b"{\"rev\":0}");
    assert_eq!(s.log.resource_horizon(LEASES).await.expect("h"), head);
    assert_eq!(
        s.log.resource_horizon("pods").await.expect("h"),
        Position::ZERO
    );
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("a compacted store verifies");
}

#[tokio::test]
async fn reads_of_a_resource_below_its_own_horizon_answer_compacted() {
    let s = fresh().await;
    let first = history(&s.log).await;
    // A paged list of leases started before compaction, at an old position.
    put(&s.log, LEASES, "b", 0).await;
    let page = s
        .log
        .list(LEASES, None, ListAt::Latest, 1, None)
        .await
        .expect("first page");
    let token = page.continue_token.clone().expect("a second page follows");
    put(&s.log, LEASES, "a", 6).await;
    let head = s.log.head().await.expect("head");
    s.log
        .compact_resource(LEASES, CompactTo::Horizon(head), |_| {})
        .await
        .expect("compact");
    let compacted = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Compacted { horizon, .. }) => assert_eq!(horizon, head, "{what}"),
        Err(e) => panic!("{what}: expected Compacted, got {e}"),
        Ok(_) => panic!("{what}: expected Compacted, got an answer"),
    };
    compacted(
        s.log
            .list(LEASES, None, ListAt::Exact(first), 0, None)
            .await
            .map(|_| ()),
        "list as of",
    );
    compacted(
        s.log
            .get_as_of(&ObjectKey::new(LEASES, "default", "a"), first)
            .await
            .map(|_| ()),
        "get as of",
    );
    compacted(
        s.log
            .list(LEASES, None, ListAt::Latest, 1, Some(&token))
            .await
            .map(|_| ()),
        "continue token",
    );
    compacted(
        s.log
            .read_resource_log(LEASES, None, first, None, 0)
            .await
            .map(|_| ()),
        "resource log",
    );
    let hub = WatchHub::start(s.log.clone(), HubConfig::default())
        .await
        .expect("hub");
    compacted(
        within("subscribe", hub.subscribe(LEASES, None, first))
            .await
            .map(|_| ()),
        "watch",
    );
    // The state at the horizon and other resources stay readable.
    s.log
        .list(LEASES, None, ListAt::Exact(head), 0, None)
        .await
        .expect("leases at the horizon");
    let mut pods = within("subscribe pods", hub.subscribe("pods", None, first))
        .await
        .expect("pods below the leases' horizon");
    match within("first pod event", pods.next()).await.expect("event") {
        logbook_store::WatchItem::Event(e) => assert_eq!(e.object, b"{\"rev\":1}"),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_by_time_stops_at_the_first_event_newer_than_the_cutoff() {
    let s = fresh().await;
    put(&s.log, LEASES, "a", 0).await;
    let old = put(&s.log, LEASES, "a", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    tokio::time::sleep(Duration::from_millis(20)).await;
    put(&s.log, LEASES, "a", 2).await;
    put(&s.log, LEASES, "a", 3).await;
    let report = s
        .log
        .compact_resource(
            LEASES,
            CompactTo::OlderThan {
                cutoff_unix_nanos: cutoff,
            },
            |_| {},
        )
        .await
        .expect("compact");
    assert_eq!(report.horizon, old, "the newest event before the cutoff");
    assert_eq!(report.removed_events, 1);
    let revs = s
        .log
        .revisions(&ObjectKey::new(LEASES, "default", "a"))
        .await
        .expect("revisions");
    assert_eq!(
        revs.len(),
        3,
        "the state at the horizon and the two newer revisions"
    );
}

#[tokio::test]
async fn checkpoints_chain_per_resource_and_still_verify_after_retention() {
    let s = fresh().await;
    history(&s.log).await;
    let written = s.log.write_checkpoints().await.expect("checkpoints");
    assert_eq!(written, 2, "one per resource");
    assert_eq!(
        s.log.write_checkpoints().await.expect("again"),
        0,
        "nothing new"
    );
    for rev in 6..9 {
        put(&s.log, LEASES, "a", rev).await;
        put(&s.log, "pods", "p", rev).await;
    }
    assert_eq!(s.log.write_checkpoints().await.expect("more"), 2);
    let chain = s.log.checkpoints(LEASES).await.expect("chain");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].prev_position, chain[0].position);
    assert_eq!(chain[1].prev_digest, chain[0].digest);
    assert_eq!(chain[1].events, 3);
    let report = s
        .log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verify");
    assert_eq!(report.checkpoints, 4);

    // Compact the leases past the first checkpoint but not the second: the first goes with
    // the events it covered, the second's events stay until a later run.
    put(&s.log, LEASES, "a", 9).await;
    let head = s.log.head().await.expect("head");
    let r = s
        .log
        .compact_resource(LEASES, CompactTo::Horizon(head), |_| {})
        .await
        .expect("compact");
    assert_eq!(
        r.removed_checkpoints, 2,
        "both lease checkpoints lie at or below the horizon"
    );
    let report = s
        .log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verify after retention");
    assert_eq!(report.checkpoints, 2, "the pods' chain is untouched");

    // A chain that starts at the horizon again, and a second compaction below it.
    put(&s.log, LEASES, "a", 10).await;
    s.log.write_checkpoints().await.expect("checkpoints");
    let chain = s.log.checkpoints(LEASES).await.expect("chain");
    assert_eq!(
        chain[0].prev_position, head,
        "a new chain starts at the horizon"
    );
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verify");
}

#[tokio::test]
async fn retention_keeps_events_a_retained_checkpoint_covers_until_a_later_run() {
    let s = fresh().await;
    put(&s.log, LEASES, "a", 0).await;
    s.log.write_checkpoints().await.expect("checkpoint 1");
    let covered = put(&s.log, LEASES, "a", 1).await;
    put(&s.log, LEASES, "a", 2).await;
    s.log.write_checkpoints().await.expect("checkpoint 2");
    // The horizon falls inside the second checkpoint's range.
    let r = s
        .log
        .compact_resource(LEASES, CompactTo::Horizon(covered), |_| {})
        .await
        .expect("compact");
    assert_eq!(
        r.removed_events, 1,
        "only the revision before the first checkpoint"
    );
    assert_eq!(r.removed_checkpoints, 1);
    let revs = s
        .log
        .revisions(&ObjectKey::new(LEASES, "default", "a"))
        .await
        .expect("revisions");
    assert_eq!(revs.len(), 2);
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verify");
}

async fn set_raw(log: &EventLog, key: &[u8], value: Option<&[u8]>) {
    let kv: &dyn Kv = log.kv().as_ref();
    let mut tx = kv.begin().await.expect("begin");
    match value {
        Some(v) => tx.set(key, v),
        None => tx.clear(key),
    }
    tx.commit().await.expect("commit");
}

async fn get_raw(log: &EventLog, key: &[u8]) -> Vec<u8> {
    let kv: &dyn Kv = log.kv().as_ref();
    let mut tx = kv.begin().await.expect("begin");
    tx.get(key, true).await.expect("get").expect("present")
}

fn event_key(p: Position) -> Vec<u8> {
    keys::with_chunk(&keys::log_event(0, p.versionstamp()), 0)
}

fn corrupt_location(r: Result<logbook_store::VerifyReport, Error>) -> (String, String) {
    match r {
        Err(Error::Corrupt { location, detail }) => (location, detail),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("verify passed a tampered store"),
    }
}

#[tokio::test]
async fn verify_catches_a_rewritten_event_with_a_valid_checksum_naming_its_position_and_object() {
    let s = fresh().await;
    history(&s.log).await;
    s.log.write_checkpoints().await.expect("checkpoints");
    let revs = s
        .log
        .revisions(&ObjectKey::new("pods", "default", "p"))
        .await
        .expect("revisions");
    let victim = revs[2].position;
    let mut bytes = get_raw(&s.log, &event_key(victim)).await;
    // Change the object ("rev":2 → "rev":7) and recompute the envelope's checksum, as a
    // careful attacker with write access to the data would.
    let at = bytes
        .windows(7)
        .position(|w| w == b"\"rev\":2")
        .expect("object bytes");
    bytes[at + 6] = b'7';
    let len = u32::from_be_bytes(bytes[2..6].try_into().expect("len")) as usize;
    let payload = bytes[10..10 + len].to_vec();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..6]), &payload);
    bytes[6..10].copy_from_slice(&crc.to_be_bytes());
    set_raw(&s.log, &event_key(victim), Some(&bytes)).await;
    s.log
        .get_as_of(&ObjectKey::new("pods", "default", "p"), victim)
        .await
        .expect("the record still decodes: its checksum is valid");
    let (location, detail) = corrupt_location(s.log.verify(VerifyScope::Full, |_| {}).await);
    assert_eq!(
        location,
        format!("log position {victim}, object pods/default/p"),
        "{detail}"
    );
    assert!(detail.contains("hash"), "{detail}");
}

#[tokio::test]
async fn verify_catches_a_removed_checkpoint_and_a_changed_digest_naming_the_checkpoint() {
    let s = fresh().await;
    for round in 0..3 {
        put(&s.log, "pods", "p", round).await;
        s.log.write_checkpoints().await.expect("checkpoint");
    }
    let chain = s.log.checkpoints("pods").await.expect("chain");
    assert_eq!(chain.len(), 3);
    let middle = keys::checkpoint("pods", chain[1].position);
    let saved = get_raw(&s.log, &middle).await;
    set_raw(&s.log, &middle, None).await;
    let (location, detail) = corrupt_location(s.log.verify(VerifyScope::Full, |_| {}).await);
    assert_eq!(
        location,
        format!("checkpoint of pods at log position {}", chain[2].position),
        "{detail}"
    );

    // Put it back with one digest byte changed: the digest no longer re-derives.
    let mut changed = saved.clone();
    let d = changed
        .windows(32)
        .rposition(|w| w == chain[1].digest)
        .expect("digest bytes");
    changed[d] ^= 1;
    set_raw(&s.log, &middle, Some(&changed)).await;
    let (location, detail) = corrupt_location(s.log.verify(VerifyScope::Full, |_| {}).await);
    assert!(
        location.starts_with("checkpoint of pods at log position"),
        "{location}: {detail}"
    );
    set_raw(&s.log, &middle, Some(&saved)).await;
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("restored");
}

#[tokio::test]
async fn verify_catches_a_removed_event_above_the_horizon() {
    let s = fresh().await;
    history(&s.log).await;
    let revs = s
        .log
        .revisions(&ObjectKey::new("pods", "default", "p"))
        .await
        .expect("revisions");
    set_raw(&s.log, &event_key(revs[3].position), None).await;
    let (location, detail) = corrupt_location(s.log.verify(VerifyScope::Full, |_| {}).await);
    assert_eq!(
        location,
        format!("log position {}, object pods/default/p", revs[4].position),
        "{detail}"
    );
}

#[tokio::test]
async fn verify_accepts_many_revisions_of_one_object_read_in_the_same_page() {
    let s = fresh().await;
    // Consecutive revisions of one object land in one scan page, over several pages: each
    // must be checked against the one just before it, not against the previous page's.
    for rev in 0..3_000 {
        put(&s.log, "configmaps", "hot", rev).await;
        if rev % 97 == 0 {
            put(&s.log, LEASES, &format!("l{rev}"), 0).await;
        }
    }
    within("checkpoints", s.log.write_checkpoints())
        .await
        .expect("checkpoints");
    for scope in [VerifyScope::Full, VerifyScope::Tail(50)] {
        let report = within("verify", s.log.verify(scope, |_| {}))
            .await
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
        assert!(report.events > 0);
    }
}
