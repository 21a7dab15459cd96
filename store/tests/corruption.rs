//! Damaged data files: truncate the file's tail at many offsets and flip bytes in the middle.
//! Opening must either refuse with a clear error, or give data that verifies and equals what
//! was written (an unacknowledged tail may be missing) — never silently wrong data, never a
//! panic.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::req;
use logbook_store::kv::Kv;
use logbook_store::{
    Embedded, EmbeddedConfig, Event, EventLog, EventType, LogConfig, Position, VerifyScope,
};

const CORRUPTION_EVENTS_COUNT: usize = 300;
/// Random 16-byte flips per run: enough that some land in B-tree pages redb would otherwise
/// panic on (1,500 found the first such page; ~2.5 s here).
const FLIP_ROUNDS: usize = 200;

async fn build(dir: &Path) -> Vec<Event> {
    let kv = Embedded::open(EmbeddedConfig::new(dir)).expect("open");
    let log = EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, LogConfig::default())
        .await
        .expect("log");
    for i in 0..CORRUPTION_EVENTS_COUNT {
        let size = if i % 40 == 3 { 200_000 } else { 700 };
        let body: Vec<u8> = (0..size).map(|j| ((i + j) % 251) as u8).collect();
        let kind = if i % 3 == 2 {
            EventType::Modified
        } else {
            EventType::Added
        };
        let name = if kind == EventType::Modified {
            format!("o{}", i - 1)
        } else {
            format!("o{i}")
        };
        log.append(&req(kind, "ns", &name, &body))
            .await
            .expect("append");
    }
    let events = log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
        .expect("read");
    drop(log);
    kv.close();
    events
}

/// What opening a damaged copy gave.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    /// Opened; this many events, all equal to the originals.
    Intact(usize),
}

async fn open_damaged(dir: &Path, original: &[Event]) -> Outcome {
    let kv = match Embedded::open(EmbeddedConfig::new(dir)) {
        Ok(kv) => kv,
        Err(e) => {
            eprintln!("refused to open: {e}");
            return Outcome::Refused;
        }
    };
    let log = match EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, LogConfig::default()).await
    {
        Ok(l) => l,
        Err(_) => return Outcome::Refused,
    };
    if let Err(e) = log.verify(VerifyScope::Full, |_| {}).await {
        eprintln!("verify refused: {e}");
        return Outcome::Refused;
    }
    let Ok(events) = log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
    else {
        return Outcome::Refused;
    };
    assert!(
        events.len() <= original.len(),
        "no event appears from nowhere"
    );
    assert_eq!(
        events.as_slice(),
        &original[..events.len()],
        "whatever opens and verifies equals what was written: a prefix of the log"
    );
    for e in events.iter().rev().take(20) {
        if e.kind == EventType::Deleted {
            continue;
        }
        match log.get(&e.key).await {
            Ok(Some(o)) => assert!(
                o.position >= e.position,
                "current state is never older than the log says"
            ),
            Ok(None) | Err(_) => return Outcome::Refused,
        }
    }
    drop(log);
    kv.close();
    Outcome::Intact(events.len())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_file_is_refused_or_reads_back_a_verified_prefix() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = build(base.path()).await;
    let file = Embedded::data_file(base.path());
    let len = std::fs::metadata(&file).expect("stat").len();
    let mut offsets: Vec<u64> = (1..=20).map(|i| len * i / 21).collect();
    offsets.extend([len - 1, len - 512, len - 4096, len - 4097, 0, 1, 4096]);
    // Every truncation, down to an empty file, must be refused: the file is never mistaken
    // for a new store.
    let mut outcomes = Vec::new();
    for cut in offsets {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), work.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(Embedded::data_file(work.path()))
            .expect("open copy");
        f.set_len(cut).expect("truncate");
        drop(f);
        let outcome = open_damaged(work.path(), &original).await;
        assert_eq!(
            outcome,
            Outcome::Refused,
            "a data file truncated at {cut} of {len} bytes must be refused"
        );
        outcomes.push((cut, outcome));
    }
    eprintln!("truncation outcomes (offset, outcome): {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_the_middle_are_refused_or_provably_harmless() {
    use rand::Rng;
    let base = tempfile::tempdir().expect("tempdir");
    let original = build(base.path()).await;
    let file = Embedded::data_file(base.path());
    let bytes = std::fs::read(&file).expect("read");
    let mut rng = rand::rng();
    let mut refused = 0;
    let mut harmless = 0;
    for round in 0..FLIP_ROUNDS {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), work.path());
        let mut damaged = bytes.clone();
        let at = rng.random_range(bytes.len() / 8..bytes.len() * 7 / 8);
        for k in 0..16.min(damaged.len() - at) {
            damaged[at + k] ^= 0x5a;
        }
        std::fs::write(Embedded::data_file(work.path()), &damaged).expect("write");
        match open_damaged(work.path(), &original).await {
            Outcome::Refused => refused += 1,
            Outcome::Intact(n) => {
                assert_eq!(
                    n,
                    original.len(),
                    "round {round}: a flip in the middle must not silently drop events"
                );
                harmless += 1;
            }
        }
    }
    eprintln!("byte flips: {refused} refused, {harmless} landed in unused space");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_the_log_stops_startup_with_an_error_naming_the_position() {
    let base = tempfile::tempdir().expect("tempdir");
    let original = build(base.path()).await;
    let bytes = std::fs::read(Embedded::data_file(base.path())).expect("read");
    // Find the bytes of one event in the middle of the log and flip one of them.
    let victim = &original[original.len() / 2];
    let needle = &victim.object[100..140];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the event's bytes are in the file");
    let mut damaged = bytes.clone();
    damaged[at + 5] ^= 0x01;
    std::fs::write(Embedded::data_file(base.path()), &damaged).expect("write");
    let err =
        match logbook_store::open_embedded(EmbeddedConfig::new(base.path()), VerifyScope::Full)
            .await
        {
            Ok(_) => panic!("startup must refuse a log with a damaged event"),
            Err(e) => e,
        };
    let msg = err.to_string();
    assert!(
        matches!(err, logbook_store::Error::Corrupt { .. }),
        "a Corrupt error, got {msg}"
    );
    // The same bytes may stand in several records; whichever was hit must be named.
    let names_it = original.iter().any(|e| {
        msg.contains(&format!("log position {}:", e.position))
            || msg.contains(&format!("object {}:", e.key))
    });
    assert!(
        names_it,
        "the error names a damaged record by its log position or object: {msg}"
    );
    eprintln!("startup refused: {msg}");
}

