//! The built-in resources as data: one [`ResourceInfo`] per group/version/resource, held by
//! a [`Registry`] that answers discovery and routing questions.
//!
//! Adding a built-in kind is one entry in [`Registry::builtin`]; CustomResourceDefinitions
//! become entries at runtime through [`Registry::add`]. Values (scope, verbs, shortNames,
//! categories, subresources, create-on-update) follow kube-apiserver 1.33; group and version
//! order follow its discovery priorities.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The verbs of an ordinary resource, in the order kube-apiserver reports them.
pub const STANDARD_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Where a scalable kind keeps the numbers the `/scale` subresource reads and writes, as
/// JSON pointers into the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleInfo {
    /// Desired replicas, e.g. `/spec/replicas`.
    pub spec_replicas: Cow<'static, str>,
    /// Observed replicas, e.g. `/status/replicas`.
    pub status_replicas: Cow<'static, str>,
    /// The pod selector, e.g. `/spec/selector`: a `metav1.LabelSelector` for apps kinds, a
    /// plain label map for replicationcontrollers (see
    /// [`LabelSelector::from_scale_selector`](crate::selector::LabelSelector::from_scale_selector)),
    /// or a selector string for custom resources (`labelSelectorPath`); empty when none.
    pub label_selector: Cow<'static, str>,
}

/// The pointers shared by every built-in scalable kind.
const SPEC_STATUS_SCALE: ScaleInfo = ScaleInfo {
    spec_replicas: Cow::Borrowed("/spec/replicas"),
    status_replicas: Cow::Borrowed("/status/replicas"),
    label_selector: Cow::Borrowed("/spec/selector"),
};

/// How `metadata.name` is validated (see [`crate::validate::validate_name`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// Lowercase RFC 1123 subdomain, ≤ 253 characters: most kinds.
    #[default]
    Dns1123Subdomain,
    /// Lowercase RFC 1123 label, ≤ 63 characters: namespaces.
    Dns1123Label,
    /// DNS-1035 label (starts with a letter), ≤ 63 characters: services.
    Dns1035Label,
    /// Anything usable as one URL path segment: not "", ".", "..", no '/' or '%'. RBAC
    /// kinds and certificatesigningrequests.
    PathSegment,
}

/// Decodes an object into its typed form and re-encodes it: unknown fields are dropped,
/// `apiVersion`/`kind` filled in, wrong types rejected with a message for a 400.
pub type CheckFn = fn(&Value) -> Result<Value, String>;

/// One resource in one group version: everything the generic handlers need to know to
/// serve it.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group; "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lowercase plural, the path segment: `pods`.
    pub plural: String,
    /// Lowercase singular: `pod`.
    pub singular: String,
    pub namespaced: bool,
    /// Verbs as discovery reports them, sorted.
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (and the main resource ignores status changes).
    pub status_subresource: bool,
    /// `Some` when `/scale` is a subresource.
    pub scale: Option<ScaleInfo>,
    /// Whether a PUT to a missing object creates it.
    pub create_on_update: bool,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    pub name_rule: NameRule,
    /// Typed decode/re-encode; `None` for kinds without a Rust type (custom resources).
    pub check: Option<CheckFn>,
    /// Whether `metadata.generation` is set on create and bumped when `spec` changes.
    pub has_spec_generation: bool,
    /// Subresources that are actions served by resource-specific code (a pod's binding,
    /// eviction, log, exec …), beyond status and scale.
    pub actions: Vec<ActionSubresource>,
    /// A finalizer a delete adds before anything else, so that a cleanup runs first
    /// (a CustomResourceDefinition's objects are removed before it).
    pub delete_finalizer: Option<&'static str>,
    /// For a custom resource: what its CustomResourceDefinition says about this version.
    pub custom: Option<Arc<CustomInfo>>,
}

/// What a CustomResourceDefinition declares for one served version of its resource.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomInfo {
    /// The CRD's name (`<plural>.<group>`).
    pub crd_name: String,
    /// The CRD's resourceVersion this was built from (documents are rebuilt when it moves).
    pub crd_revision: u64,
    /// `versions[i].schema.openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// `versions[i].additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// Whether this version is the storage version.
    pub storage: bool,
    /// The storage version's `apiVersion` (`group/version`): objects are stored as it and
    /// served as the version asked for (conversion strategy None).
    pub storage_api_version: String,
    /// The CRD is being deleted (its objects are being removed).
    pub terminating: bool,
}

