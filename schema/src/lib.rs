//! logbook-schema: the Kubernetes API surface as data.
//!
//! Owns what a Kubernetes API server must know about its resources, independent of how
//! they are served or stored:
//! - [`registry`] — every built-in resource as a [`ResourceInfo`] (group, version, kind,
//!   plural, scope, verbs, shortNames, categories, subresources, field selectors, name
//!   rule, typed check), held by a [`Registry`] that also takes custom resources at runtime.
//!   Start here.
//! - [`selector`] — label and field selectors: apimachinery's grammar and messages,
//!   matching against objects as JSON.
//! - [`defaults`] — the fields kube-apiserver fills in when a client leaves them out (pod
//!   specs wherever they appear, workloads, services, secrets, namespaces).
//! - [`validate`] — name and `metadata` validation producing the causes of a 422.
//! - [`openapi`] — Kubernetes v1.33's OpenAPI definitions of the stable types, as data
//!   (`openapi/definitions.json`, `scripts/gen-openapi-defs.py`): the schemas of
//!   `/openapi/v2` and `/openapi/v3` and the patch metadata of strategic merge patch.
//! - [`validate_kinds`] — validation of the built-in kinds' specs and of updates (immutable
//!   fields), with kube-apiserver's field paths and messages; [`quantity`] parses the
//!   resource quantities it compares.
//! - [`patch`] — strategic merge patch for the built-in types (merge keys as data).
//! - [`ssa`] — server-side apply and field ownership: `apply` (merge, conflicts, removal of
//!   fields a manager stopped applying), `update` (what every other write does to
//!   `metadata.managedFields`), `FieldsV1` field sets, list/map types from a kind's
//!   OpenAPI definition or a CRD schema.
//! - [`printers`] — the Table columns `kubectl get` shows per kind (kube-apiserver's
//!   printers as data) and pure functions from an object and "now" to a row's cells.
//! - [`structural`] — CustomResourceDefinition schemas: the structural-schema check at CRD
//!   creation (with default and CEL rule checks), then per custom object pruning,
//!   defaulting, OpenAPI validation and `x-kubernetes-validations` (CEL, with the `cel`
//!   crate under a cost bound), all with kube-apiserver's paths and messages.
//! - [`proto`] — decoding Kubernetes protobuf request bodies (kubectl ≥ 1.32 sends its
//!   typed commands that way) into the JSON kube-apiserver would have decoded, driven by a
//!   table generated from k8s-pb and k8s-openapi (`scripts/gen-proto-schema.py`).
//!
//!
//! # Invariants
//! - Knows nothing of storage or HTTP: no dependency on logbook-store or on a web
//!   framework. Objects are `serde_json::Value`s; errors are strings and causes that the
//!   API layer turns into `Status` responses.
//! - Values that clients can observe (discovery data, error messages) follow kube-apiserver
//!   1.33 exactly; each deliberate difference is documented where it is made.
//! - Pure functions and plain data: no I/O, no clock, no global state.

pub mod defaults;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod proto;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod ssa;
pub mod structural;
pub mod validate;
pub mod validate_kinds;

pub use registry::{ActionSubresource, GroupVersions, NameRule, Registry, ResourceInfo, ScaleInfo};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use validate::Cause;
