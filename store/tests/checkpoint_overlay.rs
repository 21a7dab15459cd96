//! Checkpoints run beside the committer (store/src/kv/embedded.rs): batches committed while
//! one runs are served from an in-memory overlay above the redb snapshot, then folded into
//! redb. With a checkpoint after every batch, almost every commit goes through the overlay;
//! every read (gets, range pages in both directions) must still match a model of the data,
//! and so must the store reopened afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use logbook_store::kv::{AtomicOp, Kv, RangeRequest, apply_atomic};
use logbook_store::{Embedded, EmbeddedConfig};
use rand::{Rng, SeedableRng};

/// Keys the model test writes: few, so sets, clears and ranges keep overlapping.
const MODEL_KEYS_COUNT: u32 = 64;
/// Transactions the model test commits.
const MODEL_TXNS_COUNT: usize = 600;

fn key(i: u32) -> Vec<u8> {
    format!("m/{i:03}").into_bytes()
}

fn open(dir: &std::path::Path) -> Embedded {
    let mut cfg = EmbeddedConfig::new(dir);
    // A checkpoint is due after every batch: the overlay is in use nearly all the time.
    cfg.checkpoint_interval_ms = 0;
    Embedded::open(cfg).expect("open")
}

/// Every key of the model's prefix read back: whole-range pages forward and backward with
/// small limits, and single gets, all equal to the model.
async fn assert_matches(kv: &dyn Kv, model: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
    let mut tx = kv.begin().await.expect("begin");
    for reverse in [false, true] {
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let (mut begin, mut end) = (b"m/".to_vec(), b"m0".to_vec());
        loop {
            let page = tx
                .get_range(&RangeRequest {
                    begin: begin.clone(),
                    end: end.clone(),
                    limit: 7,
                    reverse,
                    snapshot: true,
                })
                .await
                .expect("range");
            let Some(last) = page.kvs.last().map(|kv| kv.key.clone()) else {
                break;
            };
            got.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            if !page.more {
                break;
            }
            if reverse {
                end = last;
            } else {
                begin = [last.as_slice(), &[0]].concat();
            }
        }
        let mut want: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if reverse {
            want.reverse();
        }
        assert_eq!(got, want, "{when}: range read (reverse {reverse})");
    }
    for i in 0..MODEL_KEYS_COUNT {
        let k = key(i);
        assert_eq!(
            tx.get(&k, true).await.expect("get"),
            model.get(&k).cloned(),
            "{when}: get {}",
            String::from_utf8_lossy(&k)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_and_after_checkpoints_match_every_committed_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv: Arc<dyn Kv> = Arc::new(open(dir.path()));
    // Background writes elsewhere keep batches and checkpoints coming.
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let (kv, stop) = (kv.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = kv.begin().await.expect("begin");
                tx.set(format!("z/{}", n % 500).as_bytes(), &n.to_le_bytes());
                tx.commit().await.expect("commit");
                n += 1;
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..MODEL_TXNS_COUNT {
        let mut tx = kv.begin().await.expect("begin");
        for _ in 0..rng.random_range(1..5) {
            let i = rng.random_range(0..MODEL_KEYS_COUNT);
            match rng.random_range(0..4) {
                0 => {
                    let v = format!("v{round}").into_bytes();
                    tx.set(&key(i), &v);
                    model.insert(key(i), v);
                }
                1 => {
                    tx.clear(&key(i));
                    model.remove(&key(i));
                }
                2 => {
                    let j = (i + rng.random_range(1..12)).min(MODEL_KEYS_COUNT);
                    tx.clear_range(&key(i), &key(j));
                    let doomed: Vec<Vec<u8>> = model
                        .range(key(i)..key(j))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        model.remove(&k);
                    }
                }
                _ => {
                    let param = 3u64.to_le_bytes();
                    tx.atomic_op(&key(i), &param, AtomicOp::Add);
                    let next =
                        apply_atomic(model.get(&key(i)).map(Vec::as_slice), &param, AtomicOp::Add);
                    model.insert(key(i), next);
                }
            }
        }
        tx.commit().await.expect("commit");
        if round % 5 == 0 {
            assert_matches(kv.as_ref(), &model, &format!("after transaction {round}")).await;
        }
    }
    assert_matches(kv.as_ref(), &model, "at the end").await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), noise)
        .await
        .expect("the background writer stops")
        .expect("join");
    drop(kv);
    // Dropping the last handle stops the committer after a last checkpoint; give it a moment
    // to release the file, then reopen.
    let reopened = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut cfg = EmbeddedConfig::new(dir.path());
            cfg.checkpoint_interval_ms = 0;
            match Embedded::open(cfg) {
                Ok(kv) => break kv,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    };
    assert_matches(&reopened, &model, "after reopening").await;
}