/// A subresource served by resource-specific code: its name, the kind it takes or answers,
/// and its verbs, as discovery reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionSubresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// The finalizer under which a deleted CRD's objects are removed before the CRD.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The resources a CustomResourceDefinition serves, one per served version, or why it
/// cannot be served. `revision` is the CRD's resourceVersion.
///
/// # Errors
/// A message when the CRD lacks its group, names, scope or versions.
pub fn resources_of_crd(crd: &Value, revision: u64) -> Result<Vec<ResourceInfo>, String> {
    let spec = crd.get("spec").ok_or("the CRD has no spec")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let group = s(spec, "group");
    let names = spec.get("names").ok_or("the CRD has no spec.names")?;
    let (plural, kind) = (s(names, "plural"), s(names, "kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("the CRD needs spec.group, spec.names.plural and spec.names.kind".into());
    }
    let singular = match s(names, "singular") {
        x if x.is_empty() => kind.to_ascii_lowercase(),
        x => x,
    };
    let namespaced = match s(spec, "scope").as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => return Err(format!("unsupported scope {other:?}")),
    };
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let crd_name = crd
        .get("metadata")
        .map(|m| s(m, "name"))
        .unwrap_or_default();
    let storage_version = spec
        .get("versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .map(|v| s(v, "name"))
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = s(v, "name");
        let mut info = ResourceInfo::new(&group, &version, &kind, &plural, namespaced);
        info.singular = singular.clone();
        info.short_names = strings(names.get("shortNames"));
        info.categories = strings(names.get("categories"));
        info.has_spec_generation = true;
        let subs = v.get("subresources");
        info.status_subresource = subs.and_then(|x| x.get("status")).is_some();
        if let Some(scale) = subs.and_then(|x| x.get("scale")) {
            // `.spec.replicas` → `/spec/replicas`.
            let pointer = |k: &str| -> Cow<'static, str> {
                let path = s(scale, k);
                Cow::Owned(if path.is_empty() {
                    path
                } else {
                    path.replace('.', "/")
                })
            };
            info.scale = Some(ScaleInfo {
                spec_replicas: pointer("specReplicasPath"),
                status_replicas: pointer("statusReplicasPath"),
                label_selector: pointer("labelSelectorPath"),
            });
        }
        info.field_selectors = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        info.custom = Some(Arc::new(CustomInfo {
            crd_name: crd_name.clone(),
            crd_revision: revision,
            schema: v
                .get("schema")
                .and_then(|x| x.get("openAPIV3Schema"))
                .cloned(),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            storage: v.get("storage").and_then(Value::as_bool) == Some(true),
            storage_api_version: format!("{group}/{storage_version}"),
            terminating: false,
        }));
        out.push(info);
    }
    if out.is_empty() {
        return Err("the CRD serves no version".into());
    }
    Ok(out)
}

/// The action subresources of pods, as kube-apiserver 1.33 lists them.
pub const POD_ACTIONS: [ActionSubresource; 6] = [
    ActionSubresource {
        name: "attach",
        group: "",
        version: "v1",
        kind: "PodAttachOptions",
        verbs: &["create", "get"],
    },
    ActionSubresource {
        name: "binding",
        group: "",
        version: "v1",
        kind: "Binding",
        verbs: &["create"],
    },
    ActionSubresource {
        name: "eviction",
        group: "policy",
        version: "v1",
        kind: "Eviction",
        verbs: &["create"],
    },
    ActionSubresource {
        name: "exec",
        group: "",
        version: "v1",
        kind: "PodExecOptions",
        verbs: &["create", "get"],
    },
    ActionSubresource {
        name: "log",
        group: "",
        version: "v1",
        kind: "Pod",
        verbs: &["get"],
    },
    ActionSubresource {
        name: "portforward",
        group: "",
        version: "v1",
        kind: "PodPortForwardOptions",
        verbs: &["create", "get"],
    },
];

