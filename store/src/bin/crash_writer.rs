//! Test helper for `tests/crash.rs`: appends events from several concurrent writers as fast
//! as the store takes them and prints `ack <position> <name>` for each acknowledged append,
//! until it is killed. Usage:
//! `logbook-store-crash-writer <data-dir> <round> <writers> [checkpoint-interval-ms]`.

use std::io::Write;
use std::sync::Arc;

use logbook_store::kv::Kv;
use logbook_store::{
    Actor, AppendRequest, Embedded, EmbeddedConfig, EventLog, EventType, Expect, LogConfig,
    ObjectKey,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(round), Some(writers)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|w| w.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: logbook-store-crash-writer <data-dir> <round> <writers>");
        std::process::exit(2);
    };
    let mut cfg = EmbeddedConfig::new(dir);
    if let Some(ms) = args.get(4).and_then(|m| m.parse::<u64>().ok()) {
        cfg.checkpoint_interval_ms = ms;
    }
    let kv = match Embedded::open(cfg) {
        Ok(kv) => kv,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let log = match EventLog::open(Arc::new(kv) as Arc<dyn Kv>, LogConfig::default()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("log open failed: {e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        let round = round.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let name = format!("r{round}-w{w}-{i}");
                // Objects of varied sizes, some spanning several chunks.
                let size = if i % 50 == 7 { 250_000 } else { 1024 };
                let req = AppendRequest {
                    key: ObjectKey::new("pods", "crash", name.clone()),
                    kind: EventType::Added,
                    object: vec![(i % 251) as u8; size],
                    uid: name.clone(),
                    expect: Expect::default(),
                    actor: Actor {
                        user: "crash-writer".into(),
                        groups: vec![],
                        ..Default::default()
                    },
                    verb: "create".into(),
                    request_id: name.clone(),
                };
                match log.append(&req).await {
                    Ok(e) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ack {} {}", e.position, name);
                        let _ = out.flush();
                    }
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        std::process::exit(1);
                    }
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
