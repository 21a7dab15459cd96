//! A pod's volumes on the node: emptyDir and hostPath directories, and the API-backed ones
//! (configMap, secret, downwardAPI, projected with a ServiceAccount token) written under
//! `<root>/pods/<uid>/volumes/<name>` the way kubelet's atomic writer does: the files live
//! in a fresh hidden directory, `..data` is a symlink swapped to it in one rename, and each
//! top-level name is a symlink through `..data`. A running container therefore sees an
//! update all at once (the worker refreshes every
//! [`VOLUME_REFRESH_INTERVAL_MS`](super::worker::VOLUME_REFRESH_INTERVAL_MS)).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use super::spec::{field_value, pod_namespace, pod_uid, resource_field};
use crate::cri::v1;

/// Largest total size of one API-backed volume's files, in bytes (a Secret or ConfigMap is
/// at most 1 MiB; a projected volume may combine several).
pub const VOLUME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Default token lifetime asked for when a projection names none, in seconds (kubelet's).
const TOKEN_EXPIRATION_DEFAULT_S: i64 = 3600;

/// Files of one API-backed volume: relative path → (bytes, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// One volume ready to mount.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub host_path: PathBuf,
    /// Mounted read-only whatever the mount says (configMap, secret, downwardAPI, projected).
    pub read_only: bool,
}

/// What the worker keeps between refreshes.
#[derive(Default)]
pub struct VolumeState {
    /// Content hash of each API-backed volume as last written.
    written: HashMap<String, [u8; 32]>,
    /// ServiceAccount tokens by volume/path: (token, when to refresh).
    tokens: HashMap<String, (String, Instant)>,
}

fn mode_of(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default).map_or(0o644, |m| (m as u32) & 0o7777)
}

fn items_or_all(
    items: Option<&Vec<KeyToPath>>,
    keys: &[String],
    default_mode: Option<i32>,
) -> Result<Vec<(String, String, u32)>, String> {
    match items {
        Some(items) if !items.is_empty() => Ok(items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone(), mode_of(i.mode, default_mode)))
            .collect()),
        _ => Ok(keys
            .iter()
            .map(|k| (k.clone(), k.clone(), mode_of(None, default_mode)))
            .collect()),
    }
}

fn safe_rel(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c.starts_with(".."))
    {
        return Err(format!("invalid path {p:?} in a volume"));
    }
    Ok(())
}

/// A ConfigMap's keys (data and binaryData), `None` when it does not exist.
async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading configmap \"{name}\": {e}"))?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// A Secret's keys, `None` when it does not exist.
async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading secret \"{name}\": {e}"))?;
    Ok(s.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            s.string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    }))
}

/// The files of a ConfigMap or Secret (`kind` names it in messages): its `items`, else
/// every key, each under its path with its mode.
fn keyed_files(
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    out: &mut Files,
) -> Result<(), String> {
    let data = match data {
        Some(d) => d,
        None if optional => return Ok(()),
        None => return Err(format!("{kind} \"{name}\" not found")),
    };
    let keys: Vec<String> = data.keys().cloned().collect();
    for (key, path, mode) in items_or_all(items, &keys, default_mode)? {
        safe_rel(&path)?;
        match data.get(&key) {
            Some(v) => {
                out.insert(path, (v.clone(), mode));
            }
            None if optional => {}
            None => return Err(format!("{kind} \"{name}\" has no key {key:?}")),
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    host_ip: &str,
    pod_ips: &[String],
    allocatable: &HashMap<String, String>,
    out: &mut Files,
) -> Result<(), String> {
    for item in items {
        safe_rel(&item.path)?;
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, host_ip, pod_ips)
                .ok_or_else(|| format!("unsupported fieldPath {:?}", f.field_path))?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.as_ref();
            let c = spec
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(&c.name) == r.container_name.as_ref())
                })
                .or_else(|| spec.and_then(|s| s.containers.first()))
                .ok_or("a resourceFieldRef names no container")?;
            let res = r.resource.split('.').nth(1).unwrap_or("");
            let fallback = allocatable.get(res).map_or("0", String::as_str);
            resource_field(
                c,
                &r.resource,
                r.divisor.as_ref().map_or("1", |d| d.0.as_str()),
                fallback,
            )
            .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?
        } else {
            continue;
        };
        out.insert(
            item.path.clone(),
            (value.into_bytes(), mode_of(item.mode, default_mode)),
        );
    }
    Ok(())
}

