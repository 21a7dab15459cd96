//! DefaultTolerationSeconds: a pod that does not tolerate its node being not-ready or
//! unreachable gets a toleration of each for five minutes, so taint-based eviction waits
//! that long before deleting it (kube's plugin of the same name; pods, CREATE and UPDATE,
//! not subresources).

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{Attributes, Operation, Plugin};
use crate::error::ApiResult;

pub struct DefaultTolerationSeconds;

impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn admit<'a>(&'a self, a: &'a mut Attributes<'_>) -> BoxFuture<'a, ApiResult<()>> {
        if a.is_core("pods")
            && a.subresource().is_empty()
            && matches!(a.operation(), Operation::Create | Operation::Update)
            && let Some(pod) = a.object.as_deref_mut()
        {
            default_toleration_seconds(pod);
        }
        Box::pin(async { Ok(()) })
    }
}

/// How long a new pod tolerates its node being not-ready or unreachable before taint-based
/// eviction deletes it, in seconds (kube's DefaultTolerationSeconds admission plugin,
/// `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission plugin: a pod that does not already tolerate the
/// `not-ready` / `unreachable` NoExecute taints gets a toleration of each for
/// [`DEFAULT_TOLERATION_SECONDS`].
pub fn default_toleration_seconds(pod: &mut Map<String, Value>) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if tolerations.is_null() {
        *tolerations = Value::Array(Vec::new());
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        // kube checks for a toleration of this key with effect NoExecute or any effect.
        let covered = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
            (effect.is_empty() || effect == "NoExecute") && (k == key || (k.is_empty() && exists))
        });
        if !covered {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}
