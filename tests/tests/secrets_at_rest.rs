//! Secrets encrypted at rest, in the log too (issue 9, item 4), against the real binary: no
//! file under the data directory holds a Secret value (plain or base64) after creates,
//! updates, deletes, `kubectl apply` and a SIGKILL, while every read path (get, list, watch
//! live and from the log, history, reads as of a past resourceVersion) answers plaintext;
//! ConfigMaps stay plaintext (the transform is per resource); keys rotate with
//! `logbook secrets reencrypt`, and a revision under a dropped key is a clear 500.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, WatchEvent, WatchParams};
use logbook_e2e::{API_ONLY, Server, get_json, logbook_bin, within};
use serde_json::Value;

const TEST_TIMEOUT_SECS: u64 = 240;

/// Distinctive values: none can appear in a data file by chance.
const CREATED: &str = "at-rest-created-q7Zp3Kx9";
const APPLIED: &str = "at-rest-applied-Wm4Rt8Lc";
const UPDATED: &str = "at-rest-updated-Hv2Nb6Ys";
const DELETED: &str = "at-rest-deleted-Jd5Fg1Qe";
const CONFIGMAP: &str = "at-rest-configmap-Ux3Ek7Ta";

/// The base64 form a Secret's `data` holds (what kubectl and the log would carry).
fn b64(s: &str) -> String {
    match serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())) {
        Ok(Value::String(v)) => v,
        other => panic!("ByteString serializes to a string, got {other:?}"),
    }
}

/// Every file under `dir`, recursively (binary-safe), whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8], skip: &[&str]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if skip.iter().any(|s| entry.file_name() == **s) {
                continue;
            }
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    Ok(found)
}

/// `kubectl-home` is the test's own kubectl cache, not the server's.
const CLIENT_FILES: [&str; 1] = ["kubectl-home"];

fn secret_value(s: &Value, key: &str) -> Option<String> {
    s["data"][key].as_str().map(str::to_string)
}

/// The API status code of a failed request, if it was one.
fn status_of(e: &anyhow::Error) -> Option<(u16, String, String)> {
    e.chain()
        .find_map(|e| match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(s)) => Some((s.code, s.reason.clone(), s.message.clone())),
            _ => None,
        })
}

fn write_manifest(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("applied-secret.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: default\nstringData:\n  token: {APPLIED}\n"
        ),
    )?;
    Ok(path)
}

/// Collects watch events until `until` holds, as (type, name, object JSON).
async fn collect_watch(
    stream: impl futures::Stream<Item = kube::Result<WatchEvent<Secret>>>,
    mut until: impl FnMut(&[(String, String, Value)]) -> bool,
) -> Result<Vec<(String, String, Value)>> {
    let mut stream = std::pin::pin!(stream);
    let mut seen = Vec::new();
    while let Some(ev) = stream.try_next().await? {
        let (ty, s) = match ev {
            WatchEvent::Added(s) => ("ADDED", s),
            WatchEvent::Modified(s) => ("MODIFIED", s),
            WatchEvent::Deleted(s) => ("DELETED", s),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => bail!("watch error: {e:?}"),
        };
        let name = s.metadata.name.clone().unwrap_or_default();
        seen.push((ty.to_string(), name, serde_json::to_value(&s)?));
        if until(&seen) {
            return Ok(seen);
        }
    }
    bail!("the watch ended early after {} events", seen.len())
}

fn check_watch(events: &[(String, String, Value)]) {
    let find = |ty: &str, name: &str| {
        events
            .iter()
            .find(|(t, n, _)| t == ty && n == name)
            .unwrap_or_else(|| panic!("no {ty} of {name} in {events:?}"))
    };
    for (ty, name, key, value) in [
        ("ADDED", "created", "password", CREATED),
        ("ADDED", "applied", "token", APPLIED),
        ("MODIFIED", "created", "password", UPDATED),
        ("DELETED", "doomed", "password", DELETED),
    ] {
        assert_eq!(
            secret_value(&find(ty, name).2, key),
            Some(b64(value)),
            "{ty} {name}: {key}"
        );
    }
}

