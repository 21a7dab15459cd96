//! `logbook bench crd`: the custom-resource benchmark. Starts `logbook serve` as a separate
//! process (like `bench api`) and measures, over HTTPS with kube-rs:
//! 1. CRD created → first custom object accepted (a create retried until it answers 201),
//!    for several CRDs one after another;
//! 2. custom-object creates/s with 64 clients (10,000 objects);
//! 3. a Table LIST of those 10,000 objects with their printer columns (kubectl's `Accept`),
//!    median of 3;
//! 4. server-side applies/s with 64 clients, each applying to its own 50-field object as
//!    three field managers in turn (each manager owns a third of the fields and changes
//!    their values every time, so every apply is a real write).
//!
//! Progress goes to stderr; the Markdown table to stdout and `<out>/results.md`, the raw
//! numbers to `<out>/results.json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::bench_api::{
    BENCH_API_LIST_RUNS_COUNT, BENCH_API_WRITERS_COUNT, KUBECTL_TABLE_ACCEPT, client,
    ensure_namespace, lat, lat_json, start_server,
};
use crate::cli::BenchApiArgs;

/// CRDs created one after another for the CRD-to-first-object phase (`--quick`: second).
pub const BENCH_CRD_CRDS_COUNT: (usize, usize) = (10, 3);
/// Custom objects created and then listed as a Table (`--quick`: second).
pub const BENCH_CRD_OBJECTS_COUNT: (usize, usize) = (10_000, 2_000);
/// Seconds the apply phase runs (`--quick`: second).
pub const BENCH_CRD_APPLY_SECS: (u64, u64) = (10, 3);
/// Fields of each applied object, split between the managers.
pub const BENCH_CRD_APPLY_FIELDS_COUNT: usize = 50;
/// Field managers taking turns on each object.
pub const BENCH_CRD_APPLY_MANAGERS_COUNT: usize = 3;
/// How long a CRD may take to serve its first object before the run fails.
const BENCH_CRD_FIRST_OBJECT_TIMEOUT_MS: u64 = 10_000;

fn crd(i: usize) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets{i}.bench.logbook.dev")},
        "spec": {
            "group": "bench.logbook.dev", "scope": "Namespaced",
            "names": {"plural": format!("widgets{i}"), "singular": format!("widget{i}"), "kind": format!("Widget{i}")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"size": {"type": "integer"}, "color": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                }}},
            }],
        },
    })
}

fn widget(i: usize, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "bench.logbook.dev/v1", "kind": format!("Widget{i}"),
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"size": name.len(), "color": "blue", "labels": {"a": "b", "c": "d"}},
    }))
    .unwrap_or_default()
}

async fn post(c: &kube::Client, path: &str, body: Vec<u8>) -> Result<String> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(body)?;
    Ok(c.request_text(req).await?)
}

