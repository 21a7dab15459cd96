//! logbook-api: the Kubernetes HTTP(S) API over the event log.
//!
//! Owns (as the API issue fills it): routing of Kubernetes paths, the request corridor
//! (authn → authz → decode → admission → strategy → store), discovery, watch streaming,
//! health and metrics.
//!
//! # Invariants
//! - Knows the store only through logbook-store's public API (`EventLog`, `WatchHub`), never
//!   how the store lays out keys on disk.
//!
//! Empty shell until the Kubernetes API issue lands.
