//! The watch hub's guarantees, etcd's six: ordered, unique, atomic, reliable, resumable,
//! bookmarkable — plus "a slow subscriber never blocks a commit".

mod common;

use std::time::Duration;

use common::{fresh, req};
use logbook_store::{Error, EventType, HubConfig, Position, WatchHub, WatchItem};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn next_event(sub: &mut logbook_store::Subscription) -> logbook_store::Event {
    loop {
        match tokio::time::timeout(TEST_TIMEOUT, sub.next())
            .await
            .expect("no event within 30 s: the hub lost a wake-up")
            .expect("next")
        {
            WatchItem::Event(e) => return (*e).clone(),
            WatchItem::Bookmark(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_delivers_every_later_event_once_in_order_then_live() {
    let s = fresh().await;
    let hub = WatchHub::start(s.log.clone(), HubConfig::default())
        .await
        .expect("hub");
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(
            s.write(EventType::Added, "ns", &format!("p{i}"), b"x")
                .await
                .position,
        );
    }
    // Subscribed from before the hub started: the backlog comes from the log.
    let mut sub = hub
        .subscribe("pods", None, Position::ZERO)
        .await
        .expect("subscribe");
    for i in 10..20 {
        written.push(
            s.write(EventType::Added, "ns", &format!("p{i}"), b"x")
                .await
                .position,
        );
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(next_event(&mut sub).await.position);
    }
    assert_eq!(got, written, "ordered, unique, nothing missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_filter_by_resource_and_namespace() {
    let s = fresh().await;
    let hub = WatchHub::start(s.log.clone(), HubConfig::default())
        .await
        .expect("hub");
    let mut ns_a = hub
        .subscribe("pods", Some("a"), Position::ZERO)
        .await
        .expect("subscribe");
    s.write(EventType::Added, "b", "x", b"x").await;
    let mut other = req(EventType::Added, "a", "y", b"x");
    other.key.resource = "configmaps".into();
    s.log.append(&other).await.expect("append");
    let want = s.write(EventType::Added, "a", "z", b"x").await;
    let e = next_event(&mut ns_a).await;
    assert_eq!(e.position, want.position, "only pods in namespace a");
    assert_eq!(e.key.name, "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_continues_exactly_after_its_last_position_from_ring_or_log() {
    let s = fresh().await;
    // A tiny ring forces resumes from the log; a large one serves them from memory.
    for ring in [2usize, 10_000] {
        let hub = WatchHub::start(
            s.log.clone(),
            HubConfig {
                ring_events_max: ring,
                ..HubConfig::default()
            },
        )
        .await
        .expect("hub");
        let start = s.log.head().await.expect("head");
        let mut sub = hub.subscribe("pods", None, start).await.expect("subscribe");
        let mut written = Vec::new();
        for i in 0..30 {
            written.push(
                s.write(EventType::Added, "ns", &format!("r{ring}-{i}"), b"x")
                    .await
                    .position,
            );
        }
        let mut got = Vec::new();
        for _ in 0..12 {
            got.push(next_event(&mut sub).await.position);
        }
        let resume_from = sub.last_delivered();
        drop(sub);
        hub.wait_applied(*written.last().expect("written"))
            .await
            .expect("applied");
        let mut resumed = hub
            .subscribe("pods", None, resume_from)
            .await
            .expect("resubscribe");
        for _ in 12..30 {
            got.push(next_event(&mut resumed).await.position);
        }
        assert_eq!(
            got, written,
            "resume with ring {ring} loses and repeats nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_gets_bookmarks_at_the_applied_position() {
    let s = fresh().await;
    let cfg = HubConfig {
        bookmark_interval_ms: 50,
        ..HubConfig::default()
    };
    let hub = WatchHub::start(s.log.clone(), cfg).await.expect("hub");
    let mut sub = hub
        .subscribe("pods", None, Position::ZERO)
        .await
        .expect("subscribe");
    // A write to another resource moves the head without giving this subscriber an event.
    let mut other = req(EventType::Added, "a", "cm", b"x");
    other.key.resource = "configmaps".into();
    let moved = s.log.append(&other).await.expect("append");
    hub.wait_applied(moved.position).await.expect("applied");
    let item = tokio::time::timeout(TEST_TIMEOUT, sub.next())
        .await
        .expect("bookmark within 30 s")
        .expect("next");
    assert_eq!(
        item,
        WatchItem::Bookmark(moved.position),
        "the bookmark says every pod event up to the head was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_cut_off_without_slowing_commits_and_can_resume() {
    let s = fresh().await;
    let cfg = HubConfig {
        subscriber_buffer_events_max: 8,
        ..HubConfig::default()
    };
    let hub = WatchHub::start(s.log.clone(), cfg).await.expect("hub");
    let start = s.log.head().await.expect("head");
    let mut slow = hub.subscribe("pods", None, start).await.expect("subscribe");
    let t0 = std::time::Instant::now();
    let mut written = Vec::new();
    for i in 0..100 {
        written.push(
            s.write(EventType::Added, "ns", &format!("s{i}"), b"x")
                .await
                .position,
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "commits must not wait for a subscriber that does not read"
    );
    hub.wait_applied(*written.last().expect("written"))
        .await
        .expect("applied");
    let mut got = Vec::new();
    let err = loop {
        match tokio::time::timeout(TEST_TIMEOUT, slow.next())
            .await
            .expect("an answer within 30 s")
        {
            Ok(WatchItem::Event(e)) => got.push(e.position),
            Ok(WatchItem::Bookmark(_)) => {}
            Err(e) => break e,
        }
    };
    let Error::FellBehind { last_delivered } = err else {
        panic!("expected FellBehind, got {err}")
    };
    assert_eq!(
        Some(&last_delivered),
        got.last(),
        "the error names the last delivered position"
    );
    assert!(got.len() < 100, "the subscriber was cut off before the end");
    let mut resumed = hub
        .subscribe("pods", None, last_delivered)
        .await
        .expect("resubscribe");
    while got.len() < written.len() {
        got.push(next_event(&mut resumed).await.position);
    }
    assert_eq!(
        got, written,
        "cut off and resumed: every event exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_limit_are_refused_until_one_is_dropped() {
    let s = fresh().await;
    let cfg = HubConfig {
        subscribers_max: 3,
        ..HubConfig::default()
    };
    let hub = WatchHub::start(s.log.clone(), cfg).await.expect("hub");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            hub.subscribe("pods", None, Position::ZERO)
                .await
                .expect("within the limit"),
        );
    }
    match hub.subscribe("configmaps", None, Position::ZERO).await {
        Err(Error::Overloaded { limit: 3, .. }) => {}
        Err(e) => panic!("expected Overloaded, got {e}"),
        Ok(_) => panic!("a fourth subscription must be refused"),
    }
    held.pop();
    hub.subscribe("configmaps", None, Position::ZERO)
        .await
        .expect("room again after a drop");
}