/// Asks for a ServiceAccount token bound to the pod.
async fn token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration_s: i64,
) -> Result<String, String> {
    let ns = pod_namespace(pod);
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration_s,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &body)
        .await
        .map_err(|e| format!("requesting a token for serviceaccount \"{sa}\": {e}"))?;
    tr.status
        .map(|s| s.token)
        .ok_or_else(|| "the TokenRequest came back without a token".to_string())
}

/// Context for preparing volumes.
pub struct Env<'a> {
    pub client: &'a kube::Client,
    pub pod_dir: &'a Path,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub allocatable: &'a HashMap<String, String>,
}

/// The files of one API-backed volume, or `None` for a volume that is a directory.
async fn api_files(
    env: &Env<'_>,
    pod: &Pod,
    vol: &Volume,
    state: &mut VolumeState,
) -> Result<Option<Files>, String> {
    let ns = pod_namespace(pod);
    let mut files = Files::new();
    if let Some(cm) = &vol.config_map {
        let data = config_map_data(env.client, ns, &cm.name).await?;
        keyed_files(
            "configmap",
            &cm.name,
            data,
            cm.items.as_ref(),
            cm.default_mode,
            cm.optional.unwrap_or(false),
            &mut files,
        )?;
    } else if let Some(s) = &vol.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(env.client, ns, &name).await?;
        keyed_files(
            "secret",
            &name,
            data,
            s.items.as_ref(),
            s.default_mode,
            s.optional.unwrap_or(false),
            &mut files,
        )?;
    } else if let Some(d) = &vol.downward_api {
        downward_files(
            pod,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode,
            env.host_ip,
            env.pod_ips,
            env.allocatable,
            &mut files,
        )?;
    } else if let Some(p) = &vol.projected {
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let data = config_map_data(env.client, ns, &cm.name).await?;
                keyed_files(
                    "configmap",
                    &cm.name,
                    data,
                    cm.items.as_ref(),
                    p.default_mode,
                    cm.optional.unwrap_or(false),
                    &mut files,
                )?;
            }
            if let Some(s) = &src.secret {
                let data = secret_data(env.client, ns, &s.name).await?;
                keyed_files(
                    "secret",
                    &s.name,
                    data,
                    s.items.as_ref(),
                    p.default_mode,
                    s.optional.unwrap_or(false),
                    &mut files,
                )?;
            }
            if let Some(d) = &src.downward_api {
                downward_files(
                    pod,
                    d.items.as_deref().unwrap_or(&[]),
                    p.default_mode,
                    env.host_ip,
                    env.pod_ips,
                    env.allocatable,
                    &mut files,
                )?;
            }
            if let Some(t) = &src.service_account_token {
                safe_rel(&t.path)?;
                let key = format!("{}/{}", vol.name, t.path);
                let exp = t
                    .expiration_seconds
                    .unwrap_or(TOKEN_EXPIRATION_DEFAULT_S)
                    .max(600);
                let fresh = state
                    .tokens
                    .get(&key)
                    .filter(|(_, refresh)| Instant::now() < *refresh);
                let tok = match fresh {
                    Some((tok, _)) => tok.clone(),
                    None => {
                        let tok = token(env.client, pod, t.audience.as_deref(), exp).await?;
                        // Refresh at 80 % of the lifetime, as kubelet does.
                        let refresh = Instant::now() + Duration::from_secs((exp as u64) * 8 / 10);
                        state.tokens.insert(key, (tok.clone(), refresh));
                        tok
                    }
                };
                files.insert(
                    t.path.clone(),
                    (
                        tok.into_bytes(),
                        mode_of(None, p.default_mode.or(Some(0o644))),
                    ),
                );
            }
        }
    } else {
        return Ok(None);
    }
    let total: usize = files.values().map(|(b, _)| b.len()).sum();
    if total > VOLUME_BYTES_MAX {
        return Err(format!(
            "volume {:?} holds {total} bytes, more than {VOLUME_BYTES_MAX}",
            vol.name
        ));
    }
    Ok(Some(files))
}

