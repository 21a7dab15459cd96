//! The history reads: change feeds through each index agree with a model folded from the
//! appends, in both directions and across pages; time maps to the right position.

mod common;

use std::time::Duration;

use logbook_store::{
    AppendRequest, ChangeFilter, Event, EventLog, EventType, ObjectKey, Order, Position,
};

const TEST_TIMEOUT_SECS: u64 = 60;

fn write(resource: &str, ns: &str, name: &str, user: &str, kind: EventType) -> AppendRequest {
    let mut r = common::req(kind, ns, name, format!("{{\"n\":\"{name}\"}}").as_bytes());
    r.key = ObjectKey::new(resource, ns, name);
    r.actor.user = user.into();
    r.actor.user_agent = "kubectl/v1.33.0".into();
    r.actor.source = "127.0.0.1:40000".into();
    r
}

/// Every page of a feed, concatenated, checking each page's size.
async fn whole_feed(log: &EventLog, f: &ChangeFilter, order: Order, limit: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = log.changes(f, order, cursor, limit).await.expect("changes");
        assert!(page.events.len() <= limit);
        out.extend(page.events);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn positions(events: &[Event]) -> Vec<Position> {
    events.iter().map(|e| e.position).collect()
}

/// A history of three users writing pods and configmaps in two namespaces, with updates and
/// deletes; returns every appended event in order.
async fn scripted_history(log: &EventLog) -> Vec<Event> {
    let mut all = Vec::new();
    for i in 0..40 {
        let user = ["alice", "bob", "carol"][i % 3];
        let ns = ["prod", "dev"][i % 2];
        let res = ["pods", "core/configmaps"][(i / 2) % 2];
        let name = format!("o{}", i % 7);
        let key = ObjectKey::new(res, ns, &name);
        let exists = log.get(&key).await.expect("get").is_some();
        let kind = match (exists, i % 5) {
            (false, _) => EventType::Added,
            (true, 4) => EventType::Deleted,
            (true, _) => EventType::Modified,
        };
        all.push(
            log.append(&write(res, ns, &name, user, kind))
                .await
                .expect("append"),
        );
    }
    all
}

#[tokio::test]
async fn every_feed_returns_the_matching_events_in_order_across_pages() {
    tokio::time::timeout(Duration::from_secs(TEST_TIMEOUT_SECS), async {
        let s = common::fresh().await;
        let all = scripted_history(&s.log).await;
        let filters = vec![
            ChangeFilter::default(),
            ChangeFilter {
                user: Some("alice".into()),
                ..Default::default()
            },
            ChangeFilter {
                user: Some("bob".into()),
                namespace: Some("prod".into()),
                ..Default::default()
            },
            ChangeFilter {
                resource: Some("core/configmaps".into()),
                ..Default::default()
            },
            ChangeFilter {
                resource: Some("pods".into()),
                namespace: Some("dev".into()),
                name: Some("o3".into()),
                ..Default::default()
            },
            ChangeFilter {
                verbs: vec!["delete".into()],
                ..Default::default()
            },
            ChangeFilter {
                user: Some("carol".into()),
                resource: Some("pods".into()),
                after: all[5].position,
                until: Some(all[30].position),
                ..Default::default()
            },
            ChangeFilter {
                user: Some("nobody".into()),
                ..Default::default()
            },
        ];
        for f in &filters {
            let expected: Vec<Position> = all
                .iter()
                .filter(|e| {
                    f.user.as_ref().is_none_or(|u| *u == e.actor.user)
                        && f.resource.as_ref().is_none_or(|r| *r == e.key.resource)
                        && f.namespace.as_ref().is_none_or(|n| *n == e.key.namespace)
                        && f.name.as_ref().is_none_or(|n| *n == e.key.name)
                        && (f.verbs.is_empty() || f.verbs.contains(&e.verb))
                        && e.position > f.after
                        && f.until.is_none_or(|u| e.position <= u)
                })
                .map(|e| e.position)
                .collect();
            for limit in [1, 3, 100] {
                let oldest = whole_feed(&s.log, f, Order::OldestFirst, limit).await;
                assert_eq!(
                    positions(&oldest),
                    expected,
                    "{f:?} oldest first, limit {limit}"
                );
                let newest = whole_feed(&s.log, f, Order::NewestFirst, limit).await;
                let mut reversed = expected.clone();
                reversed.reverse();
                assert_eq!(
                    positions(&newest),
                    reversed,
                    "{f:?} newest first, limit {limit}"
                );
            }
        }
        let feed = whole_feed(&s.log, &ChangeFilter::default(), Order::OldestFirst, 10).await;
        assert_eq!(
            feed, all,
            "the feed returns the events as appended, identity included"
        );
        assert_eq!(feed[0].actor.user_agent, "kubectl/v1.33.0");
        assert_eq!(feed[0].actor.source, "127.0.0.1:40000");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_time_maps_to_the_newest_position_stamped_at_or_before_it() {
    tokio::time::timeout(Duration::from_secs(TEST_TIMEOUT_SECS), async {
        let s = common::fresh().await;
        assert_eq!(
            s.log.position_at_time(i64::MAX / 2).await.expect("empty"),
            Position::ZERO
        );
        let mut all = Vec::new();
        for round in 0..3 {
            for i in 0..20 {
                let kind = if round == 0 {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                all.push(
                    s.log
                        .append(&write("pods", "ns", &format!("p{i}"), "alice", kind))
                        .await
                        .expect("append"),
                );
            }
            // Cross a second boundary so the time index holds several seconds.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let before_all = all[0].timestamp_unix_nanos - 1;
        assert_eq!(
            s.log.position_at_time(before_all).await.expect("before"),
            Position::ZERO
        );
        for e in &all {
            let at = s
                .log
                .position_at_time(e.timestamp_unix_nanos)
                .await
                .expect("lookup");
            let expected = all
                .iter()
                .filter(|x| x.timestamp_unix_nanos <= e.timestamp_unix_nanos)
                .map(|x| x.position)
                .max()
                .expect("at least e");
            assert_eq!(at, expected, "time of the event at {}", e.position);
        }
        let after_all = all.last().expect("events").timestamp_unix_nanos + 5_000_000_000;
        assert_eq!(
            s.log.position_at_time(after_all).await.expect("after"),
            all.last().expect("events").position
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn compaction_removes_the_user_index_entries_of_the_events_it_removes() {
    tokio::time::timeout(Duration::from_secs(TEST_TIMEOUT_SECS), async {
        let s = common::fresh().await;
        let mut all = Vec::new();
        for i in 0..10 {
            if i == 8 {
                // Retention removes only what a checkpoint covers.
                s.log.write_checkpoints().await.expect("checkpoints");
            }
            let kind = if i == 0 {
                EventType::Added
            } else {
                EventType::Modified
            };
            all.push(
                s.log
                    .append(&write(
                        "coordination.k8s.io/leases",
                        "ns",
                        "l",
                        "alice",
                        kind,
                    ))
                    .await
                    .expect("append"),
            );
        }
        let horizon = all[7].position;
        let report = s
            .log
            .compact_resource(
                "coordination.k8s.io/leases",
                logbook_store::CompactTo::Horizon(horizon),
                |_| {},
            )
            .await
            .expect("compact");
        assert_eq!(
            report.removed_events, 7,
            "revisions 0..7 superseded at the horizon"
        );
        let f = ChangeFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        let feed = whole_feed(&s.log, &f, Order::OldestFirst, 4).await;
        assert_eq!(
            positions(&feed),
            positions(&all[7..]),
            "the user's feed holds exactly what is retained, with no dangling entry"
        );
    })
    .await
    .expect("test timed out");
}
