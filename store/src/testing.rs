//! The backend conformance suite: what every [`Kv`] backend must do, as plain async
//! functions over a fresh, empty store. A backend's test file instantiates all of them with
//! [`kv_conformance_tests!`](crate::kv_conformance_tests); the embedded backend does in
//! `tests/conformance.rs`, the FoundationDB backend in `tests/fdb.rs` (when a cluster is
//! configured).

use std::sync::Arc;

use crate::error::Error;
use crate::kv::{AtomicOp, Kv, RangeRequest};
use crate::position::VERSIONSTAMP_PLACEHOLDER;

type R = Result<(), String>;

fn check(cond: bool, what: &str) -> R {
    if cond { Ok(()) } else { Err(what.to_string()) }
}

fn e2s(e: Error) -> String {
    e.to_string()
}

async fn put(kv: &Arc<dyn Kv>, pairs: &[(&[u8], &[u8])]) -> R {
    let mut tx = kv.begin().await.map_err(e2s)?;
    for (k, v) in pairs {
        tx.set(k, v);
    }
    tx.commit().await.map_err(e2s)?;
    Ok(())
}

/// A transaction sees its own sets, clears, clear-ranges and atomic ops before commit.
pub async fn reads_see_the_transactions_own_writes(kv: Arc<dyn Kv>) -> R {
    put(&kv, &[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]).await?;
    let mut tx = kv.begin().await.map_err(e2s)?;
    tx.set(b"a", b"10");
    tx.clear(b"b");
    tx.atomic_op(b"n", &[5, 0, 0, 0], AtomicOp::Add);
    tx.atomic_op(b"n", &[1, 0, 0, 0], AtomicOp::Add);
    check(
        tx.get(b"a", false).await.map_err(e2s)? == Some(b"10".to_vec()),
        "own set is visible",
    )?;
    check(
        tx.get(b"b", false).await.map_err(e2s)?.is_none(),
        "own clear is visible",
    )?;
    check(
        tx.get(b"n", false).await.map_err(e2s)? == Some(vec![6, 0, 0, 0]),
        "own atomic adds are visible",
    )?;
    let page = tx
        .get_range(&RangeRequest::between(b"a".to_vec(), b"z".to_vec()))
        .await
        .map_err(e2s)?;
    let keys: Vec<&[u8]> = page.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    check(
        keys == vec![b"a".as_slice(), b"c", b"n"],
        "range merges own writes with stored keys",
    )?;
    tx.clear_range(b"a", b"d");
    tx.set(b"b", b"new");
    let page = tx
        .get_range(&RangeRequest::between(b"a".to_vec(), b"z".to_vec()))
        .await
        .map_err(e2s)?;
    let keys: Vec<&[u8]> = page.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    check(
        keys == vec![b"b".as_slice(), b"n"],
        "a set after a clear-range is visible, the rest of the range is gone",
    )?;
    tx.commit().await.map_err(e2s)?;
    let mut tx = kv.begin().await.map_err(e2s)?;
    let page = tx
        .get_range(&RangeRequest::between(b"a".to_vec(), b"z".to_vec()))
        .await
        .map_err(e2s)?;
    let got: Vec<(Vec<u8>, Vec<u8>)> = page.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    check(
        got == vec![
            (b"b".to_vec(), b"new".to_vec()),
            (b"n".to_vec(), vec![6, 0, 0, 0]),
        ],
        "committed state equals what the transaction saw",
    )
}

/// A transaction reads one snapshot: commits after its read version are invisible to it.
pub async fn a_transaction_reads_one_snapshot(kv: Arc<dyn Kv>) -> R {
    put(&kv, &[(b"k", b"old")]).await?;
    let mut reader = kv.begin().await.map_err(e2s)?;
    put(&kv, &[(b"k", b"new"), (b"k2", b"x")]).await?;
    check(
        reader.get(b"k", true).await.map_err(e2s)? == Some(b"old".to_vec()),
        "old value at the old read version",
    )?;
    check(
        reader.get(b"k2", true).await.map_err(e2s)?.is_none(),
        "later keys are invisible",
    )?;
    let mut fresh = kv.begin().await.map_err(e2s)?;
    check(
        fresh.read_version() > reader.read_version(),
        "read versions advance with commits",
    )?;
    check(
        fresh.get(b"k", true).await.map_err(e2s)? == Some(b"new".to_vec()),
        "a new transaction sees the commit",
    )
}

