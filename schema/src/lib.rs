//! logbook-schema: the Kubernetes API surface as data.
//!
//! Owns (as the API issue fills it): the resource registry (group, version, kind, plural,
//! scope, verbs, subresources), built-in types, validation, defaulting, selectors, patch
//! engines, Table columns, OpenAPI documents and wire codecs.
//!
//! # Invariants
//! - Knows nothing of storage or HTTP: no dependency on logbook-store or on a web framework.
//!
//! Empty shell until the Kubernetes API issue lands.
