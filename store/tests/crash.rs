//! Crash safety: a child process appends as fast as it can and reports every acknowledged
//! position; the test SIGKILLs it at random moments, reopens the store, and checks that every
//! acknowledged write is there and that positions still increase. (Issue 2; etcd lost
//! acknowledged writes exactly here, etcd issue 14370.)

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::open_in;
use logbook_store::{ObjectKey, Position, VerifyScope};
use rand::Rng;

const CRASH_ROUNDS: usize = 24;
const CRASH_WRITERS: usize = 16;
const CRASH_DELAY_MS_MAX: u64 = 400;

/// Odd rounds checkpoint every few milliseconds, so kills land before, during and after
/// checkpoints and WAL truncations; even rounds keep the default (kills before the first).
const CRASH_FAST_CHECKPOINT_MS: u64 = 7;

fn run_round(dir: &std::path::Path, round: usize, delay: Duration) -> Vec<(Position, String)> {
    let checkpoint_ms = if round % 2 == 1 {
        CRASH_FAST_CHECKPOINT_MS
    } else {
        logbook_store::EmbeddedConfig::new(dir).checkpoint_interval_ms
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook-store-crash-writer"))
        .arg(dir)
        .arg(round.to_string())
        .arg(CRASH_WRITERS.to_string())
        .arg(checkpoint_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash writer");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill has no newline: it was never fully reported.
            if line.last() != Some(&b'\n') {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let mut parts = text.split_whitespace();
            if parts.next() == Some("ack") {
                let pos = parts.next().and_then(Position::parse).expect("position");
                let name = parts.next().expect("name").to_string();
                acked.push((pos, name));
            }
        }
        acked
    });
    let started = Instant::now();
    std::thread::sleep(delay);
    // SIGKILL: no destructor, no flush, no clean close.
    child.kill().expect("kill");
    let _ = child.wait();
    let acked = reader.join().expect("reader");
    eprintln!(
        "round {round}: killed after {:?} with {} acknowledged appends",
        started.elapsed(),
        acked.len()
    );
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_sigkill_and_positions_keep_increasing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rng();
    let mut last_max = Position::ZERO;
    let mut total_acked = 0usize;
    for round in 0..CRASH_ROUNDS {
        let delay = Duration::from_millis(rng.random_range(30..CRASH_DELAY_MS_MAX));
        let acked = run_round(dir.path(), round, delay);
        total_acked += acked.len();

        let (kv, log) = open_in(dir.path()).await;
        log.verify(VerifyScope::Full, |_| {})
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: the log does not verify after SIGKILL: {e}")
            });
        let events = log
            .read_log(Position::ZERO, None, 0)
            .await
            .map(|(events, _)| events)
            .expect("read log");
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "round {round}: positions strictly increase"
        );
        let by_position: HashMap<Position, &str> = events
            .iter()
            .map(|e| (e.position, e.key.name.as_str()))
            .collect();
        for (pos, name) in &acked {
            assert_eq!(
                by_position.get(pos).copied(),
                Some(name.as_str()),
                "round {round}: acknowledged append {name} at {pos} is missing after SIGKILL"
            );
            let obj = log
                .get(&ObjectKey::new("pods", "crash", name.clone()))
                .await
                .expect("get");
            assert!(
                obj.is_some(),
                "round {round}: current state of acknowledged {name} is missing"
            );
        }
        if let Some(min) = acked.iter().map(|(p, _)| *p).min() {
            assert!(
                min > last_max,
                "round {round}: new positions ({min}) must follow the previous round's ({last_max})"
            );
        }
        last_max = log.head().await.expect("head");
        drop(log);
        kv.close();
    }
    assert!(
        total_acked > CRASH_ROUNDS,
        "the writer must have acknowledged appends to check ({total_acked})"
    );
}
