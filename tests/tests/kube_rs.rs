//! kube-rs (`kube` with `runtime`) against the real server: a reflector that must stay
//! identical to the server's state through 10,000 changes and a SIGKILL restart, and the
//! client-go-style WatchList (sendInitialEvents) request.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use logbook_e2e::{Server, within};

/// Changes the reflector test makes.
const CHANGES: usize = 10_000;
/// Objects the changes spread over.
const OBJECTS: usize = 200;
/// Concurrent writers.
const WRITERS: usize = 16;

fn cm(name: &str, v: usize) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"suite": "reflector"}},
        "data": {"v": v.to_string()},
    }))
    .expect("configmap")
}

/// One change: create, update or delete `name`, whichever applies; retried across the
/// server restart (connection errors) until the server answers.
async fn change(api: &Api<ConfigMap>, name: &str, v: usize) {
    for attempt in 0..400 {
        let res = match api.get_opt(name).await {
            Ok(None) => api
                .create(&PostParams::default(), &cm(name, v))
                .await
                .map(|_| ()),
            Ok(Some(_)) if v.is_multiple_of(5) => {
                api.delete(name, &DeleteParams::default()).await.map(|_| ())
            }
            Ok(Some(mut cur)) => {
                cur.data = Some(BTreeMap::from([("v".to_string(), v.to_string())]));
                api.replace(name, &PostParams::default(), &cur)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => return,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(50 + attempt)).await,
        }
    }
    panic!("change {v} to {name} never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reflector_stays_identical_to_the_server_through_ten_thousand_changes_and_a_restart()
-> Result<()> {
    let server = Server::start_api_only()?;
    let client = server.client().await?;
    let server = Arc::new(Mutex::new(server));
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let cfg = watcher::Config::default().labels("suite=reflector");
    let refl = reflector(writer, watcher(api.clone(), cfg))
        .default_backoff()
        .applied_objects();
    let drive = tokio::spawn(async move {
        futures::pin_mut!(refl);
        while refl.next().await.is_some() {}
    });

    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let api = api.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < CHANGES {
                change(&api, &format!("obj-{}", i % OBJECTS), i).await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += WRITERS;
            }
        }));
    }
    // Restart the server (SIGKILL) halfway through.
    within(300, "the writers to reach half of the changes", async {
        while done.load(std::sync::atomic::Ordering::Relaxed) < CHANGES / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let srv = server.clone();
    tokio::task::spawn_blocking(move || srv.lock().expect("lock").restart()).await??;
    within(600, "the writers to finish all changes", async {
        for t in tasks {
            t.await.expect("writer");
        }
    })
    .await;

    // The reflector converges on exactly the server's state.
    let want = |list: Vec<ConfigMap>| -> BTreeMap<String, String> {
        list.into_iter()
            .map(|c| {
                (
                    c.metadata.name.unwrap_or_default(),
                    c.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect()
    };
    let server_state = want(
        api.list(&ListParams::default().labels("suite=reflector"))
            .await?
            .items,
    );
    assert!(!server_state.is_empty());
    let mut last = BTreeMap::new();
    let converged = within(60, "the reflector to match the server", async {
        loop {
            last = want(reader.state().iter().map(|c| (**c).clone()).collect());
            if last == server_state {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(converged, "reflector {last:?} != server {server_state:?}");
    drive.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_list_request_gets_the_snapshot_then_the_end_bookmark() -> Result<()> {
    let server = Server::start_api_only()?;
    let client = server.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("wl-{i}"), i))
            .await?;
    }
    // The raw request client-go's reflector sends first.
    let req = http::Request::get(
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2",
    )
    .body(Vec::new())?;
    let text = within(
        20,
        "the WatchList stream to end at its timeout",
        client.request_text(req),
    )
    .await?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let added: Vec<&str> = lines
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(added, (0..5).map(|i| format!("wl-{i}")).collect::<Vec<_>>());
    let end = lines
        .iter()
        .position(|e| {
            e["type"] == "BOOKMARK"
                && e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
        })
        .expect("an initial-events-end bookmark");
    assert_eq!(end, 5, "the bookmark follows the snapshot: {lines:?}");
    assert_eq!(lines[end]["object"]["kind"], "ConfigMap");

    // kube-runtime's own streaming-list watcher reaches InitDone with every object.
    let cfg = watcher::Config::default().streaming_lists();
    let mut stream = watcher(api.clone(), cfg).boxed();
    let mut names = Vec::new();
    within(
        20,
        "the streaming-list watcher to finish its initial list",
        async {
            while let Some(ev) = stream.try_next().await? {
                match ev {
                    watcher::Event::InitApply(c) => names.push(c.metadata.name.unwrap_or_default()),
                    watcher::Event::InitDone => break,
                    _ => {}
                }
            }
            anyhow::Ok(())
        },
    )
    .await?;
    names.sort();
    assert_eq!(names, (0..5).map(|i| format!("wl-{i}")).collect::<Vec<_>>());
    Ok(())
}