impl ResourceInfo {
    /// A resource with kube's defaults: the eight standard verbs, singular = lowercase
    /// kind, subdomain names, no subresources, no check. Meant for custom resources.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            verbs: STANDARD_VERBS.iter().map(|v| v.to_string()).collect(),
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: false,
            scale: None,
            create_on_update: false,
            field_selectors: Vec::new(),
            name_rule: NameRule::Dns1123Subdomain,
            check: None,
            has_spec_generation: false,
            actions: Vec::new(),
            delete_finalizer: None,
            custom: None,
        }
    }

    /// The action subresource `name`, if this resource has it.
    pub fn action(&self, name: &str) -> Option<&ActionSubresource> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these objects: `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The `apiVersion` objects of this resource are stored as, when it differs from the
    /// served version's (a custom resource served in several versions).
    pub fn storage_api_version(&self) -> Option<&str> {
        self.custom
            .as_ref()
            .map(|c| c.storage_api_version.as_str())
            .filter(|sv| *sv != self.api_version())
    }

    /// The `apiVersion` objects are served as, when it differs from the stored one.
    pub fn served_api_version(&self) -> Option<String> {
        self.storage_api_version().map(|_| self.api_version())
    }

    /// The storage key of this resource: `pods` for core, `apps/deployments` otherwise.
    /// The version is not part of it: all versions of a group/resource share one storage.
    pub fn store_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// Whether `/scale` is served.
    pub fn is_scalable(&self) -> bool {
        self.scale.is_some()
    }

    /// Whether the resource serves `verb`.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || field == "metadata.namespace"
            || self.field_selectors.iter().any(|f| f == field)
    }

    // Builder steps for the built-in table.

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = strings(names);
        self
    }

    fn in_all(mut self) -> Self {
        self.categories = vec!["all".to_string()];
        self
    }

    fn actions(mut self, actions: &[ActionSubresource]) -> Self {
        self.actions = actions.to_vec();
        self
    }

    fn status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn scalable(mut self) -> Self {
        self.scale = Some(SPEC_STATUS_SCALE);
        self
    }

    fn put_creates(mut self) -> Self {
        self.create_on_update = true;
        self
    }

    fn fields(mut self, fields: &[&str]) -> Self {
        self.field_selectors = strings(fields);
        self
    }

    fn names(mut self, rule: NameRule) -> Self {
        self.name_rule = rule;
        self
    }

    fn spec(mut self) -> Self {
        self.has_spec_generation = true;
        self
    }

    fn without_verb(mut self, verb: &str) -> Self {
        self.verbs.retain(|v| v != verb);
        self
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Tells a k8s-openapi scope type apart at compile time.
trait Scope {
    const NAMESPACED: bool;
}

impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// The entry for a k8s-openapi type: group, version, kind, plural and scope come from the
/// type itself, so they cannot drift from the wire format `check` enforces.
fn typed<T>() -> ResourceInfo
where
    T: k8s_openapi::Resource + DeserializeOwned + Serialize,
    T::Scope: Scope,
{
    let mut info = ResourceInfo::new(
        T::GROUP,
        T::VERSION,
        T::KIND,
        T::URL_PATH_SEGMENT,
        <T::Scope as Scope>::NAMESPACED,
    );
    info.check = Some(check_as::<T>);
    info
}

/// Decodes `v` as a `T` and encodes it back: the typed round trip kube-apiserver's decoder
/// performs. Missing `apiVersion`/`kind` are taken from `T` (kube defaults them from the
/// request path); different ones are refused.
fn check_as<T>(v: &Value) -> Result<Value, String>
where
    T: k8s_openapi::Resource + DeserializeOwned + Serialize,
{
    let cannot = |why: &dyn std::fmt::Display| {
        format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
            kind = T::KIND,
            version = T::VERSION
        )
    };
    let Value::Object(map) = v else {
        return Err(cannot(&"the body must be a JSON object"));
    };
    let mut map = map.clone();
    match map.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == T::API_VERSION => {}
        Some(Value::String(s)) => {
            return Err(format!(
                "the API version in the data ({s}) does not match the expected API version ({})",
                T::API_VERSION
            ));
        }
        Some(_) => return Err(cannot(&"apiVersion must be a string")),
    }
    match map.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == T::KIND => {}
        Some(Value::String(s)) => {
            return Err(format!(
                "the kind in the data ({s}) does not match the expected kind ({})",
                T::KIND
            ));
        }
        Some(_) => return Err(cannot(&"kind must be a string")),
    }
    map.insert("apiVersion".into(), Value::String(T::API_VERSION.into()));
    map.insert("kind".into(), Value::String(T::KIND.into()));
    let typed: T = serde_json::from_value(Value::Object(map)).map_err(|e| cannot(&e))?;
    serde_json::to_value(&typed).map_err(|e| cannot(&e))
}

/// A group and the versions it serves, preferred version first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupVersions {
    pub group: String,
    pub versions: Vec<String>,
}

/// The resources of one group version, by plural and by kind.
#[derive(Clone, Debug, Default)]
struct VersionEntry {
    by_plural: HashMap<String, Arc<ResourceInfo>>,
    by_kind: HashMap<String, Arc<ResourceInfo>>,
}

/// Every resource the server knows, indexed for lookups that do not allocate.
///
/// Cloning copies the indexes but shares every [`ResourceInfo`]; readers that need to see
/// CRD changes hold the registry behind their own lock or swap an `Arc<Registry>`.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// group -> version -> resources.
    groups: HashMap<String, HashMap<String, VersionEntry>>,
}

impl Registry {
    /// A registry with no resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in resources of kube-apiserver 1.33 that Logbook serves.
    pub fn builtin() -> Registry {
        use NameRule::{Dns1035Label, Dns1123Label, PathSegment};
        let mut r = Registry::new();

        // core/v1
        r.add(
            typed::<api::core::v1::Pod>()
                .short(&["po"])
                .in_all()
                .status()
                .spec()
                .actions(&POD_ACTIONS)
                .fields(&[
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "spec.hostNetwork",
                    "status.phase",
                    "status.podIP",
                    "status.nominatedNodeName",
                ]),
        );
        r.add(
            typed::<api::core::v1::Service>()
                .short(&["svc"])
                .in_all()
                .status()
                .spec()
                .put_creates()
                .names(Dns1035Label),
        );
        r.add(
            typed::<api::core::v1::Endpoints>()
                .short(&["ep"])
                .put_creates(),
        );
        r.add(typed::<api::core::v1::ConfigMap>().short(&["cm"]));
        r.add(typed::<api::core::v1::Secret>().fields(&["type"]));
        r.add(
            typed::<api::core::v1::Namespace>()
                .short(&["ns"])
                .status()
                .spec()
                .names(Dns1123Label)
                .without_verb("deletecollection")
                .fields(&["status.phase"]),
        );
        r.add(
            typed::<api::core::v1::Node>()
                .short(&["no"])
                .status()
                .spec()
                .fields(&["spec.unschedulable"]),
        );
        r.add(
            typed::<api::core::v1::Event>()
                .short(&["ev"])
                .put_creates()
                .fields(&[
                    "involvedObject.kind",
                    "involvedObject.namespace",
                    "involvedObject.name",
                    "involvedObject.uid",
                    "involvedObject.apiVersion",
                    "involvedObject.resourceVersion",
                    "involvedObject.fieldPath",
                    "reason",
                    "reportingComponent",
                    "source",
                    "type",
                ]),
        );
        r.add(typed::<api::core::v1::ServiceAccount>().short(&["sa"]));
        r.add(
            typed::<api::core::v1::PersistentVolume>()
                .short(&["pv"])
                .status()
                .spec(),
        );
        r.add(
            typed::<api::core::v1::PersistentVolumeClaim>()
                .short(&["pvc"])
                .status()
                .spec(),
        );
        r.add(
            typed::<api::core::v1::ReplicationController>()
                .short(&["rc"])
                .in_all()
                .status()
                .scalable()
                .spec()
                .fields(&["status.replicas"]),
        );
        r.add(
            typed::<api::core::v1::ResourceQuota>()
                .short(&["quota"])
                .status()
                .spec(),
        );
        r.add(
            typed::<api::core::v1::LimitRange>()
                .short(&["limits"])
                .spec()
                .put_creates(),
        );
        r.add(typed::<api::core::v1::PodTemplate>());

        // apps/v1
        r.add(
            typed::<api::apps::v1::Deployment>()
                .short(&["deploy"])
                .in_all()
                .status()
                .scalable()
                .spec(),
        );
        r.add(
            typed::<api::apps::v1::ReplicaSet>()
                .short(&["rs"])
                .in_all()
                .status()
                .scalable()
                .spec()
                .fields(&["status.replicas"]),
        );
        r.add(
            typed::<api::apps::v1::StatefulSet>()
                .short(&["sts"])
                .in_all()
                .status()
                .scalable()
                .spec(),
        );
        r.add(
            typed::<api::apps::v1::DaemonSet>()
                .short(&["ds"])
                .in_all()
                .status()
                .spec(),
        );
        r.add(typed::<api::apps::v1::ControllerRevision>());

        // batch/v1
        r.add(
            typed::<api::batch::v1::Job>()
                .in_all()
                .status()
                .spec()
                .fields(&["status.successful"]),
        );
        r.add(
            typed::<api::batch::v1::CronJob>()
                .short(&["cj"])
                .in_all()
                .status()
                .spec(),
        );

        // autoscaling/v2 and autoscaling/v1: one storage, two representations.
        r.add(
            typed::<api::autoscaling::v2::HorizontalPodAutoscaler>()
                .short(&["hpa"])
                .in_all()
                .status()
                .spec(),
        );
        r.add(
            typed::<api::autoscaling::v1::HorizontalPodAutoscaler>()
                .short(&["hpa"])
                .in_all()
                .status()
                .spec(),
        );

        r.add(
            typed::<api::certificates::v1::CertificateSigningRequest>()
                .short(&["csr"])
                .status()
                .spec()
                .names(PathSegment)
                .fields(&["spec.signerName"]),
        );
        r.add(typed::<api::coordination::v1::Lease>().spec().put_creates());
        r.add(typed::<api::discovery::v1::EndpointSlice>());
        r.add(
            typed::<api::events::v1::Event>()
                .short(&["ev"])
                .put_creates(),
        );

        // networking.k8s.io/v1
        r.add(
            typed::<api::networking::v1::Ingress>()
                .short(&["ing"])
                .status()
                .spec(),
        );
        r.add(typed::<api::networking::v1::IngressClass>().spec());
        r.add(
            typed::<api::networking::v1::IPAddress>()
                .short(&["ip"])
                .spec(),
        );
        r.add(typed::<api::networking::v1::ServiceCIDR>().status().spec());
        r.add(
            typed::<api::networking::v1::NetworkPolicy>()
                .short(&["netpol"])
                .spec(),
        );

        r.add({
            let mut crd = typed::<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >()
            .short(&["crd", "crds"])
            .status()
            .spec();
            crd.categories = vec!["api-extensions".to_string()];
            crd.delete_finalizer = Some(CRD_CLEANUP_FINALIZER);
            crd
        });
        r.add(
            typed::<api::policy::v1::PodDisruptionBudget>()
                .short(&["pdb"])
                .status()
                .spec(),
        );

        // rbac.authorization.k8s.io/v1
        r.add(
            typed::<api::rbac::v1::Role>()
                .names(PathSegment)
                .put_creates(),
        );
        r.add(
            typed::<api::rbac::v1::RoleBinding>()
                .names(PathSegment)
                .put_creates(),
        );
        r.add(
            typed::<api::rbac::v1::ClusterRole>()
                .names(PathSegment)
                .put_creates(),
        );
        r.add(
            typed::<api::rbac::v1::ClusterRoleBinding>()
                .names(PathSegment)
                .put_creates(),
        );

        // admissionregistration.k8s.io/v1: the webhook configurations the API's admission
        // chain calls (logbook-api `admission::webhook`).
        r.add(typed::<
            api::admissionregistration::v1::MutatingWebhookConfiguration,
        >());
        r.add(typed::<
            api::admissionregistration::v1::ValidatingWebhookConfiguration,
        >());

        r.add(typed::<api::scheduling::v1::PriorityClass>().short(&["pc"]));

        // storage.k8s.io/v1
        r.add(typed::<api::storage::v1::StorageClass>().short(&["sc"]));
        r.add(
            typed::<api::storage::v1::VolumeAttachment>()
                .status()
                .spec(),
        );
        r.add(typed::<api::storage::v1::CSIDriver>().spec());
        r.add(typed::<api::storage::v1::CSINode>().spec());

        r.add(typed::<api::node::v1::RuntimeClass>().put_creates());
        r
    }

    /// Adds `info`, replacing the resource with the same group, version and plural (the
    /// replaced entry is returned).
    pub fn add(&mut self, info: ResourceInfo) -> Option<Arc<ResourceInfo>> {
        let info = Arc::new(info);
        let entry = self
            .groups
            .entry(info.group.clone())
            .or_default()
            .entry(info.version.clone())
            .or_default();
        let replaced = entry
            .by_plural
            .insert(info.plural.clone(), Arc::clone(&info));
        if let Some(old) = &replaced
            && old.kind != info.kind
        {
            entry.by_kind.remove(&old.kind);
        }
        entry.by_kind.insert(info.kind.clone(), info);
        replaced
    }

    /// Removes a resource (a deleted CRD version); empty versions and groups disappear
    /// from discovery with it.
    pub fn remove(
        &mut self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceInfo>> {
        let versions = self.groups.get_mut(group)?;
        let entry = versions.get_mut(version)?;
        let removed = entry.by_plural.remove(plural)?;
        if entry
            .by_kind
            .get(&removed.kind)
            .is_some_and(|k| Arc::ptr_eq(k, &removed))
        {
            entry.by_kind.remove(&removed.kind);
        }
        if entry.by_plural.is_empty() {
            versions.remove(version);
        }
        if versions.is_empty() {
            self.groups.remove(group);
        }
        Some(removed)
    }

    /// The resource served at `/apis/{group}/{version}/{plural}` (or `/api/v1/{plural}`).
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.groups.get(group)?.get(version)?.by_plural.get(plural)
    }

    /// The resource of `kind` in a group version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Arc<ResourceInfo>> {
        self.groups.get(group)?.get(version)?.by_kind.get(kind)
    }

    /// Every non-core group, in kube-apiserver's discovery order, each with its versions
    /// preferred first.
    pub fn groups(&self) -> Vec<GroupVersions> {
        let mut groups: Vec<GroupVersions> = self
            .groups
            .iter()
            .filter(|(group, _)| !group.is_empty())
            .map(|(group, versions)| GroupVersions {
                group: group.clone(),
                versions: sorted_versions(versions.keys()),
            })
            .collect();
        groups.sort_by(|a, b| compare_groups(&a.group, &b.group));
        groups
    }

    /// The versions a group serves, preferred first (`["v1"]` for the core group); empty
    /// for an unknown group.
    pub fn versions(&self, group: &str) -> Vec<String> {
        self.groups
            .get(group)
            .map(|versions| sorted_versions(versions.keys()))
            .unwrap_or_default()
    }

    /// The resources of one group version, sorted by plural.
    pub fn resources(&self, group: &str, version: &str) -> Vec<&Arc<ResourceInfo>> {
        let mut out: Vec<&Arc<ResourceInfo>> = self
            .groups
            .get(group)
            .and_then(|versions| versions.get(version))
            .map(|entry| entry.by_plural.values().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.plural.cmp(&b.plural));
        out
    }

    /// Every resource, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.groups
            .values()
            .flat_map(|versions| versions.values())
            .flat_map(|entry| entry.by_plural.values())
    }
}

/// kube-apiserver's group priorities (`groupPriorityMinimum`) for the groups it serves;
/// discovery lists groups by descending priority, then by name. Groups not listed (custom
/// resources) get 1000, like CRD-backed APIServices.
const GROUP_PRIORITIES: &[(&str, u32)] = &[
    ("apiregistration.k8s.io", 17800),
    ("apps", 17800),
    ("events.k8s.io", 17750),
    ("authentication.k8s.io", 17700),
    ("authorization.k8s.io", 17600),
    ("autoscaling", 17500),
    ("batch", 17400),
    ("certificates.k8s.io", 17300),
    ("networking.k8s.io", 17200),
    ("policy", 17100),
    ("rbac.authorization.k8s.io", 17000),
    ("storage.k8s.io", 16800),
    ("admissionregistration.k8s.io", 16700),
    ("apiextensions.k8s.io", 16700),
    ("scheduling.k8s.io", 16600),
    ("coordination.k8s.io", 16500),
    ("node.k8s.io", 16300),
    ("discovery.k8s.io", 16200),
    ("flowcontrol.apiserver.k8s.io", 16100),
    ("internal.apiserver.k8s.io", 16000),
    ("resource.k8s.io", 15900),
    ("storagemigration.k8s.io", 15800),
];

const CUSTOM_GROUP_PRIORITY: u32 = 1000;

fn group_priority(group: &str) -> u32 {
    GROUP_PRIORITIES
        .iter()
        .find(|(g, _)| *g == group)
        .map_or(CUSTOM_GROUP_PRIORITY, |(_, p)| *p)
}

fn compare_groups(a: &str, b: &str) -> Ordering {
    group_priority(b)
        .cmp(&group_priority(a))
        .then_with(|| a.cmp(b))
}

fn sorted_versions<'a>(versions: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = versions.cloned().collect();
    out.sort_by(|a, b| compare_kube_versions(a, b));
    out
}

/// A Kubernetes-style version: `v<major>[(alpha|beta)<minor>]`.
fn parse_kube_version(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let major: u64 = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((2, major, 0));
    }
    let (stage, minor) = if let Some(m) = tail.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (0, m)
    } else {
        return None;
    };
    if minor.is_empty() || !minor.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((stage, major, minor.parse().ok()?))
}

/// apimachinery's `CompareKubeAwareVersionStrings` as an ordering, preferred first: GA
/// before beta before alpha, higher major then higher minor first, then non-Kubernetes
/// versions alphabetically. `v2, v1, v1beta2, v1beta1, v1alpha1, foo`.
pub fn compare_kube_versions(a: &str, b: &str) -> Ordering {
    match (parse_kube_version(a), parse_kube_version(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn builtin(group: &str, version: &str, plural: &str) -> Arc<ResourceInfo> {
        Registry::builtin()
            .get(group, version, plural)
            .cloned()
            .unwrap_or_else(|| panic!("{group}/{version}/{plural} should be built in"))
    }

    fn check(info: &ResourceInfo, v: &Value) -> Result<Value, String> {
        let check = info.check.expect("built-in kinds have a check");
        check(v)
    }

    #[test]
    fn builtin_registry_serves_every_listed_group_version_resource() {
        let expected: &[(&str, &str, &[&str])] = &[
            (
                "",
                "v1",
                &[
                    "configmaps",
                    "endpoints",
                    "events",
                    "limitranges",
                    "namespaces",
                    "nodes",
                    "persistentvolumeclaims",
                    "persistentvolumes",
                    "pods",
                    "podtemplates",
                    "replicationcontrollers",
                    "resourcequotas",
                    "secrets",
                    "serviceaccounts",
                    "services",
                ],
            ),
            (
                "apps",
                "v1",
                &[
                    "controllerrevisions",
                    "daemonsets",
                    "deployments",
                    "replicasets",
                    "statefulsets",
                ],
            ),
            ("batch", "v1", &["cronjobs", "jobs"]),
            ("coordination.k8s.io", "v1", &["leases"]),
            ("discovery.k8s.io", "v1", &["endpointslices"]),
            ("events.k8s.io", "v1", &["events"]),
            (
                "networking.k8s.io",
                "v1",
                &[
                    "ingressclasses",
                    "ingresses",
                    "ipaddresses",
                    "networkpolicies",
                    "servicecidrs",
                ],
            ),
            ("policy", "v1", &["poddisruptionbudgets"]),
            (
                "rbac.authorization.k8s.io",
                "v1",
                &[
                    "clusterrolebindings",
                    "clusterroles",
                    "rolebindings",
                    "roles",
                ],
            ),
            ("scheduling.k8s.io", "v1", &["priorityclasses"]),
            (
                "admissionregistration.k8s.io",
                "v1",
                &[
                    "mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations",
                ],
            ),
            (
                "storage.k8s.io",
                "v1",
                &[
                    "csidrivers",
                    "csinodes",
                    "storageclasses",
                    "volumeattachments",
                ],
            ),
            ("autoscaling", "v1", &["horizontalpodautoscalers"]),
            ("autoscaling", "v2", &["horizontalpodautoscalers"]),
            ("certificates.k8s.io", "v1", &["certificatesigningrequests"]),
            ("node.k8s.io", "v1", &["runtimeclasses"]),
        ];
        let registry = Registry::builtin();
        for (group, version, plurals) in expected {
            let served: Vec<&str> = registry
                .resources(group, version)
                .iter()
                .map(|r| r.plural.as_str())
                .collect();
            assert_eq!(
                &served, plurals,
                "resources of {group}/{version}, sorted by plural"
            );
        }
    }

    #[test]
    fn builtin_groups_follow_kube_discovery_order_with_preferred_version_first() {
        let groups: Vec<(String, Vec<String>)> = Registry::builtin()
            .groups()
            .into_iter()
            .map(|g| (g.group, g.versions))
            .collect();
        let expected = [
            ("apps", vec!["v1"]),
            ("events.k8s.io", vec!["v1"]),
            ("autoscaling", vec!["v2", "v1"]),
            ("batch", vec!["v1"]),
            ("certificates.k8s.io", vec!["v1"]),
            ("networking.k8s.io", vec!["v1"]),
            ("policy", vec!["v1"]),
            ("rbac.authorization.k8s.io", vec!["v1"]),
            ("storage.k8s.io", vec!["v1"]),
            ("admissionregistration.k8s.io", vec!["v1"]),
            ("apiextensions.k8s.io", vec!["v1"]),
            ("scheduling.k8s.io", vec!["v1"]),
            ("coordination.k8s.io", vec!["v1"]),
            ("node.k8s.io", vec!["v1"]),
            ("discovery.k8s.io", vec!["v1"]),
        ];
        let expected: Vec<(String, Vec<String>)> = expected
            .into_iter()
            .map(|(g, vs)| (g.to_string(), vs.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(groups, expected);
        assert_eq!(Registry::builtin().versions(""), vec!["v1".to_string()]);
    }

    #[test]
    fn pods_are_po_in_category_all_with_status_and_kube_field_selectors() {
        let pods = builtin("", "v1", "pods");
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.singular, "pod");
        assert!(pods.namespaced);
        assert_eq!(pods.short_names, vec!["po"]);
        assert_eq!(pods.categories, vec!["all"]);
        assert!(pods.status_subresource);
        assert!(!pods.is_scalable());
        assert!(!pods.create_on_update);
        assert_eq!(pods.verbs, STANDARD_VERBS.to_vec());
        assert!(pods.supports_field("spec.nodeName"));
        assert!(pods.supports_field("metadata.namespace"));
        assert!(!pods.supports_field("spec.containers"));
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.list_kind(), "PodList");
        assert_eq!(pods.store_resource(), "pods");
    }

    #[test]
    fn deployments_scale_through_spec_and_status_replicas() {
        let deployments = builtin("apps", "v1", "deployments");
        assert_eq!(deployments.short_names, vec!["deploy"]);
        assert_eq!(deployments.api_version(), "apps/v1");
        assert_eq!(deployments.store_resource(), "apps/deployments");
        assert_eq!(
            deployments.scale,
            Some(ScaleInfo {
                spec_replicas: "/spec/replicas".into(),
                status_replicas: "/status/replicas".into(),
                label_selector: "/spec/selector".into(),
            })
        );
        let scalable: Vec<String> = {
            let registry = Registry::builtin();
            let mut names: Vec<String> = registry
                .iter()
                .filter(|r| r.is_scalable())
                .map(|r| r.store_resource())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            scalable,
            vec![
                "apps/deployments",
                "apps/replicasets",
                "apps/statefulsets",
                "replicationcontrollers"
            ]
        );
    }

    #[test]
    fn both_autoscaling_versions_share_one_storage_and_v2_is_preferred() {
        let v1 = builtin("autoscaling", "v1", "horizontalpodautoscalers");
        let v2 = builtin("autoscaling", "v2", "horizontalpodautoscalers");
        assert_eq!(v1.store_resource(), "autoscaling/horizontalpodautoscalers");
        assert_eq!(v1.store_resource(), v2.store_resource());
        assert_eq!(v2.short_names, vec!["hpa"]);
        assert_eq!(v2.categories, vec!["all"]);
        assert_eq!(
            Registry::builtin().versions("autoscaling"),
            vec!["v2".to_string(), "v1".to_string()]
        );
    }

    #[test]
    fn builtin_values_match_kube_apiserver_discovery() {
        // (group, version, plural, namespaced, shortNames, in "all", status subresource)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            bool,
            &'static [&'static str],
            bool,
            bool,
        );
        let cases: &[Case] = &[
            ("", "v1", "services", true, &["svc"], true, true),
            ("", "v1", "endpoints", true, &["ep"], false, false),
            ("", "v1", "configmaps", true, &["cm"], false, false),
            ("", "v1", "secrets", true, &[], false, false),
            ("", "v1", "namespaces", false, &["ns"], false, true),
            ("", "v1", "nodes", false, &["no"], false, true),
            ("", "v1", "events", true, &["ev"], false, false),
            ("", "v1", "serviceaccounts", true, &["sa"], false, false),
            ("", "v1", "persistentvolumes", false, &["pv"], false, true),
            (
                "",
                "v1",
                "persistentvolumeclaims",
                true,
                &["pvc"],
                false,
                true,
            ),
            (
                "",
                "v1",
                "replicationcontrollers",
                true,
                &["rc"],
                true,
                true,
            ),
            ("", "v1", "resourcequotas", true, &["quota"], false, true),
            ("", "v1", "limitranges", true, &["limits"], false, false),
            ("", "v1", "podtemplates", true, &[], false, false),
            ("apps", "v1", "replicasets", true, &["rs"], true, true),
            ("apps", "v1", "statefulsets", true, &["sts"], true, true),
            ("apps", "v1", "daemonsets", true, &["ds"], true, true),
            ("apps", "v1", "controllerrevisions", true, &[], false, false),
            ("batch", "v1", "jobs", true, &[], true, true),
            ("batch", "v1", "cronjobs", true, &["cj"], true, true),
            (
                "coordination.k8s.io",
                "v1",
                "leases",
                true,
                &[],
                false,
                false,
            ),
            (
                "discovery.k8s.io",
                "v1",
                "endpointslices",
                true,
                &[],
                false,
                false,
            ),
            ("events.k8s.io", "v1", "events", true, &["ev"], false, false),
            (
                "networking.k8s.io",
                "v1",
                "ingresses",
                true,
                &["ing"],
                false,
                true,
            ),
            (
                "networking.k8s.io",
                "v1",
                "ingressclasses",
                false,
                &[],
                false,
                false,
            ),
            (
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                true,
                &["netpol"],
                false,
                false,
            ),
            (
                "policy",
                "v1",
                "poddisruptionbudgets",
                true,
                &["pdb"],
                false,
                true,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "roles",
                true,
                &[],
                false,
                false,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                false,
                &[],
                false,
                false,
            ),
            (
                "scheduling.k8s.io",
                "v1",
                "priorityclasses",
                false,
                &["pc"],
                false,
                false,
            ),
            (
                "storage.k8s.io",
                "v1",
                "storageclasses",
                false,
                &["sc"],
                false,
                false,
            ),
            (
                "storage.k8s.io",
                "v1",
                "volumeattachments",
                false,
                &[],
                false,
                true,
            ),
            (
                "storage.k8s.io",
                "v1",
                "csidrivers",
                false,
                &[],
                false,
                false,
            ),
            ("storage.k8s.io", "v1", "csinodes", false, &[], false, false),
            (
                "certificates.k8s.io",
                "v1",
                "certificatesigningrequests",
                false,
                &["csr"],
                false,
                true,
            ),
            (
                "node.k8s.io",
                "v1",
                "runtimeclasses",
                false,
                &[],
                false,
                false,
            ),
        ];
        for &(group, version, plural, namespaced, short, all, status) in cases {
            let r = builtin(group, version, plural);
            let what = format!("{group}/{version}/{plural}");
            assert_eq!(r.namespaced, namespaced, "{what} scope");
            assert_eq!(r.short_names, short.to_vec(), "{what} shortNames");
            assert_eq!(
                r.categories.contains(&"all".to_string()),
                all,
                "{what} categories"
            );
            assert_eq!(r.status_subresource, status, "{what} status subresource");
            assert_eq!(r.singular, r.kind.to_ascii_lowercase(), "{what} singular");
        }
        assert!(!builtin("", "v1", "namespaces").has_verb("deletecollection"));
        assert!(builtin("", "v1", "services").has_verb("deletecollection"));
    }

    #[test]
    fn name_rules_and_create_on_update_follow_kube_strategies() {
        assert_eq!(
            builtin("", "v1", "namespaces").name_rule,
            NameRule::Dns1123Label
        );
        assert_eq!(
            builtin("", "v1", "services").name_rule,
            NameRule::Dns1035Label
        );
        assert_eq!(
            builtin("", "v1", "pods").name_rule,
            NameRule::Dns1123Subdomain
        );
        for plural in [
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
        ] {
            assert_eq!(
                builtin("rbac.authorization.k8s.io", "v1", plural).name_rule,
                NameRule::PathSegment,
                "{plural}"
            );
        }
        let mut put_creates: Vec<String> = Registry::builtin()
            .iter()
            .filter(|r| r.create_on_update)
            .map(|r| format!("{}/{}", r.api_version(), r.plural))
            .collect();
        put_creates.sort();
        assert_eq!(
            put_creates,
            vec![
                "coordination.k8s.io/v1/leases",
                "events.k8s.io/v1/events",
                "node.k8s.io/v1/runtimeclasses",
                "rbac.authorization.k8s.io/v1/clusterrolebindings",
                "rbac.authorization.k8s.io/v1/clusterroles",
                "rbac.authorization.k8s.io/v1/rolebindings",
                "rbac.authorization.k8s.io/v1/roles",
                "v1/endpoints",
                "v1/events",
                "v1/limitranges",
                "v1/services",
            ]
        );
    }

    #[test]
    fn lookups_by_kind_and_plural_agree() {
        let registry = Registry::builtin();
        for info in registry.iter() {
            let by_kind = registry
                .by_kind(&info.group, &info.version, &info.kind)
                .expect("every resource is found by kind");
            assert!(Arc::ptr_eq(by_kind, info), "{}", info.kind);
            assert!(info.check.is_some(), "{} has a typed check", info.kind);
        }
        assert!(registry.get("apps", "v1beta1", "deployments").is_none());
        assert!(registry.get("", "v1", "Pods").is_none());
        assert!(registry.by_kind("", "v1", "pod").is_none());
    }

    #[test]
    fn custom_resources_can_be_added_and_removed_at_runtime() {
        let mut registry = Registry::builtin();
        let mut widget = ResourceInfo::new("example.com", "v1beta1", "Widget", "widgets", true);
        widget.short_names = vec!["wd".into()];
        assert!(registry.add(widget).is_none());
        registry.add(ResourceInfo::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
        ));
        registry.add(ResourceInfo::new(
            "example.com",
            "v2alpha1",
            "Widget",
            "widgets",
            true,
        ));
        let groups = registry.groups();
        let last = groups.last().expect("groups");
        assert_eq!(
            last.group, "example.com",
            "custom groups come after built-in ones"
        );
        assert_eq!(last.versions, vec!["v1", "v1beta1", "v2alpha1"]);
        let widgets = registry
            .get("example.com", "v1beta1", "widgets")
            .expect("added");
        assert_eq!(widgets.short_names, vec!["wd"]);
        assert_eq!(widgets.singular, "widget");
        assert_eq!(widgets.store_resource(), "example.com/widgets");
        assert!(widgets.check.is_none());

        for version in ["v1", "v1beta1", "v2alpha1"] {
            assert!(registry.remove("example.com", version, "widgets").is_some());
        }
        assert!(registry.by_kind("example.com", "v1", "Widget").is_none());
        assert!(registry.groups().iter().all(|g| g.group != "example.com"));
    }

    #[test]
    fn kube_version_order_prefers_ga_then_beta_then_alpha() {
        let mut versions = vec![
            "foo10",
            "v1alpha1",
            "v1",
            "v11alpha2",
            "v2",
            "foo1",
            "v10beta3",
            "v3beta1",
            "v11beta2",
            "v12alpha1",
            "v10",
        ];
        versions.sort_by(|a, b| compare_kube_versions(a, b));
        assert_eq!(
            versions,
            vec![
                "v10",
                "v2",
                "v1",
                "v11beta2",
                "v10beta3",
                "v3beta1",
                "v12alpha1",
                "v11alpha2",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn check_drops_unknown_fields_and_keeps_type_metadata() {
        let deployments = builtin("apps", "v1", "deployments");
        let out = check(
            &deployments,
            &json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "bogus": 1},
                "spec": {"replicas": 3, "notAField": true},
                "extra": "dropped"
            }),
        )
        .expect("valid deployment");
        assert_eq!(out["apiVersion"], "apps/v1");
        assert_eq!(out["kind"], "Deployment");
        assert_eq!(out["metadata"], json!({"name": "web"}));
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(out["spec"].get("notAField").is_none());
        assert!(out.get("extra").is_none());
    }

    #[test]
    fn check_fills_missing_api_version_and_kind() {
        let configmaps = builtin("", "v1", "configmaps");
        let out = check(&configmaps, &json!({"data": {"a": "b"}})).expect("valid configmap");
        assert_eq!(
            out,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn check_rejects_a_wrong_type_with_a_kube_style_message() {
        let deployments = builtin("apps", "v1", "deployments");
        let err = check(
            &deployments,
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"replicas": "three"}}),
        )
        .expect_err("replicas must be an integer");
        assert!(
            err.starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: "),
            "{err}"
        );
        assert!(err.contains("three"), "{err}");
        let err = check(&deployments, &json!([1, 2])).expect_err("not an object");
        assert!(err.contains("cannot be handled as a Deployment"), "{err}");
    }

    #[test]
    fn check_rejects_a_mismatched_api_version_or_kind() {
        let pods = builtin("", "v1", "pods");
        assert_eq!(
            check(&pods, &json!({"apiVersion": "apps/v1", "kind": "Pod"})).expect_err("mismatch"),
            "the API version in the data (apps/v1) does not match the expected API version (v1)"
        );
        assert_eq!(
            check(&pods, &json!({"apiVersion": "v1", "kind": "Service"})).expect_err("mismatch"),
            "the kind in the data (Service) does not match the expected kind (Pod)"
        );
    }

    #[test]
    fn check_accepts_what_kubectl_sends_from_yaml() {
        // YAML `cpu: 1` arrives as a JSON number; kubectl sends `creationTimestamp: null`.
        let pods = builtin("", "v1", "pods");
        let out = check(
            &pods,
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "creationTimestamp": null, "labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "nginx",
                    "resources": {"limits": {"cpu": 1, "memory": "64Mi"}},
                    "ports": [{"containerPort": 80}]}]},
                "status": {}
            }),
        )
        .expect("valid pod");
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(
            out["metadata"],
            json!({"name": "p", "labels": {"app": "x"}})
        );
        let secrets = builtin("", "v1", "secrets");
        let out = check(
            &secrets,
            &json!({"metadata": {"name": "s"}, "data": {"k": "dmFsdWU="}}),
        )
        .expect("valid secret");
        assert_eq!(out["data"]["k"], "dmFsdWU=");
    }
}
