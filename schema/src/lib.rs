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
//! - [`validate`] — name and `metadata` validation producing the causes of a 422.
//! - [`patch`] — strategic merge patch for the built-in types (merge keys as data).
//! - [`printers`] — the Table columns `kubectl get` shows per kind (kube-apiserver's
//!   printers as data) and pure functions from an object and "now" to a row's cells.
//! - [`proto`] — decoding Kubernetes protobuf request bodies (kubectl ≥ 1.32 sends its
//!   typed commands that way) into the JSON kube-apiserver would have decoded, driven by a
//!   table generated from k8s-pb and k8s-openapi (`scripts/gen-proto-schema.py`).
//!
//! Still to come with the kubectl issue: defaulting, full OpenAPI documents.
//!
//! # Invariants
//! - Knows nothing of storage or HTTP: no dependency on logbook-store or on a web
//!   framework. Objects are `serde_json::Value`s; errors are strings and causes that the
//!   API layer turns into `Status` responses.
//! - Values that clients can observe (discovery data, error messages) follow kube-apiserver
//!   1.33 exactly; each deliberate difference is documented where it is made.
//! - Pure functions and plain data: no I/O, no clock, no global state.

pub mod patch;
pub mod printers;
pub mod proto;
pub mod registry;
pub mod selector;
pub mod validate;

pub use registry::{GroupVersions, NameRule, Registry, ResourceInfo, ScaleInfo};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use validate::Cause;