fn saw_delete(events: &[(String, String, Value)]) -> bool {
    events
        .iter()
        .any(|(t, n, _)| t == "DELETED" && n == "doomed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_in_the_data_directory_holds_a_secret_value_and_every_read_path_answers_plaintext()
{
    within(TEST_TIMEOUT_SECS, "secrets at rest (a hung read path or watch?)", async {
        // The full server: controllers and the garbage collector's caches under the data
        // directory are checked too.
        let mut server = Server::start().expect("server");
        let outside = tempfile::tempdir().expect("tempdir");
        let client = server.client().await.expect("client");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let before = secrets
            .list_metadata(&Default::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("list resourceVersion");

        // A live watch (the hub's tailer) from before the writes.
        let live = secrets
            .watch(&WatchParams::default(), &before)
            .await
            .expect("watch");
        let live = tokio::spawn(collect_watch(live, saw_delete));

        server.kubectl(&["create", "secret", "generic", "created", &format!("--from-literal=password={CREATED}")]).expect("create");
        let first_rv = server.kubectl_json(&["get", "secret", "created"]).expect("get")["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string();
        let manifest = write_manifest(outside.path()).expect("manifest");
        server.kubectl(&["apply", "-f", manifest.to_str().expect("utf-8")]).expect("apply with stringData");
        server
            .kubectl(&["patch", "secret", "created", "--type=merge", "-p", &format!("{{\"stringData\":{{\"password\":\"{UPDATED}\"}}}}")])
            .expect("update through stringData");
        server.kubectl(&["create", "secret", "generic", "doomed", &format!("--from-literal=password={DELETED}")]).expect("create doomed");
        server.kubectl(&["delete", "secret", "doomed"]).expect("delete");
        server.kubectl(&["create", "configmap", "plain", &format!("--from-literal=k={CONFIGMAP}")]).expect("configmap");

        // Every read path answers plaintext.
        let got = server.kubectl_json(&["get", "secret", "created"]).expect("get");
        assert_eq!(secret_value(&got, "password"), Some(b64(UPDATED)));
        let list = server.kubectl_json(&["get", "secrets"]).expect("list");
        let applied = list["items"].as_array().expect("items").iter().find(|s| s["metadata"]["name"] == "applied").expect("applied listed");
        assert_eq!(secret_value(applied, "token"), Some(b64(APPLIED)));
        let events = live.await.expect("join").expect("live watch");
        check_watch(&events);
        let old = get_json(&client, &format!("/api/v1/namespaces/default/secrets/created?resourceVersion={first_rv}&resourceVersionMatch=Exact"))
            .await
            .expect("get as of the first revision");
        assert_eq!(secret_value(&old, "password"), Some(b64(CREATED)));
        let history = get_json(&client, "/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=secrets&name=created")
            .await
            .expect("history");
        let history = history.to_string();
        assert!(history.contains(&b64(CREATED)) && history.contains(&b64(UPDATED)), "history shows both values: {history}");

        // Let the controllers save their caches, then crash the server.
        tokio::time::sleep(Duration::from_secs(6)).await;
        server.kill9().expect("kill -9");
        let dir = server.data_dir.clone();
        let mut leaks = Vec::new();
        for value in [CREATED, APPLIED, UPDATED, DELETED] {
            for needle in [value.to_string(), b64(value)] {
                for f in files_containing(&dir, needle.as_bytes(), &CLIENT_FILES).expect("grep") {
                    leaks.push(format!("{needle} in {}", f.display()));
                }
            }
        }
        assert!(leaks.is_empty(), "Secret values in plaintext under the data directory: {leaks:#?}");
        // The same search finds the ConfigMap's value: it can see into these files, and only
        // Secrets are encrypted.
        let cm = files_containing(&dir, CONFIGMAP.as_bytes(), &CLIENT_FILES).expect("grep");
        assert!(!cm.is_empty(), "the ConfigMap value is stored in plaintext, so the search must find it");
        // The hash chains cover the stored (sealed) bytes: the offline check passes.
        let verify = server.run_tool(&["verify"]).expect("verify");
        assert!(verify.status.success(), "verify: {}", String::from_utf8_lossy(&verify.stderr));

        // After a restart: reads and a watch from the log (not the ring) answer plaintext.
        server.restart().expect("restart");
        let got = server.kubectl_json(&["get", "secret", "created"]).expect("get after restart");
        assert_eq!(secret_value(&got, "password"), Some(b64(UPDATED)));
        let got = server.kubectl_json(&["get", "secret", "applied"]).expect("get after restart");
        assert_eq!(secret_value(&got, "token"), Some(b64(APPLIED)));
        assert!(server.kubectl(&["get", "secret", "doomed"]).is_err(), "the deleted Secret stays deleted");
        let client = server.client().await.expect("client");
        let secrets: Api<Secret> = Api::namespaced(client, "default");
        let replay = secrets.watch(&WatchParams::default(), &before).await.expect("watch from the log");
        let events = collect_watch(replay.boxed(), saw_delete).await.expect("replayed watch");
        check_watch(&events);
    })
    .await;
}

fn key_config(keys: &[(&str, u8)]) -> String {
    let mut providers = String::new();
    for (name, byte) in keys {
        let secret = b64(&String::from_utf8(vec![b'a' + byte; 32]).expect("ascii"));
        providers.push_str(&format!(
            "      - aesgcm:\n          keys:\n            - name: {name}\n              secret: {secret}\n"
        ));
    }
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    )
}

fn logbook(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(logbook_bin())
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "logbook {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_downtime_and_a_revision_under_a_dropped_key_is_a_clear_error() {
    within(TEST_TIMEOUT_SECS, "key rotation (a hung restart or reencrypt?)", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("encryption.yaml");
        let data = tmp.path().join("data");
        std::fs::write(&config, key_config(&[("a", 0)])).expect("config");
        let cfg = config.to_str().expect("utf-8");
        let mut args = vec!["--encryption-provider-config", cfg];
        args.extend(API_ONLY);
        let mut server = Server::start_in(data.clone(), &args).expect("server with key a");
        let kc = server.kubeconfig();
        let kc = kc.to_str().expect("utf-8").to_string();
        let before = Api::<Secret>::namespaced(server.client().await.expect("client"), "default")
            .list_metadata(&Default::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("list resourceVersion");
        server.kubectl(&["create", "secret", "generic", "one", "--from-literal=v=rotate-one-Pq8s"]).expect("create");
        server.kubectl(&["create", "secret", "generic", "two", "-n", "kube-system", "--from-literal=v=rotate-two-Zx4m"]).expect("create");
        let old_rv = server.kubectl_json(&["get", "secret", "one"]).expect("get")["metadata"]["resourceVersion"].as_str().expect("rv").to_string();

        // b added second: a still writes; then b first: both still read, b writes.
        std::fs::write(&config, key_config(&[("a", 0), ("b", 1)])).expect("config");
        server.restart().expect("restart with [a, b]");
        std::fs::write(&config, key_config(&[("b", 1), ("a", 0)])).expect("config");
        server.restart().expect("restart with [b, a]");
        let got = server.kubectl_json(&["get", "secret", "one"]).expect("read under a while b writes");
        assert_eq!(secret_value(&got, "v"), Some(b64("rotate-one-Pq8s")));

        let out = logbook(&["secrets", "reencrypt", "--kubeconfig", &kc]).expect("reencrypt");
        assert!(out.contains("re-encrypted 2 of 2 Secrets"), "{out}");
        assert!(out.contains("2 rewritten"), "both were under a: {out}");
        assert!(out.contains("namespace kube-system: 1 of 1"), "progress per namespace: {out}");
        let again = logbook(&["secrets", "reencrypt", "--kubeconfig", &kc]).expect("reencrypt again");
        assert!(again.contains("0 rewritten, 2 already under the current key"), "a second run writes nothing: {again}");

        // On the stopped store: the old revisions still use a, the current objects b.
        server.kill9().expect("stop");
        let usage = logbook(&["secrets", "key-usage", "--data-dir", data.to_str().expect("utf-8")]).expect("key-usage");
        assert!(usage.contains("aesgcm:a: 2 revisions, 0 current objects"), "{usage}");
        assert!(usage.contains("aesgcm:b: 2 revisions, 2 current objects"), "{usage}");

        // a dropped: the current Secrets read; the old revision is a clear 500 naming a.
        std::fs::write(&config, key_config(&[("b", 1)])).expect("config");
        server.restart().expect("restart with [b]");
        let got = server.kubectl_json(&["get", "secret", "two", "-n", "kube-system"]).expect("read under b");
        assert_eq!(secret_value(&got, "v"), Some(b64("rotate-two-Zx4m")));
        let client = server.client_without_retries().await.expect("client");
        let err = get_json(&client, &format!("/api/v1/namespaces/default/secrets/one?resourceVersion={old_rv}&resourceVersionMatch=Exact"))
            .await
            .expect_err("the revision under a cannot be read");
        let (code, reason, message) = status_of(&err).unwrap_or_else(|| panic!("a Status, got {err:#}"));
        assert_eq!((code, reason.as_str()), (500, "InternalError"), "{message}");
        assert!(message.contains("aesgcm key \"a\""), "names the key id: {message}");
        let err = get_json(&client, "/apis/history.logbook.dev/v1/namespaces/default/revisions?resource=secrets&name=one")
            .await
            .expect_err("history includes the revision under a");
        assert!(status_of(&err).is_some_and(|(c, _, m)| c == 500 && m.contains("\"a\"")), "{err:#}");
        // A watch resumed from before the rewrite meets the revision under a: an ERROR event
        // naming the key, not garbage.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let stream = secrets.watch(&WatchParams::default(), &before).await.expect("watch");
        let mut stream = std::pin::pin!(stream);
        match stream.try_next().await {
            Ok(Some(WatchEvent::Error(s))) => {
                assert_eq!(s.code, 500, "{s:?}");
                assert!(s.message.contains("aesgcm key \"a\""), "{s:?}");
            }
            other => panic!("expected an ERROR event naming key a, got {other:?}"),
        }
        // The server is still serving (an error, not a crash).
        let got = server.kubectl_json(&["get", "secret", "one"]).expect("still serving");
        assert_eq!(secret_value(&got, "v"), Some(b64("rotate-one-Pq8s")));
    })
    .await;
}

#[test]
fn a_bad_encryption_configuration_stops_the_server_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("bad.yaml");
    std::fs::write(
        &config,
        key_config(&[("a", 0)]).replace("aesgcm", "secretbox"),
    )
    .expect("config");
    let out = std::process::Command::new(logbook_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--encryption-provider-config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success(), "the server must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only the aesgcm and identity providers"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_without_encryption_reads_on_and_reencrypt_moves_it_to_the_generated_key() {
    within(TEST_TIMEOUT_SECS, "upgrade from plaintext (a hung restart or reencrypt?)", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let config = tmp.path().join("identity.yaml");
        std::fs::write(
            &config,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
        )
        .expect("config");
        let legacy = "legacy-plaintext-Rb7Kw2";
        // Before encryption: identity writes the value as it is.
        let mut args = vec!["--encryption-provider-config", config.to_str().expect("utf-8")];
        args.extend(API_ONLY);
        let mut old = Server::start_in(data.clone(), &args).expect("server without encryption");
        old.kubectl(&["create", "secret", "generic", "legacy", &format!("--from-literal=v={legacy}")]).expect("create");
        old.kill9().expect("stop");
        assert!(
            !files_containing(&data, b64(legacy).as_bytes(), &CLIENT_FILES).expect("grep").is_empty(),
            "identity stores the value unencrypted, so the search must find it"
        );
        drop(old);

        // The default: a generated key writes, identity still reads the old value.
        let mut server = Server::start_in(data.clone(), &API_ONLY).expect("server with the default");
        assert!(data.join("pki").join("encryption-config.yaml").exists(), "the generated configuration");
        let got = server.kubectl_json(&["get", "secret", "legacy"]).expect("plaintext from before reads");
        assert_eq!(secret_value(&got, "v"), Some(b64(legacy)));
        let kc = server.kubeconfig();
        let out = logbook(&["secrets", "reencrypt", "--kubeconfig", kc.to_str().expect("utf-8")]).expect("reencrypt");
        assert!(out.contains("1 rewritten"), "the plaintext Secret is stale: {out}");
        server.kill9().expect("stop");
        let usage = logbook(&["secrets", "key-usage", "--data-dir", data.to_str().expect("utf-8")]).expect("key-usage");
        assert!(usage.contains("identity (plaintext): 1 revisions, 0 current objects"), "{usage}");
        assert!(usage.contains(":generated-") && usage.contains("1 revisions, 1 current objects"), "{usage}");
        server.restart().expect("restart");
        let got = server.kubectl_json(&["get", "secret", "legacy"]).expect("read under the generated key");
        assert_eq!(secret_value(&got, "v"), Some(b64(legacy)));
    })
    .await;
}