/// Range reads honour limit, reverse and continuation.
pub async fn range_reads_page_forward_and_backward(kv: Arc<dyn Kv>) -> R {
    let keys: Vec<Vec<u8>> = (0..25u8).map(|i| vec![b'p', i]).collect();
    let mut tx = kv.begin().await.map_err(e2s)?;
    for k in &keys {
        tx.set(k, k);
    }
    tx.set(b"q", b"outside");
    tx.commit().await.map_err(e2s)?;
    for reverse in [false, true] {
        let mut tx = kv.begin().await.map_err(e2s)?;
        let mut req = RangeRequest::prefix(b"p").limit(7).reverse(reverse);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = tx.get_range(&req).await.map_err(e2s)?;
            pages += 1;
            check(page.kvs.len() <= 7, "a page holds at most limit keys")?;
            seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            match req.continue_after(&page) {
                Some(n) => req = n,
                None => break,
            }
        }
        let mut expected = keys.clone();
        if reverse {
            expected.reverse();
        }
        check(
            seen == expected,
            "pages concatenate to the whole range in order",
        )?;
        check(pages == 4, "25 keys in pages of 7 take 4 pages")?;
    }
    Ok(())
}

/// A serializable read conflicts with a later commit that wrote the key; a snapshot read or
/// a blind write does not.
pub async fn conflicting_transactions_fail_with_a_retryable_error(kv: Arc<dyn Kv>) -> R {
    put(&kv, &[(b"x", b"0")]).await?;
    let mut t1 = kv.begin().await.map_err(e2s)?;
    let _ = t1.get(b"x", false).await.map_err(e2s)?;
    t1.set(b"y", b"from t1");
    let mut snap = kv.begin().await.map_err(e2s)?;
    let _ = snap.get(b"x", true).await.map_err(e2s)?;
    snap.set(b"z", b"from snap");
    let mut blind = kv.begin().await.map_err(e2s)?;
    blind.set(b"x", b"blind");
    put(&kv, &[(b"x", b"1")]).await?;
    match t1.commit().await {
        Err(e) => check(e.is_retryable(), "the conflict is retryable")?,
        Ok(_) => return Err("a read of a key written after the read version must conflict".into()),
    }
    snap.commit()
        .await
        .map_err(|e| format!("snapshot read must not conflict: {e}"))?;
    blind
        .commit()
        .await
        .map_err(|e| format!("blind write must not conflict: {e}"))?;
    // A range read conflicts with a write into the range.
    let mut t2 = kv.begin().await.map_err(e2s)?;
    let _ = t2
        .get_range(&RangeRequest::between(b"r0".to_vec(), b"r9".to_vec()))
        .await
        .map_err(e2s)?;
    t2.set(b"other", b"v");
    put(&kv, &[(b"r5", b"v")]).await?;
    check(
        t2.commit().await.is_err(),
        "a write into a read range conflicts",
    )
}

