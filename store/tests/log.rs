//! The event log's behaviour: preconditions, projections, history, lists and durability.

mod common;

use common::{fresh, open_in, req};
use logbook_store::{Error, EventType, Expect, ListAt, ObjectKey, Position, VerifyScope};

#[tokio::test]
async fn create_get_update_delete_follow_their_preconditions() {
    let s = fresh().await;
    let added = s.write(EventType::Added, "default", "web", b"v1").await;
    assert!(added.position > Position::ZERO);
    assert!(matches!(
        s.log
            .append(&req(EventType::Added, "default", "web", b"v1"))
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        s.log
            .append(&req(EventType::Modified, "default", "nope", b"x"))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.log
            .append(&req(EventType::Deleted, "default", "nope", b"x"))
            .await,
        Err(Error::NotFound { .. })
    ));

    let mut stale = req(EventType::Modified, "default", "web", b"v2");
    stale.expect = Expect {
        position: Some(Position(added.position.0 + 1)),
        uid: None,
    };
    assert!(
        matches!(s.log.append(&stale).await, Err(Error::Conflict { .. })),
        "a stale position must conflict"
    );
    let mut wrong_uid = req(EventType::Modified, "default", "web", b"v2");
    wrong_uid.expect = Expect {
        position: None,
        uid: Some("someone-else".into()),
    };
    assert!(
        matches!(s.log.append(&wrong_uid).await, Err(Error::Conflict { .. })),
        "a different uid must conflict"
    );

    let mut update = req(EventType::Modified, "default", "web", b"v2");
    update.expect = Expect {
        position: Some(added.position),
        uid: Some(added.uid.clone()),
    };
    let modified = s.log.append(&update).await.expect("update");
    assert!(modified.position > added.position);
    assert_eq!(modified.prev_position, Some(added.position));
    assert_eq!(
        modified.prev_hash, added.hash,
        "each revision chains to the previous one"
    );

    let got = s
        .log
        .get(&ObjectKey::new("pods", "default", "web"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.object, b"v2");
    assert_eq!(got.position, modified.position);
    assert_eq!(got.uid, "uid-default-web");

    let deleted = s.write(EventType::Deleted, "default", "web", b"v2").await;
    assert!(
        s.log
            .get(&ObjectKey::new("pods", "default", "web"))
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(s.log.head().await.expect("head"), deleted.position);
}

#[tokio::test]
async fn objects_up_to_one_and_a_half_mebibytes_are_stored_and_larger_ones_refused() {
    let s = fresh().await;
    let big: Vec<u8> = (0..1536 * 1024).map(|i| (i % 251) as u8).collect();
    s.write(EventType::Added, "default", "big", &big).await;
    let got = s
        .log
        .get(&ObjectKey::new("pods", "default", "big"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.object, big, "a chunked object reads back byte for byte");
    let shrunk = vec![1u8; 10];
    s.write(EventType::Modified, "default", "big", &shrunk)
        .await;
    let got = s
        .log
        .get(&ObjectKey::new("pods", "default", "big"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got.object, shrunk,
        "old chunks of a larger revision do not leak into a smaller one"
    );
    let revs = s
        .log
        .revisions(&ObjectKey::new("pods", "default", "big"))
        .await
        .expect("revisions");
    assert_eq!(revs[0].object, big);
    let too_big = vec![0u8; 1536 * 1024 + 1];
    assert!(matches!(
        s.log
            .append(&req(EventType::Added, "default", "huge", &too_big))
            .await,
        Err(Error::TooLarge { .. })
    ));
    assert!(
        s.log
            .get(&ObjectKey::new("pods", "default", "huge"))
            .await
            .expect("get")
            .is_none(),
        "nothing half-written"
    );
}

#[tokio::test]
async fn history_and_as_of_reads_answer_for_any_retained_position() {
    let s = fresh().await;
    let a1 = s.write(EventType::Added, "ns", "a", b"a1").await;
    let b1 = s.write(EventType::Added, "ns", "b", b"b1").await;
    let a2 = s.write(EventType::Modified, "ns", "a", b"a2").await;
    let bd = s.write(EventType::Deleted, "ns", "b", b"b1").await;
    let c1 = s.write(EventType::Added, "other", "c", b"c1").await;

    let revs = s
        .log
        .revisions(&ObjectKey::new("pods", "ns", "a"))
        .await
        .expect("revisions");
    assert_eq!(
        revs.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![a1.position, a2.position]
    );
    assert_eq!(revs[1].actor.user, "tester");

    let a = ObjectKey::new("pods", "ns", "a");
    let b = ObjectKey::new("pods", "ns", "b");
    // (object, position, its state then)
    let as_of_cases: [(&ObjectKey, Position, Option<&[u8]>); 5] = [
        (&a, Position(a1.position.0 - 1), None),
        (&a, a1.position, Some(b"a1")),
        (&a, b1.position, Some(b"a1")),
        (&a, a2.position, Some(b"a2")),
        (&b, bd.position, None),
    ];
    for (key, at, expected) in as_of_cases {
        let got = s.log.get_as_of(key, at).await.expect("as of");
        assert_eq!(
            got.as_ref().map(|e| e.object.as_slice()),
            expected,
            "{key} as of {at}"
        );
    }
    assert!(matches!(
        s.log.get_as_of(&a, Position(c1.position.0 + 1)).await,
        Err(Error::FutureRevision { .. })
    ));

    let names = |page: logbook_store::ListPage| {
        page.items
            .into_iter()
            .map(|o| (o.key.name, o.object))
            .collect::<Vec<_>>()
    };
    let at_b1 = s
        .log
        .list("pods", None, ListAt::Exact(b1.position), 0, None)
        .await
        .expect("list");
    assert_eq!(
        names(at_b1),
        vec![
            ("a".to_string(), b"a1".to_vec()),
            ("b".to_string(), b"b1".to_vec())
        ]
    );
    let at_bd = s
        .log
        .list("pods", Some("ns"), ListAt::Exact(bd.position), 0, None)
        .await
        .expect("list");
    assert_eq!(names(at_bd), vec![("a".to_string(), b"a2".to_vec())]);
    let latest = s
        .log
        .list("pods", None, ListAt::Latest, 0, None)
        .await
        .expect("list");
    assert_eq!(latest.position, c1.position);
    assert_eq!(
        names(latest),
        vec![
            ("a".to_string(), b"a2".to_vec()),
            ("c".to_string(), b"c1".to_vec())
        ]
    );
}

#[tokio::test]
async fn a_paginated_list_stays_on_its_snapshot_while_writes_go_on() {
    let s = fresh().await;
    for i in 0..25 {
        s.write(
            EventType::Added,
            "ns",
            &format!("obj-{i:02}"),
            format!("v{i}").as_bytes(),
        )
        .await;
    }
    let first = s
        .log
        .list("pods", Some("ns"), ListAt::Latest, 10, None)
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 10);
    let snapshot = first.position;
    // Writes between pages: a delete, an update, a create — none may show in later pages.
    s.write(EventType::Deleted, "ns", "obj-15", b"").await;
    s.write(EventType::Modified, "ns", "obj-20", b"changed")
        .await;
    s.write(EventType::Added, "ns", "obj-12a", b"new").await;
    let mut all = first.items;
    let mut token = first.continue_token;
    while let Some(t) = token {
        let page = s
            .log
            .list("pods", Some("ns"), ListAt::Latest, 10, Some(&t))
            .await
            .expect("next page");
        assert_eq!(
            page.position, snapshot,
            "every page reports the first page's position"
        );
        all.extend(page.items);
        token = page.continue_token;
    }
    let names: Vec<String> = all.iter().map(|o| o.key.name.clone()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("obj-{i:02}")).collect();
    assert_eq!(names, expected, "the list is exactly the snapshot");
    let obj20 = all.iter().find(|o| o.key.name == "obj-20").expect("obj-20");
    assert_eq!(obj20.object, b"v20");
    assert!(matches!(
        s.log
            .list("pods", Some("other"), ListAt::Latest, 10, Some("zz"))
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn acknowledged_writes_survive_a_reopen_and_positions_keep_increasing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = {
        let (kv, log) = open_in(dir.path()).await;
        let mut last = Position::ZERO;
        for i in 0..20 {
            last = log
                .append(&req(EventType::Added, "ns", &format!("o{i}"), b"x"))
                .await
                .expect("append")
                .position;
        }
        drop(log);
        kv.close();
        last
    };
    let (_kv, log) = open_in(dir.path()).await;
    assert_eq!(log.head().await.expect("head"), last);
    let report = log.verify(VerifyScope::Full, |_| {}).await.expect("verify");
    assert_eq!(report.events, 20);
    let next = log
        .append(&req(EventType::Added, "ns", "after", b"x"))
        .await
        .expect("append");
    assert!(next.position > last);
}

#[tokio::test]
async fn concurrent_updates_of_one_object_serialize_through_preconditions() {
    let s = fresh().await;
    s.write(EventType::Added, "ns", "counter", b"0").await;
    let key = ObjectKey::new("pods", "ns", "counter");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let log = s.log.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            // Read-modify-write with a position precondition, retried on Conflict, as the
            // API server will do for an update.
            loop {
                let cur = log.get(&key).await.expect("get").expect("present");
                let n: u64 = String::from_utf8_lossy(&cur.object)
                    .parse()
                    .expect("number");
                let mut r = req(
                    EventType::Modified,
                    "ns",
                    "counter",
                    (n + 1).to_string().as_bytes(),
                );
                r.expect.position = Some(cur.position);
                match log.append(&r).await {
                    Ok(_) => return,
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let cur = s.log.get(&key).await.expect("get").expect("present");
    assert_eq!(cur.object, b"16", "no lost update");
    assert_eq!(s.log.revisions(&key).await.expect("revs").len(), 17);
}

#[tokio::test]
async fn a_resources_own_log_is_the_log_filtered_to_that_resource_and_namespace() {
    let s = fresh().await;
    for i in 0..30 {
        let mut r = req(
            EventType::Added,
            if i % 3 == 0 { "a" } else { "b" },
            &format!("o{i}"),
            b"x",
        );
        if i % 2 == 0 {
            r.key.resource = "configmaps".into();
        }
        s.log.append(&r).await.expect("append");
    }
    s.write(EventType::Modified, "b", "o1", b"y").await;
    s.write(EventType::Deleted, "a", "o3", b"y").await;
    let all = s
        .log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
        .expect("log");
    for (resource, ns) in [
        ("pods", None),
        ("pods", Some("a")),
        ("configmaps", Some("b")),
        ("secrets", None),
    ] {
        for from in [Position::ZERO, all[7].position, all[20].position] {
            let expected: Vec<_> = all
                .iter()
                .filter(|e| {
                    e.position > from
                        && e.key.resource == resource
                        && ns.is_none_or(|n| n == e.key.namespace)
                })
                .cloned()
                .collect();
            let got = s
                .log
                .read_resource_log(resource, ns, from, None, 0)
                .await
                .expect("resource log");
            assert_eq!(got, expected, "{resource} in {ns:?} after {from}");
            let limited = s
                .log
                .read_resource_log(resource, ns, from, Some(all[25].position), 3)
                .await
                .expect("resource log");
            let expected_limited: Vec<_> = expected
                .iter()
                .filter(|e| e.position <= all[25].position)
                .take(3)
                .cloned()
                .collect();
            assert_eq!(limited, expected_limited, "with an end and a limit");
        }
    }
}

#[tokio::test]
async fn history_pages_walk_every_revision_once() {
    let s = fresh().await;
    s.write(EventType::Added, "ns", "h", b"0").await;
    for i in 1..25 {
        s.write(EventType::Modified, "ns", "h", i.to_string().as_bytes())
            .await;
    }
    let key = ObjectKey::new("pods", "ns", "h");
    let mut after = Position::ZERO;
    let mut seen = Vec::new();
    loop {
        let (page, more) = s.log.revisions_page(&key, after, 7).await.expect("page");
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|e| e.object.clone()));
        match (more, page.last()) {
            (true, Some(last)) => after = last.position,
            _ => break,
        }
    }
    let expected: Vec<Vec<u8>> = (0..25).map(|i: i32| i.to_string().into_bytes()).collect();
    assert_eq!(seen, expected);
    assert_eq!(s.log.revisions(&key).await.expect("all").len(), 25);
}

/// Regression (found by the Python client's paging test, issue 3): a page that ends right
/// before the last object of the scope lost its continue token, silently truncating the
/// list, both on the current-state path and the as-of path.
#[tokio::test]
async fn a_page_boundary_just_before_the_last_object_still_returns_a_continue_token() {
    let s = fresh().await;
    for n in 1..=7usize {
        let ns = format!("ns{n}");
        for i in 0..n {
            s.write(EventType::Added, &ns, &format!("o{i}"), b"x").await;
        }
        let at_latest = s.log.head().await.expect("head");
        for limit in 1..=n {
            for at in [ListAt::Latest, ListAt::Exact(at_latest)] {
                let mut names = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let page = s
                        .log
                        .list("pods", Some(&ns), at, limit, token.as_deref())
                        .await
                        .expect("page");
                    assert!(page.items.len() <= limit);
                    names.extend(page.items.into_iter().map(|o| o.key.name));
                    token = page.continue_token;
                    if token.is_none() {
                        break;
                    }
                }
                let expected: Vec<String> = (0..n).map(|i| format!("o{i}")).collect();
                assert_eq!(names, expected, "{n} objects, pages of {limit}, {at:?}");
            }
        }
        // A write elsewhere makes later Latest lists take the as-of path for this scope.
        s.write(EventType::Added, "elsewhere", &format!("e{n}"), b"x")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_partitioned_log_in_small_batches_yields_every_event_once_in_order() {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = logbook_store::Embedded::open(logbook_store::EmbeddedConfig::new(dir.path()))
            .expect("open");
        let log = logbook_store::EventLog::open(
            std::sync::Arc::new(kv) as std::sync::Arc<dyn logbook_store::kv::Kv>,
            logbook_store::LogConfig { partitions: 4 },
        )
        .await
        .expect("open log");
        let mut written = Vec::new();
        for i in 0..300 {
            // Uneven: nine events in ten go to the partition of "hot", the rest spread.
            let name = if i % 10 == 0 {
                format!("cold-{i}")
            } else {
                "hot".to_string()
            };
            let kind = if written.iter().any(|(n, _)| n == &name) {
                EventType::Modified
            } else {
                EventType::Added
            };
            let e = log
                .append(&req(kind, "ns", &name, format!("v{i}").as_bytes()))
                .await
                .expect("append");
            written.push((name, e.position));
        }
        let expected: Vec<Position> = written.iter().map(|(_, p)| *p).collect();
        for batch in [1usize, 5, 64, 150, 200, 1000] {
            let mut seen = Vec::new();
            let mut at = Position::ZERO;
            loop {
                let (events, more) = log.read_log(at, None, batch).await.expect("read");
                assert!(events.len() <= batch);
                seen.extend(events.iter().map(|e| e.position));
                if let Some(last) = events.last() {
                    at = last.position;
                }
                if !more {
                    break;
                }
                assert!(
                    !events.is_empty(),
                    "a batch with more to come is never empty"
                );
            }
            assert_eq!(seen, expected, "batches of {batch}");
        }
    })
    .await
    .expect("finished in 60 s");
}

#[tokio::test]
async fn the_embedded_store_refuses_a_fence_since_it_cannot_advance_its_version() {
    let s = fresh().await;
    if s.kv.backend_name() != "embedded" {
        println!("skipped: this test is about the embedded backend");
        return;
    }
    let e = s.write(EventType::Added, "ns", "a", b"1").await;
    match s.log.fence(Position(e.position.0 + (1 << 20))).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("cannot advance"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        s.log.fences().await.expect("fences").is_empty(),
        "nothing recorded"
    );
    // A fence at or below the head is a no-op on every backend.
    assert_eq!(s.log.fence(e.position).await.expect("no-op"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_the_partition_count_keeps_every_older_event_readable_on_every_replica() {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        use logbook_store::kv::Kv;
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = logbook_store::Embedded::open(logbook_store::EmbeddedConfig::new(dir.path()))
            .expect("open");
        let kv: Arc<dyn Kv> = Arc::new(kv);
        let open = |n: u16| {
            logbook_store::EventLog::open(kv.clone(), logbook_store::LogConfig { partitions: n })
        };
        // "Replica" A: created with one partition; it keeps running with that count.
        let a = open(1).await.expect("open a");
        let names: Vec<String> = (0..40).map(|i| format!("o{i}")).collect();
        for n in &names {
            a.append(&req(EventType::Added, "ns", n, b"v1"))
                .await
                .expect("append");
        }
        // Replica B starts with 8 partitions: the store grows; A has not noticed.
        let b = open(8).await.expect("open b");
        assert_eq!((a.partitions(), b.partitions()), (1, 8));
        for n in &names {
            let mut r = req(EventType::Modified, "ns", n, b"v2");
            r.request_id = format!("req-{n}-b");
            b.append(&r).await.expect("append on b");
        }
        // A stale replica's append still lands where its count says; everyone finds it.
        let mut r = req(EventType::Modified, "ns", "o0", b"v3");
        r.request_id = "req-o0-a".into();
        a.append(&r).await.expect("append on a");
        // Reopening with fewer partitions never shrinks.
        assert_eq!(open(2).await.expect("reopen").partitions(), 8);

        for log in [&a, &b] {
            for n in &names {
                let key = ObjectKey::new("pods", "ns", n.clone());
                let want: &[u8] = if n == "o0" { b"v3" } else { b"v2" };
                let got = log.get(&key).await.expect("get").expect("present");
                assert_eq!(got.object, want, "{n}");
                let revs = log.revisions(&key).await.expect("revisions");
                let bodies: Vec<&[u8]> = revs.iter().map(|e| e.object.as_slice()).collect();
                let mut expected: Vec<&[u8]> = vec![b"v1", b"v2"];
                if n == "o0" {
                    expected.push(b"v3");
                }
                assert_eq!(bodies, expected, "every revision of {n}");
            }
            let (all, more) = log.read_log(Position::ZERO, None, 0).await.expect("log");
            assert!(!more);
            assert_eq!(all.len(), 81, "the whole log, over every partition");
            assert!(all.windows(2).all(|w| w[0].position < w[1].position));
            let page = log
                .list("pods", Some("ns"), ListAt::Latest, 1000, None)
                .await
                .expect("list");
            assert_eq!(page.items.len(), 40);
        }
        assert_eq!(a.partitions(), 8, "reading the log taught A the new count");
        let report = b.verify(VerifyScope::Full, |_| {}).await.expect("verify");
        assert_eq!(report.events, 81);
    })
    .await
    .expect("finished in 60 s");
}