/// Writes events with checkpoints switched off and copies the data directory while the store
/// is still running: the copy is what a crash would leave (the redb file behind, every
/// acknowledged batch in the write-ahead log).
async fn crashed_copy(events: usize) -> (tempfile::TempDir, Vec<Event>) {
    let live = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig {
        checkpoint_interval_ms: u64::MAX,
        checkpoint_wal_bytes_max: u64::MAX,
        ..EmbeddedConfig::new(live.path())
    };
    let kv = Embedded::open(cfg).expect("open");
    let log = EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, LogConfig::default())
        .await
        .expect("log");
    for i in 0..events {
        log.append(&req(
            EventType::Added,
            "ns",
            &format!("w{i}"),
            &vec![i as u8; 300],
        ))
        .await
        .expect("append");
    }
    let written = log
        .read_log(Position::ZERO, None, 0)
        .await
        .map(|(events, _)| events)
        .expect("read");
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(live.path(), copy.path());
    // The live store is left running; its directory is removed with `live` at the end.
    std::mem::forget(log);
    std::mem::forget(kv);
    (copy, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_ahead_log_loses_only_its_tail_and_damage_in_its_middle_is_refused() {
    let (crashed, written) = crashed_copy(60).await;
    let wal_path = crashed
        .path()
        .join(logbook_store::kv::embedded::WAL_FILE_NAME);
    let wal = std::fs::read(&wal_path).expect("read wal");
    assert!(
        !wal.is_empty(),
        "without checkpoints the acknowledged batches are in the log"
    );

    // Nothing cut: every acknowledged event is back.
    assert_eq!(
        open_damaged(crashed.path(), &written).await,
        Outcome::Intact(written.len())
    );

    let mut cuts: Vec<usize> = (0..25).map(|i| wal.len() * i / 25).collect();
    cuts.extend([wal.len() - 1, wal.len() - 7, 1, 21]);
    let mut last = 0;
    cuts.sort_unstable();
    for cut in cuts {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(crashed.path(), work.path());
        std::fs::write(
            work.path().join(logbook_store::kv::embedded::WAL_FILE_NAME),
            &wal[..cut],
        )
        .expect("truncate");
        match open_damaged(work.path(), &written).await {
            Outcome::Intact(n) => {
                assert!(
                    n >= last,
                    "a longer log never yields fewer events ({n} after {last})"
                );
                last = n;
            }
            Outcome::Refused => panic!(
                "a log cut at {cut} of {} bytes is a torn tail: open must drop it, not refuse",
                wal.len()
            ),
        }
    }

    for at in (0..wal.len() / 2).step_by(97) {
        let work = tempfile::tempdir().expect("tempdir");
        copy_dir(crashed.path(), work.path());
        let mut damaged = wal.clone();
        damaged[at] ^= 0x10;
        std::fs::write(
            work.path().join(logbook_store::kv::embedded::WAL_FILE_NAME),
            &damaged,
        )
        .expect("write");
        match Embedded::open(EmbeddedConfig::new(work.path())) {
            Err(logbook_store::Error::Corrupt { location, .. }) => {
                assert!(location.contains("byte"), "names the offset: {location}")
            }
            Err(e) => panic!("flip at {at}: expected Corrupt, got {e}"),
            Ok(_) => panic!(
                "flip at byte {at} of the write-ahead log, before intact records, must stop the open"
            ),
        }
    }
}
