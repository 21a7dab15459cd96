//! Value transformers (how Secrets stay encrypted in the log): the stored form of a
//! transformed resource is sealed, every public read opens it, other resources are stored as
//! given, and a value that cannot be opened is an error while compaction and verification
//! still work on the sealed bytes.

mod common;

use std::sync::Arc;

use logbook_store::{
    ChangeFilter, CompactTo, Error, EventType, ListAt, ObjectKey, Opened, Order, Position,
    TransformError, ValueTransformer, ValueTransforms, VerifyScope,
};

/// A reversible stand-in for encryption: `SEALED:<key id>:` + the bytes reversed and bound
/// to the object's name. Opens only the key ids it holds.
#[derive(Debug)]
struct Toy {
    write: &'static str,
    read: Vec<&'static str>,
}

impl ValueTransformer for Toy {
    fn seal(&self, key: &ObjectKey, plain: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut out = format!("SEALED:{}:{}:", self.write, key.name).into_bytes();
        out.extend(plain.iter().rev());
        Ok(out)
    }

    fn open(&self, key: &ObjectKey, stored: &[u8]) -> Result<Opened, TransformError> {
        let text = String::from_utf8_lossy(stored);
        let mut parts = text.splitn(4, ':');
        let (Some("SEALED"), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TransformError("not sealed".into()));
        };
        if !self.read.contains(&id) {
            return Err(TransformError(format!("key {id:?} is not held")));
        }
        if name != key.name {
            return Err(TransformError("sealed for another object".into()));
        }
        let body = &stored[format!("SEALED:{id}:{name}:").len()..];
        Ok(Opened {
            plain: body.iter().rev().copied().collect(),
            stale: id != self.write,
        })
    }
}

fn transforms(write: &'static str, read: &[&'static str]) -> ValueTransforms {
    let mut t = ValueTransforms::new();
    t.insert(
        "secrets",
        Arc::new(Toy {
            write,
            read: read.to_vec(),
        }),
    );
    t
}

