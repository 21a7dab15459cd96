//! Property tests of the log's invariants (DESIGN.md §7): positions strictly increase; an
//! object's revisions are exactly the log's subsequence for it; the current state is the
//! fold of its revisions; a subscription from P yields exactly the log suffix after P, even
//! across a cut-off and a resubscribe.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fresh, req};
use logbook_store::{
    Error, EventType, HubConfig, ObjectKey, Position, Subscription, WatchHub, WatchItem,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8),
    Update(u8, u8),
    Delete(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2, 0u8..5).prop_map(|(n, o)| Op::Create(n, o)),
        (0u8..2, 0u8..5).prop_map(|(n, o)| Op::Update(n, o)),
        (0u8..2, 0u8..5).prop_map(|(n, o)| Op::Delete(n, o)),
    ]
}

async fn run_case(ops: Vec<Op>, resume_at: usize, buffer: usize, ring: usize) {
    let s = fresh().await;
    let cfg = HubConfig {
        subscriber_buffer_events_max: buffer,
        ring_events_max: ring,
        ..HubConfig::default()
    };
    let hub = WatchHub::start(s.log.clone(), cfg).await.expect("hub");
    // Subscribed before any write and not read until the end: small buffers get cut off.
    let early = hub
        .subscribe("pods", None, Position::ZERO)
        .await
        .expect("subscribe");

    let mut model: BTreeMap<ObjectKey, Vec<u8>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (kind, ns, obj) = match *op {
            Op::Create(n, o) => (EventType::Added, n, o),
            Op::Update(n, o) => (EventType::Modified, n, o),
            Op::Delete(n, o) => (EventType::Deleted, n, o),
        };
        let ns = format!("ns{ns}");
        let name = format!("o{obj}");
        let body = format!("rev{i}").into_bytes();
        let key = ObjectKey::new("pods", ns.clone(), name.clone());
        let result = s.log.append(&req(kind, &ns, &name, &body)).await;
        let present = model.contains_key(&key);
        match (kind, present, result) {
            (EventType::Added, false, Ok(_)) | (EventType::Modified, true, Ok(_)) => {
                model.insert(key, body);
            }
            (EventType::Deleted, true, Ok(_)) => {
                model.remove(&key);
            }
            (EventType::Added, true, Err(Error::AlreadyExists { .. })) => {}
            (EventType::Modified | EventType::Deleted, false, Err(Error::NotFound { .. })) => {}
            (k, p, r) => panic!("op {op:?}: {k:?} with present={p} gave {r:?}"),
        }
    }

    let log = s
        .log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
        .expect("read log");
    assert!(
        log.windows(2).all(|w| w[0].position < w[1].position),
        "positions strictly increase"
    );

    let keys: std::collections::BTreeSet<ObjectKey> = log.iter().map(|e| e.key.clone()).collect();
    for key in &keys {
        let revisions = s.log.revisions(key).await.expect("revisions");
        let subsequence: Vec<_> = log.iter().filter(|e| &e.key == key).cloned().collect();
        assert_eq!(
            revisions, subsequence,
            "revisions of {key} are the log's subsequence for it"
        );
        let folded = revisions
            .last()
            .filter(|e| e.kind != EventType::Deleted)
            .map(|e| e.object.clone());
        let current = s.log.get(key).await.expect("get").map(|o| o.object);
        assert_eq!(
            current, folded,
            "current state of {key} is the fold of its revisions"
        );
        assert_eq!(current.as_ref(), model.get(key), "and matches the model");
    }

    // Every position P: a fresh subscription yields the suffix after P.
    let positions: Vec<Position> = std::iter::once(Position::ZERO)
        .chain(log.iter().map(|e| e.position))
        .collect();
    let from = positions[resume_at % positions.len()];
    let expected: Vec<Position> = log
        .iter()
        .filter(|e| e.position > from)
        .map(|e| e.position)
        .collect();
    // Subscribed while the hub may still be catching up: with tiny buffers it may be cut off
    // too, and must resume exactly.
    let sub = hub.subscribe("pods", None, from).await.expect("subscribe");
    let got = drain_resuming(&hub, sub, expected.len()).await;
    assert_eq!(
        got, expected,
        "subscription from {from} yields the log suffix after it"
    );

    // The early subscriber, cut off or not, resumes to the whole log.
    let all: Vec<Position> = log.iter().map(|e| e.position).collect();
    let got = drain_resuming(&hub, early, all.len()).await;
    assert_eq!(
        got, all,
        "across cut-offs, every event exactly once, in order"
    );
}

/// Reads `n` events from `sub`, resubscribing from the last delivered position whenever the
/// hub cuts it off.
async fn drain_resuming(hub: &WatchHub, mut sub: Subscription, n: usize) -> Vec<Position> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("event within 30 s")
        {
            Ok(WatchItem::Event(e)) => got.push(e.position),
            Ok(WatchItem::Bookmark(_)) => {}
            Err(Error::FellBehind { last_delivered }) => {
                sub = hub
                    .subscribe("pods", None, last_delivered)
                    .await
                    .expect("resubscribe");
            }
            Err(e) => panic!("subscription failed: {e}"),
        }
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn log_projections_and_subscriptions_agree_with_the_log(
        ops in proptest::collection::vec(op(), 1..60),
        resume_at in 0usize..64,
        buffer in 1usize..8,
        ring in 1usize..16,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run_case(ops, resume_at, buffer, ring));
    }
}
