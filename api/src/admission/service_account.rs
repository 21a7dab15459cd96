//! ServiceAccount admission for pods (kube's `ServiceAccount` plugin): a pod runs as
//! `default` unless it names an account; an account it names must exist; and unless the pod
//! or its account opts out (`automountServiceAccountToken: false`), the pod gets kube's
//! `kube-api-access-*` projected volume — a bound token for the API audience (expiring in
//! [`SA_TOKEN_EXPIRATION_SECONDS`]), the cluster CA from `kube-root-ca.crt`, the namespace —
//! mounted read-only at [`SA_MOUNT_PATH`] in every container.
//!
//! One deviation: a missing `default` account admits the pod untouched (no account name, no
//! volume) instead of refusing it (kube refuses until the ServiceAccount controller has
//! created it), so pods can be created on a server started without controllers.

use futures::future::BoxFuture;
use logbook_store::ObjectKey;
use serde_json::{Map, Value, json};

use super::{Attributes, Operation, Plugin};
use crate::error::{ApiError, ApiResult, from_store};
use crate::handlers::Ctx;
use crate::object::decode_stored;

pub struct ServiceAccount;

impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if !(a.is_core("pods")
                && a.subresource().is_empty()
                && matches!(a.operation(), Operation::Create))
            {
                return Ok(());
            }
            let ctx = a.ctx;
            match a.object.as_deref_mut() {
                Some(pod) => admit_pod(ctx, pod).await,
                None => Ok(()),
            }
        })
    }
}

/// Where the token, CA and namespace appear in a container.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected token's lifetime (kube's 3607: an hour and seven seconds).
pub const SA_TOKEN_EXPIRATION_SECONDS: i64 = 3_607;

fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        let i = rand::random_range(0..ALPHABET.len());
        out.push(ALPHABET[i] as char);
    }
    out
}

/// Applies the plugin to a pod being created.
///
/// # Errors
/// 403 when the pod names a ServiceAccount that does not exist; a store failure.
pub async fn admit_pod(ctx: &Ctx, pod: &mut Map<String, Value>) -> ApiResult<()> {
    let ns = ctx.namespace().to_string();
    let pod_name = pod
        .get("metadata")
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let sa_name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let sa = ctx
        .api
        .log
        .get(&ObjectKey::new("serviceaccounts", &ns, &sa_name))
        .await
        .map_err(from_store)?;
    let sa = match sa {
        Some(cur) => decode_stored(&cur.object, cur.position.0)?,
        None if sa_name == "default" => return Ok(()),
        None => {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                ),
            ));
        }
    };
    spec.insert("serviceAccountName".into(), json!(sa_name));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let mounted = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SA_MOUNT_PATH))
            })
    };
    let volume = format!("kube-api-access-{}", suffix());
    let mut added = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if mounted(c) {
                continue;
            }
            if let Some(c) = c.as_object_mut() {
                let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(a) = mounts.as_array_mut() {
                    a.push(json!({"name": volume, "readOnly": true, "mountPath": SA_MOUNT_PATH}));
                    added = true;
                }
            }
        }
    }
    if added {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(a) = vols.as_array_mut() {
            a.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": SA_TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}));
        }
    }
    Ok(())
}