fn secret(kind: EventType, name: &str, object: &[u8]) -> logbook_store::AppendRequest {
    let mut r = common::req(kind, "default", name, object);
    r.key = ObjectKey::new("secrets", "default", name);
    r
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_transformed_resource_is_stored_sealed_and_every_public_read_opens_it() {
    let store = common::fresh().await;
    let log = store
        .log
        .clone()
        .with_value_transforms(transforms("k1", &["k1"]));
    let added = log
        .append(&secret(EventType::Added, "db", b"{\"v\":\"hunter2\"}"))
        .await
        .expect("append");
    assert_eq!(
        added.object, b"{\"v\":\"hunter2\"}",
        "append answers the object as given"
    );
    let first = added.position;
    log.append(&secret(EventType::Modified, "db", b"{\"v\":\"hunter3\"}"))
        .await
        .expect("update");
    log.append(&common::req(
        EventType::Added,
        "default",
        "web",
        b"{\"pod\":1}",
    ))
    .await
    .expect("pod");

    // The stored form: sealed for secrets, as given for pods.
    let sealed = log
        .read_resource_log_unopened("secrets", Position::ZERO, 0)
        .await
        .expect("stored secrets");
    assert_eq!(sealed.len(), 2);
    for e in &sealed {
        assert!(e.object.starts_with(b"SEALED:k1:db:"), "{:?}", e.object);
        assert!(
            !contains(&e.object, b"hunter"),
            "plaintext in the stored form"
        );
    }
    let pods = log
        .read_resource_log_unopened("pods", Position::ZERO, 0)
        .await
        .expect("stored pods");
    assert_eq!(pods[0].object, b"{\"pod\":1}");

    // Every public read opens it.
    let key = ObjectKey::new("secrets", "default", "db");
    let got = log.get(&key).await.expect("get").expect("present");
    assert_eq!(got.object, b"{\"v\":\"hunter3\"}");
    assert!(!got.stale);
    let page = log
        .list("secrets", None, ListAt::Latest, 0, None)
        .await
        .expect("list");
    assert_eq!(page.items[0].object, b"{\"v\":\"hunter3\"}");
    let page = log
        .list("secrets", None, ListAt::Exact(first), 0, None)
        .await
        .expect("list as of");
    assert_eq!(page.items[0].object, b"{\"v\":\"hunter2\"}");
    let (all, _) = log
        .read_log(Position::ZERO, None, 0)
        .await
        .expect("read_log");
    assert!(
        all.iter().all(|e| !e.object.starts_with(b"SEALED")),
        "the tailer's read opens"
    );
    let res = log
        .read_resource_log("secrets", None, Position::ZERO, None, 0)
        .await
        .expect("resource log");
    assert_eq!(res[1].object, b"{\"v\":\"hunter3\"}");
    let revs = log.revisions(&key).await.expect("revisions");
    assert_eq!(revs[0].object, b"{\"v\":\"hunter2\"}");
    let old = log
        .get_as_of(&key, first)
        .await
        .expect("as of")
        .expect("present");
    assert_eq!(old.object, b"{\"v\":\"hunter2\"}");
    let feed = log
        .changes(&ChangeFilter::default(), Order::OldestFirst, None, 10)
        .await
        .expect("changes");
    assert!(feed.events.iter().all(|e| !e.object.starts_with(b"SEALED")));
    let one = log
        .event(&key, first)
        .await
        .expect("event")
        .expect("present");
    assert_eq!(one.object, b"{\"v\":\"hunter2\"}");
}

#[tokio::test]
async fn a_value_that_cannot_be_opened_is_an_error_while_compaction_and_verify_need_no_key() {
    let store = common::fresh().await;
    let k1 = store
        .log
        .clone()
        .with_value_transforms(transforms("k1", &["k1"]));
    for v in [b"{\"v\":1}".as_slice(), b"{\"v\":2}", b"{\"v\":3}"] {
        let kind = if v == b"{\"v\":1}" {
            EventType::Added
        } else {
            EventType::Modified
        };
        k1.append(&secret(kind, "db", v)).await.expect("append");
    }
    let key = ObjectKey::new("secrets", "default", "db");

    // k2 writes, k1 still reads: the current state is stale, and a write moves it to k2.
    let rotated = store
        .log
        .clone()
        .with_value_transforms(transforms("k2", &["k2", "k1"]));
    let cur = rotated.get(&key).await.expect("get").expect("present");
    assert!(cur.stale, "sealed under k1 while k2 writes");
    rotated
        .append(&secret(EventType::Modified, "db", &cur.object))
        .await
        .expect("rewrite");
    assert!(
        !rotated
            .get(&key)
            .await
            .expect("get")
            .expect("present")
            .stale
    );

    // k1 dropped: the current state reads; an old revision is an error naming k1.
    let only_k2 = store
        .log
        .clone()
        .with_value_transforms(transforms("k2", &["k2"]));
    assert_eq!(
        only_k2
            .get(&key)
            .await
            .expect("get")
            .expect("present")
            .object,
        b"{\"v\":3}"
    );
    match only_k2.revisions(&key).await {
        Err(Error::Transform { key, detail }) => {
            assert_eq!(key, "secrets/default/db");
            assert!(detail.contains("\"k1\""), "{detail}");
        }
        other => panic!("expected a Transform error, got {other:?}"),
    }

    // Retention and verification work on the stored bytes, without k1.
    only_k2
        .verify(VerifyScope::Full, |_| {})
        .await
        .expect("verify needs no key");
    let head = only_k2.head().await.expect("head");
    let report = only_k2
        .compact_resource(
            "secrets",
            CompactTo::OlderThan {
                cutoff_unix_nanos: i64::MAX,
            },
            |_| {},
        )
        .await
        .expect("compaction needs no key");
    assert_eq!(report.horizon, head);
    assert_eq!(
        report.removed_events, 3,
        "the three revisions under k1 are gone"
    );
    let revs = only_k2
        .revisions(&key)
        .await
        .expect("only k2 revisions remain");
    assert_eq!(revs.len(), 1);
}
