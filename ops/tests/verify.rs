//! `logbook verify` run as the real binary against a real store.

use std::process::Command;
use std::sync::Arc;

use logbook_store::kv::Kv;
use logbook_store::{
    Actor, AppendRequest, Embedded, EmbeddedConfig, EventLog, EventType, Expect, LogConfig,
    ObjectKey,
};

async fn make_store(dir: &std::path::Path, events: usize) -> Vec<logbook_store::Event> {
    let kv = Embedded::open(EmbeddedConfig::new(dir)).expect("open");
    let log = EventLog::open(Arc::new(kv.clone()) as Arc<dyn Kv>, LogConfig::default())
        .await
        .expect("log");
    let mut out = Vec::new();
    for i in 0..events {
        let req = AppendRequest {
            key: ObjectKey::new("configmaps", "default", format!("cm-{i}")),
            kind: EventType::Added,
            object: format!("{{\"data\":{{\"n\":\"{i:08}\"}}}}").into_bytes(),
            uid: format!("uid-{i}"),
            expect: Expect::default(),
            actor: Actor {
                user: "admin".into(),
                groups: vec![],
                ..Default::default()
            },
            verb: "create".into(),
            request_id: format!("r{i}"),
        };
        out.push(log.append(&req).await.expect("append"));
    }
    drop(log);
    kv.close();
    out
}

fn logbook(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_logbook"))
        .arg("verify")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run logbook verify")
}

#[tokio::test]
async fn verify_passes_an_intact_store_and_names_the_position_of_a_damaged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = make_store(dir.path(), 200).await;
    let ok = logbook(dir.path());
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "intact store must verify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("verified 200 events"),
        "reports what it checked: {stdout}"
    );

    // Flip one byte inside one event's object in the data file.
    let victim = &events[120];
    let file = Embedded::data_file(dir.path());
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes
        .windows(victim.object.len())
        .position(|w| w == victim.object.as_slice())
        .expect("the object is in the file");
    bytes[at + 10] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write");
    let bad = logbook(dir.path());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "a damaged store must fail verification"
    );
    assert!(
        stderr.contains(&format!("log position {}", victim.position)),
        "the error names the damaged position {}: {stderr}",
        victim.position
    );
}

#[test]
fn verify_refuses_a_directory_without_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = logbook(dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Logbook store"));
}
