//! `logbook secrets`: moving Secrets to the current encryption key, and seeing which keys
//! the retained revisions still need.
//!
//! `reencrypt` is a client of a running server (its kubeconfig), like kube's
//! `kubectl get secrets -A -o json | kubectl replace -f -`: an unchanged update of each
//! Secret, which the server writes (instead of answering "nothing changed") because the
//! stored form is stale — sealed under a key that no longer writes, or not sealed. Secrets
//! already under the write key are answered unchanged, with no new revision. The log is
//! append-only and hash-chained: old revisions keep the key they were written with until
//! retention removes them. `key-usage` counts them on a stopped store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use logbook_store::Position;

use crate::cli::{SecretsKeyUsageArgs, SecretsReencryptArgs};

/// Secrets listed per page by `reencrypt` (`--page-items`).
pub const REENCRYPT_PAGE_ITEMS_DEFAULT: u32 = 500;
/// Attempts per Secret when concurrent writers keep changing it (409 each time).
pub const REENCRYPT_CONFLICT_RETRIES_MAX: u32 = 8;
/// How often a progress line is printed inside a large namespace, in milliseconds.
pub const REENCRYPT_PROGRESS_INTERVAL_MS: u64 = 1_000;
/// Events read per step by `key-usage`.
const KEY_USAGE_BATCH_EVENTS: usize = 1_024;

/// The client `reencrypt` uses: `--kubeconfig`, else `$KUBECONFIG`, else the data
/// directory's admin kubeconfig, else kube's defaults.
async fn client(kubeconfig: Option<&Path>, data_dir: &Path) -> Result<Client> {
    let path: Option<PathBuf> = kubeconfig.map(Path::to_path_buf).or_else(|| {
        if std::env::var_os("KUBECONFIG").is_some() {
            return None;
        }
        Some(data_dir.join("kubeconfig")).filter(|p| p.exists())
    });
    let config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(&p)
                .with_context(|| format!("reading the kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading the kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config)")?,
    };
    Client::try_from(config).context("building the client")
}

/// What happened to the Secrets.
#[derive(Debug, Default)]
struct Tally {
    /// Written again (a new revision under the current write key).
    rewritten: u64,
    /// Already under the current write key: answered unchanged, nothing written.
    current: u64,
    /// Deleted between the list and the rewrite.
    gone: u64,
    /// Could not be rewritten (e.g. sealed under a key the server no longer holds).
    failed: u64,
}

impl Tally {
    fn done(&self) -> u64 {
        self.rewritten + self.current + self.gone + self.failed
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Rewrites one Secret unchanged; the server writes it only when its stored form is stale.
async fn rewrite(api: &Api<DynamicObject>, name: &str, tally: &mut Tally) -> Result<()> {
    for _ in 0..REENCRYPT_CONFLICT_RETRIES_MAX {
        let obj = match api.get(name).await {
            Ok(o) => o,
            Err(e) if is_status(&e, 404) => {
                tally.gone += 1;
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        };
        let before = obj.metadata.resource_version.clone();
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(after) => {
                if after.metadata.resource_version != before {
                    tally.rewritten += 1;
                } else {
                    tally.current += 1;
                }
                return Ok(());
            }
            // Written by someone else since the read: that write sealed it under the current
            // key already, but read it again to be sure.
            Err(e) if is_status(&e, 409) => continue,
            Err(e) if is_status(&e, 404) => {
                tally.gone += 1;
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("rewriting {name}")),
        }
    }
    anyhow::bail!("{name}: still changing after {REENCRYPT_CONFLICT_RETRIES_MAX} attempts")
}

/// `logbook secrets reencrypt`.
pub async fn reencrypt(args: SecretsReencryptArgs) -> Result<()> {
    let client = client(args.kubeconfig.as_deref(), &args.data_dir).await?;
    let ar = ApiResource::erase::<Secret>(&());
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    // Names first (a bounded page at a time), so the total is known and memory holds names,
    // not Secrets.
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut params = ListParams::default().limit(args.page_items.max(1));
    loop {
        let page = all
            .list_metadata(&params)
            .await
            .context("listing Secrets")?;
        for s in page.items {
            let ns = s.metadata.namespace.unwrap_or_default();
            if let Some(name) = s.metadata.name {
                by_namespace.entry(ns).or_default().push(name);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    let total: u64 = by_namespace.values().map(|v| v.len() as u64).sum();
    println!(
        "re-encrypting {total} Secrets in {} namespaces under the server's current key",
        by_namespace.len()
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut last_progress = Instant::now();
    for (ns, names) in &by_namespace {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let ns_start = tally.done();
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = rewrite(&api, name, &mut tally).await {
                tally.failed += 1;
                eprintln!("{ns}/{name}: {e:#}");
            }
            if last_progress.elapsed() >= Duration::from_millis(REENCRYPT_PROGRESS_INTERVAL_MS) {
                println!(
                    "  {ns}: {} of {} ({} of {total} overall)",
                    i + 1,
                    names.len(),
                    tally.done()
                );
                last_progress = Instant::now();
            }
        }
        println!(
            "namespace {ns}: {} of {} done ({} of {total} overall)",
            tally.done() - ns_start,
            names.len(),
            tally.done()
        );
    }
    println!(
        "re-encrypted {} of {total} Secrets in {:.1} s: {} rewritten, {} already under the current key, {} deleted meanwhile, {} failed",
        tally.rewritten + tally.current,
        started.elapsed().as_secs_f64(),
        tally.rewritten,
        tally.current,
        tally.gone,
        tally.failed
    );
    anyhow::ensure!(
        tally.failed == 0,
        "{} Secrets could not be rewritten (see above)",
        tally.failed
    );
    Ok(())
}

/// `logbook secrets key-usage`: retained revisions per key id, per resource.
pub async fn key_usage(args: SecretsKeyUsageArgs) -> Result<()> {
    let (_kv, log) = crate::verify::open_stopped(&args.data_dir)
        .await
        .context("key-usage reads a stopped store (stop `logbook serve` first)")?;
    for r in &args.resource {
        let resource = crate::retention::store_resource(r)?;
        let mut by_key: BTreeMap<String, u64> = BTreeMap::new();
        let mut current: BTreeMap<String, u64> = BTreeMap::new();
        // The newest retained revision of each object: its key is the current object's.
        let mut newest: BTreeMap<(String, String), (String, bool)> = BTreeMap::new();
        let mut after = Position::ZERO;
        loop {
            let events = log
                .read_resource_log_unopened(&resource, after, KEY_USAGE_BATCH_EVENTS)
                .await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            for e in events {
                let id = crate::encryption::key_id_of(&e.object)
                    .unwrap_or_else(|| "identity (plaintext)".to_string());
                *by_key.entry(id.clone()).or_default() += 1;
                let deleted = e.kind == logbook_store::EventType::Deleted;
                newest.insert((e.key.namespace, e.key.name), (id, deleted));
            }
        }
        for (id, deleted) in newest.values() {
            if !deleted {
                *current.entry(id.clone()).or_default() += 1;
            }
        }
        let total: u64 = by_key.values().sum();
        println!("{r}: {total} retained revisions");
        for (id, n) in &by_key {
            println!(
                "  {id}: {n} revisions, {} current objects",
                current.get(id).copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}