fn digest(files: &Files) -> [u8; 32] {
    let mut h = Sha256::new();
    for (k, (v, m)) in files {
        h.update(k.as_bytes());
        h.update([0]);
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
        h.update(m.to_le_bytes());
    }
    h.finalize().into()
}

/// Writes `files` into `dir` atomically (see the module comment).
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    for (rel, (bytes, mode)) in files {
        let p = fresh.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{t}"), &link)?;
        }
    }
    // Names that left the volume.
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Prepares (or refreshes) every volume of the pod; the host path of each by name.
///
/// # Errors
/// A message for the pod's events and waiting reason (a missing ConfigMap, …).
pub async fn prepare(
    env: &Env<'_>,
    pod: &Pod,
    state: &mut VolumeState,
) -> Result<HashMap<String, Prepared>, String> {
    let mut out = HashMap::new();
    let vols = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    let base = env.pod_dir.join("volumes");
    for vol in vols {
        let dir = base.join(&vol.name);
        if let Some(h) = &vol.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating hostPath {}: {e}", p.display()))?,
                "FileOrCreate" if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    std::fs::write(&p, b"")
                        .map_err(|e| format!("creating hostPath {}: {e}", p.display()))?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a directory",
                        p.display()
                    ));
                }
                "File" if !p.is_file() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a file",
                        p.display()
                    ));
                }
                "Socket" | "CharDevice" | "BlockDevice" if !p.exists() => {
                    return Err(format!(
                        "hostPath type check failed: {} does not exist",
                        p.display()
                    ));
                }
                _ => {}
            }
            out.insert(
                vol.name.clone(),
                Prepared {
                    host_path: p,
                    read_only: false,
                },
            );
            continue;
        }
        if vol.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating emptyDir: {e}"))?;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
            out.insert(
                vol.name.clone(),
                Prepared {
                    host_path: dir,
                    read_only: false,
                },
            );
            continue;
        }
        match api_files(env, pod, vol, state).await? {
            Some(files) => {
                let d = digest(&files);
                if state.written.get(&vol.name) != Some(&d) || !dir.join("..data").exists() {
                    write_atomic(&dir, &files)
                        .map_err(|e| format!("writing volume {:?}: {e}", vol.name))?;
                    state.written.insert(vol.name.clone(), d);
                }
                out.insert(
                    vol.name.clone(),
                    Prepared {
                        host_path: dir,
                        read_only: true,
                    },
                );
            }
            None => {
                return Err(format!(
                    "volume {:?}: this node supports emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes only",
                    vol.name
                ));
            }
        }
    }
    Ok(out)
}

/// The CRI mounts of one container.
///
/// # Errors
/// A mount names a volume the pod does not have.
pub fn mounts(
    c: &Container,
    prepared: &HashMap<String, Prepared>,
) -> Result<Vec<v1::Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = prepared
            .get(&m.name)
            .ok_or_else(|| format!("volume {:?} is not defined in the pod", m.name))?;
        let mut host = v.host_path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            safe_rel(sub)?;
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| format!("creating subPath: {e}"))?;
            }
        }
        out.push(v1::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: v.read_only || m.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    Ok(out)
}

/// A pod's directory on the node.
pub fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join("pods").join(pod_uid(pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn an_atomic_write_swaps_the_data_link_and_drops_removed_names() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path().join("v");
        write_atomic(&d, &files(&[("key", "one"), ("dir/nested", "x")])).expect("write");
        assert_eq!(std::fs::read_to_string(d.join("key")).expect("read"), "one");
        assert_eq!(
            std::fs::read_to_string(d.join("dir/nested")).expect("read"),
            "x"
        );
        let first = std::fs::read_link(d.join("..data")).expect("link");
        write_atomic(&d, &files(&[("key", "two")])).expect("write");
        assert_eq!(std::fs::read_to_string(d.join("key")).expect("read"), "two");
        assert!(
            std::fs::symlink_metadata(d.join("dir")).is_err(),
            "a removed key's link is gone"
        );
        assert!(!d.join(first).exists(), "the old data directory is removed");
    }

    #[test]
    fn paths_that_climb_out_of_a_volume_are_refused() {
        assert!(safe_rel("a/b").is_ok());
        assert!(safe_rel("../etc/passwd").is_err());
        assert!(safe_rel("/abs").is_err());
        assert!(safe_rel("..data/x").is_err());
    }
}