pub async fn run(args: BenchApiArgs) -> Result<()> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let (crds, objects) = if args.quick {
        (BENCH_CRD_CRDS_COUNT.1, BENCH_CRD_OBJECTS_COUNT.1)
    } else {
        (BENCH_CRD_CRDS_COUNT.0, BENCH_CRD_OBJECTS_COUNT.0)
    };
    std::fs::create_dir_all(&args.out)?;
    let server = start_server(&bin, &args.server_arg)?;
    let c = client(&server.kubeconfig).await?;
    ensure_namespace(&c, "bench").await?;

    eprintln!("phase 1: {crds} CRDs, each until its first object is accepted");
    let mut first_ms = Vec::new();
    for i in 0..crds {
        let started = Instant::now();
        post(
            &c,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            serde_json::to_vec(&crd(i))?,
        )
        .await?;
        let path = format!("/apis/bench.logbook.dev/v1/namespaces/bench/widgets{i}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            match post(&c, &path, widget(i, "first")).await {
                Ok(_) => break,
                Err(_)
                    if started.elapsed()
                        < Duration::from_millis(BENCH_CRD_FIRST_OBJECT_TIMEOUT_MS) =>
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => bail!("widgets{i}: no object accepted within the timeout: {e}"),
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        eprintln!("  widgets{i}: first object after {ms:.1} ms ({attempts} attempts)");
        first_ms.push(ms);
    }
    first_ms.sort_by(f64::total_cmp);
    let first_median = first_ms.get(first_ms.len() / 2).copied().unwrap_or(0.0);
    let first_max = first_ms.last().copied().unwrap_or(0.0);

    eprintln!("phase 2: {objects} custom objects with {BENCH_API_WRITERS_COUNT} clients");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..BENCH_API_WRITERS_COUNT {
        let (c, next) = (c.clone(), next.clone());
        set.spawn(async move {
            let mut lats = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= objects {
                    break;
                }
                let t = Instant::now();
                post(
                    &c,
                    "/apis/bench.logbook.dev/v1/namespaces/bench/widgets0",
                    widget(0, &format!("w-{n}")),
                )
                .await?;
                lats.push(t.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(lats)
        });
    }
    let mut lats = Vec::new();
    while let Some(r) = set.join_next().await {
        lats.extend(r??);
    }
    let elapsed = started.elapsed();
    let creates_per_sec = objects as f64 / elapsed.as_secs_f64();
    let create_lat = lat(lats);
    eprintln!(
        "  {creates_per_sec:.0} creates/s, p99 {:.1} ms",
        create_lat.p99_ms
    );

    eprintln!("phase 3: Table LIST of the {objects} objects (kubectl get widgets0)");
    let mut table_ms = Vec::new();
    let mut rows = 0;
    for run in 0..BENCH_API_LIST_RUNS_COUNT {
        let started = Instant::now();
        let text = c
            .request_text(
                http::Request::get("/apis/bench.logbook.dev/v1/namespaces/bench/widgets0")
                    .header("accept", KUBECTL_TABLE_ACCEPT)
                    .body(Vec::new())?,
            )
            .await?;
        let took = started.elapsed().as_secs_f64() * 1e3;
        let v: Value = serde_json::from_str(&text)?;
        rows = v["rows"].as_array().map_or(0, Vec::len);
        let cols = v["columnDefinitions"].as_array().map_or(0, Vec::len);
        eprintln!(
            "  table list {run}: {rows} rows, {cols} columns, {} bytes, {took:.0} ms",
            text.len()
        );
        table_ms.push(took);
    }
    table_ms.sort_by(f64::total_cmp);
    let table_median = table_ms.get(table_ms.len() / 2).copied().unwrap_or(0.0);

    let apply_secs = if args.quick {
        BENCH_CRD_APPLY_SECS.1
    } else {
        BENCH_CRD_APPLY_SECS.0
    };
    eprintln!(
        "phase 4: server-side apply, {BENCH_API_WRITERS_COUNT} clients, {BENCH_CRD_APPLY_FIELDS_COUNT}-field objects, {BENCH_CRD_APPLY_MANAGERS_COUNT} managers, {apply_secs} s"
    );
    let applies = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(apply_secs);
    let mut set = JoinSet::new();
    for client_no in 0..BENCH_API_WRITERS_COUNT {
        let (c, applies) = (c.clone(), applies.clone());
        set.spawn(async move {
            let mut lats = Vec::new();
            let mut round = 0usize;
            while Instant::now() < deadline {
                let manager = round % BENCH_CRD_APPLY_MANAGERS_COUNT;
                let mut spec = serde_json::Map::new();
                for f in (0..BENCH_CRD_APPLY_FIELDS_COUNT)
                    .filter(|f| f % BENCH_CRD_APPLY_MANAGERS_COUNT == manager)
                {
                    spec.insert(format!("field{f}"), json!(format!("value-{round}")));
                }
                let body = serde_json::to_vec(&json!({
                    "apiVersion": "bench.logbook.dev/v1", "kind": "Widget1",
                    "metadata": {"name": format!("applied-{client_no}")},
                    "spec": spec,
                }))?;
                let req = http::Request::patch(format!(
                    "/apis/bench.logbook.dev/v1/namespaces/bench/widgets1/applied-{client_no}?fieldManager=manager-{manager}"
                ))
                .header("content-type", "application/apply-patch+yaml")
                .body(body)?;
                let t = Instant::now();
                c.request_text(req).await?;
                lats.push(t.elapsed().as_nanos() as u64);
                applies.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
            anyhow::Ok(lats)
        });
    }
    let mut apply_lats = Vec::new();
    while let Some(r) = set.join_next().await {
        apply_lats.extend(r??);
    }
    let applies_per_sec = applies.load(Ordering::Relaxed) as f64 / apply_secs as f64;
    let apply_lat = lat(apply_lats);
    eprintln!(
        "  {applies_per_sec:.0} applies/s, p99 {:.1} ms",
        apply_lat.p99_ms
    );
    let sample: Value = serde_json::from_str(
        &c.request_text(
            http::Request::get("/apis/bench.logbook.dev/v1/namespaces/bench/widgets1/applied-0")
                .body(Vec::new())?,
        )
        .await?,
    )?;
    let spec_fields = sample["spec"].as_object().map_or(0, serde_json::Map::len);
    let appliers = sample["metadata"]["managedFields"]
        .as_array()
        .map_or(0, |m| {
            m.iter().filter(|e| e["operation"] == "Apply").count()
        });
    eprintln!("  applied-0: {spec_fields} spec fields, {appliers} Apply managers");
    if spec_fields != BENCH_CRD_APPLY_FIELDS_COUNT || appliers != BENCH_CRD_APPLY_MANAGERS_COUNT {
        bail!("the applies did not merge: {spec_fields} fields, {appliers} managers");
    }

    let check = |ok: bool| if ok { "pass" } else { "FAIL" };
    let md = format!(
        "| measure | result | floor | |\n|---|---|---|---|\n\
| CRD created → first object accepted (median of {crds}, max) | {first_median:.1} ms (max {first_max:.1}) | < 1,000 ms | {} |\n\
| custom-object creates/s, {BENCH_API_WRITERS_COUNT} clients | {creates_per_sec:.0} (p99 {:.1} ms) | — | |\n\
| Table LIST of {rows} custom objects with printer columns (median of {}) | {table_median:.0} ms | < 500 ms | {} |\n\
| server-side applies/s, {BENCH_API_WRITERS_COUNT} clients, {BENCH_CRD_APPLY_FIELDS_COUNT} fields, {BENCH_CRD_APPLY_MANAGERS_COUNT} managers | {applies_per_sec:.0} (p50 {:.1} ms, p99 {:.1} ms) | ≥ 2,000/s | {} |\n",
        check(first_max < 1000.0),
        create_lat.p99_ms,
        BENCH_API_LIST_RUNS_COUNT,
        check(table_median < 500.0 && rows == objects + 1),
        apply_lat.p50_ms,
        apply_lat.p99_ms,
        check(applies_per_sec >= 2000.0),
    );
    println!("{md}");
    std::fs::write(args.out.join("results.md"), &md)?;
    let raw = json!({
        "crd_to_first_object_ms": first_ms,
        "creates_per_sec": creates_per_sec,
        "create_latency": lat_json(&create_lat),
        "table_list_ms": table_ms,
        "table_rows": rows,
        "applies_per_sec": applies_per_sec,
        "apply_latency": lat_json(&apply_lat),
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&raw)?,
    )?;
    Ok(())
}
