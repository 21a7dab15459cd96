//! Compaction: after `compact(h)`, every read at or above `h` answers exactly as before,
//! reads below `h` answer Compacted (Kubernetes' 410), and the log still verifies.

mod common;

use std::collections::BTreeSet;

use common::{fresh, req};
use logbook_store::{Error, EventType, ListAt, ObjectKey, Position, VerifyScope};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Update(u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Create),
        (0u8..6).prop_map(Op::Update),
        (0u8..6).prop_map(Op::Delete)
    ]
}

/// Everything a reader can ask at `at`: the list, and each key's state.
async fn view(
    log: &logbook_store::EventLog,
    keys: &BTreeSet<ObjectKey>,
    at: Position,
) -> (
    Vec<(String, Vec<u8>, Position)>,
    Vec<Option<(Vec<u8>, Position)>>,
) {
    let list = log
        .list("pods", None, ListAt::Exact(at), 0, None)
        .await
        .expect("list");
    let items = list
        .items
        .into_iter()
        .map(|o| (o.key.name, o.object, o.position))
        .collect();
    let mut states = Vec::new();
    for k in keys {
        states.push(
            log.get_as_of(k, at)
                .await
                .expect("as of")
                .map(|e| (e.object, e.position)),
        );
    }
    (items, states)
}

async fn run_case(ops: Vec<Op>, cut: usize) {
    let s = fresh().await;
    for (i, op) in ops.iter().enumerate() {
        let (kind, n) = match *op {
            Op::Create(n) => (EventType::Added, n),
            Op::Update(n) => (EventType::Modified, n),
            Op::Delete(n) => (EventType::Deleted, n),
        };
        // Invalid ops (create of a present object…) are refused and leave no trace.
        let _ = s
            .log
            .append(&req(
                kind,
                "ns",
                &format!("o{n}"),
                format!("rev{i}").as_bytes(),
            ))
            .await;
    }
    let log = s
        .log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
        .expect("read log");
    if log.is_empty() {
        return;
    }
    let positions: Vec<Position> = log.iter().map(|e| e.position).collect();
    let horizon = positions[cut % positions.len()];
    let keys: BTreeSet<ObjectKey> = log.iter().map(|e| e.key.clone()).collect();
    let mut before = Vec::new();
    for &p in positions.iter().filter(|&&p| p >= horizon) {
        before.push(view(&s.log, &keys, p).await);
    }
    let current_before = s
        .log
        .list("pods", None, ListAt::Latest, 0, None)
        .await
        .expect("list")
        .items;

    let report = s.log.compact(horizon, |_| {}).await.expect("compact");
    assert_eq!(report.horizon, horizon);
    let below = log.iter().filter(|e| e.position <= horizon).count() as u64;
    assert_eq!(
        report.removed_events + report.kept_events,
        below,
        "every event at or below the horizon is examined once"
    );

    let mut after = Vec::new();
    for &p in positions.iter().filter(|&&p| p >= horizon) {
        after.push(view(&s.log, &keys, p).await);
    }
    assert_eq!(after, before, "reads at or above the horizon are unchanged");
    let current_after = s
        .log
        .list("pods", None, ListAt::Latest, 0, None)
        .await
        .expect("list")
        .items;
    assert_eq!(
        current_after, current_before,
        "the current state is never compacted"
    );
    if let Some(&p) = positions.iter().find(|&&p| p < horizon) {
        assert!(matches!(
            s.log.list("pods", None, ListAt::Exact(p), 0, None).await,
            Err(Error::Compacted { .. })
        ));
        assert!(matches!(
            s.log.read_log(p, None, 0).await.map(|(events, _)| events),
            Err(Error::Compacted { .. })
        ));
        let k = keys.iter().next().expect("a key");
        assert!(matches!(
            s.log.get_as_of(k, p).await,
            Err(Error::Compacted { .. })
        ));
    }
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("the compacted log verifies");
    // The log goes on: a new write chains to what was kept.
    if let Some(o) = current_after.first() {
        let mut r = req(EventType::Modified, &o.key.namespace, &o.key.name, b"after");
        r.expect.position = Some(o.position);
        let e = s.log.append(&r).await.expect("append after compaction");
        assert_eq!(e.prev_hash, o.hash);
        s.log
            .verify(VerifyScope::Full, |_| {})
            .await
            .expect("verifies after a new write");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_every_answer_at_or_above_its_horizon(ops in proptest::collection::vec(op(), 1..40), cut in 0usize..64) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run_case(ops, cut));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_in_batches_beside_concurrent_writes() {
    let s = fresh().await;
    // 3 revisions of each of 700 objects: more than one compaction batch.
    for round in 0..3 {
        for i in 0..700 {
            let kind = if round == 0 {
                EventType::Added
            } else {
                EventType::Modified
            };
            s.write(kind, "ns", &format!("o{i}"), format!("r{round}").as_bytes())
                .await;
        }
    }
    let horizon = s.log.head().await.expect("head");
    let writer = {
        let log = s.log.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                log.append(&req(EventType::Modified, "ns", &format!("o{i}"), b"during"))
                    .await
                    .expect("append during compaction");
            }
        })
    };
    let mut batches = 0;
    let report = s
        .log
        .compact(horizon, |_| batches += 1)
        .await
        .expect("compact");
    writer.await.expect("writer");
    assert!(batches > 1, "the work is split into batches ({batches})");
    assert_eq!(
        report.kept_events, 700,
        "each object's state at the horizon stays"
    );
    assert_eq!(report.removed_events, 1400, "the superseded revisions go");
    let listed = s
        .log
        .list("pods", None, ListAt::Latest, 0, None)
        .await
        .expect("list")
        .items;
    assert_eq!(listed.len(), 700);
    assert_eq!(listed.iter().filter(|o| o.object == b"during").count(), 300);
    assert_eq!(
        s.log
            .revisions(&ObjectKey::new("pods", "ns", "o0"))
            .await
            .expect("revs")
            .len(),
        2,
        "kept revision + the one written during compaction"
    );
    s.log
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verifies");
}