/// Versionstamps are substituted in keys and values, unique and increasing per commit.
pub async fn versionstamps_increase_and_are_substituted(kv: Arc<dyn Kv>) -> R {
    let mut stamps = Vec::new();
    for i in 0..3u8 {
        let mut tx = kv.begin().await.map_err(e2s)?;
        let mut key = b"vs/".to_vec();
        key.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
        tx.set_versionstamped_key(&key, 3, &[i]);
        let mut value = vec![7u8];
        value.extend_from_slice(&VERSIONSTAMP_PLACEHOLDER);
        tx.set_versionstamped_value(b"vsv", &value, 1);
        let c = tx.commit().await.map_err(e2s)?;
        let vs = c
            .versionstamp
            .ok_or("a writing commit has a versionstamp")?;
        check(
            vs.version() == c.version,
            "the versionstamp carries the commit version",
        )?;
        let mut tx = kv.begin().await.map_err(e2s)?;
        let mut expect_key = b"vs/".to_vec();
        expect_key.extend_from_slice(&vs.0);
        check(
            tx.get(&expect_key, true).await.map_err(e2s)? == Some(vec![i]),
            "the key holds the versionstamp",
        )?;
        let v = tx
            .get(b"vsv", true)
            .await
            .map_err(e2s)?
            .ok_or("value present")?;
        check(
            v[0] == 7 && v[1..] == vs.0,
            "the value holds the versionstamp at its offset",
        )?;
        stamps.push(vs);
    }
    check(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "versionstamps strictly increase",
    )?;
    let mut tx = kv.begin().await.map_err(e2s)?;
    tx.set_versionstamped_key(b"short", 0, b"v");
    check(
        tx.commit().await.is_err(),
        "a versionstamp offset outside the key is refused",
    )
}

/// Concurrent atomic adds all land, and do not conflict with each other.
pub async fn atomic_adds_from_concurrent_transactions_all_land(kv: Arc<dyn Kv>) -> R {
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = kv.begin().await?;
            tx.atomic_op(b"counter", &1u64.to_le_bytes(), AtomicOp::Add);
            tx.commit().await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?.map_err(e2s)?;
    }
    let mut tx = kv.begin().await.map_err(e2s)?;
    let v = tx
        .get(b"counter", true)
        .await
        .map_err(e2s)?
        .ok_or("counter present")?;
    let arr: [u8; 8] = v.as_slice().try_into().map_err(|_| "8 bytes")?;
    check(u64::from_le_bytes(arr) == 50, "50 adds of 1 make 50")
}

/// Values above the FoundationDB limit are refused, whatever the backend.
pub async fn oversized_values_are_refused(kv: Arc<dyn Kv>) -> R {
    let mut tx = kv.begin().await.map_err(e2s)?;
    tx.set(b"big", &vec![0u8; 100_001]);
    match tx.commit().await {
        Err(Error::TooLarge { .. }) => Ok(()),
        other => Err(format!("expected TooLarge, got {other:?}")),
    }
}

/// A key watch fires after a commit changes the key.
pub async fn a_key_watch_fires_when_the_key_changes(kv: Arc<dyn Kv>) -> R {
    let w = kv.watch(b"watched").await.map_err(e2s)?;
    let writer = kv.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let _ = put(&writer, &[(b"watched", b"v")]).await;
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), w)
        .await
        .map_err(|_| "the watch did not fire within 5 s of a change")?
        .map_err(e2s)
}

/// Instantiates the whole conformance suite as `#[tokio::test]`s for a backend. `$make` is
/// an async expression that yields a fresh, empty `Arc<dyn Kv>`.
#[macro_export]
macro_rules! kv_conformance_tests {
    ($make:expr) => {
        $crate::kv_conformance_tests!(
            optional async { Some($make.await) },
            "never: the backend is always there"
        );
    };
    // `$make` yields `Option<Arc<dyn Kv>>`; `None` (no backend to test here) prints why on
    // the given line and passes.
    (optional $make:expr, $skip:expr) => {
        $crate::kv_conformance_tests!(@each_optional $make, $skip;
            reads_see_the_transactions_own_writes,
            a_transaction_reads_one_snapshot,
            range_reads_page_forward_and_backward,
            conflicting_transactions_fail_with_a_retryable_error,
            versionstamps_increase_and_are_substituted,
            atomic_adds_from_concurrent_transactions_all_land,
            oversized_values_are_refused,
            a_key_watch_fires_when_the_key_changes
        );
    };
    (@each_optional $make:expr, $skip:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(kv) = $make.await else {
                    println!("skipped {}: {}", stringify!($name), $skip);
                    return;
                };
                let result = tokio::time::timeout(std::time::Duration::from_secs(60), $crate::testing::$name(kv))
                    .await
                    .expect(concat!(stringify!($name), " did not finish in 60 s: a commit or watch is stuck"));
                if let Err(e) = result {
                    panic!("{}: {}", stringify!($name), e);
                }
            }
        )*
    };
}
