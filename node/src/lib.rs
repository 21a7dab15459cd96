//! logbook-node: the node side of the cluster, as the API sees it. Today that is
//! [`simulate`]: kwok-like simulated nodes (Node objects, Lease heartbeats, a kubelet's share
//! of the pod lifecycle) so that schedulers, controllers and benchmarks meet realistic nodes
//! without containers. Start reading at [`simulate::run`].
//!
//! # Invariants
//! - Talks to the API only through a `kube::Client`; knows nothing of the store, the log or
//!   the API crate's internals (a simulated node must behave the same against any
//!   Kubernetes API server).
//! - Knows no CLI: the binary (`ops/`) builds a [`simulate::SimConfig`] and calls
//!   [`simulate::run`].
//! - Never panics on what the API sends: every error is logged and retried or returned.

pub mod simulate;
