//! logbook-node: the node side of the cluster, as the API sees it.
//! - [`agent`]: the real node agent (kubelet's role). It registers the machine as a Node,
//!   runs the pods bound to it as containers through the Container Runtime Interface
//!   ([`cri`], containerd or CRI-O on a unix socket), reports their status, runs probes,
//!   and serves logs, exec, attach and port-forward to the API server. Start reading at
//!   [`agent::run`].
//! - [`simulate`]: kwok-like simulated nodes (Node objects, Lease heartbeats, a kubelet's
//!   share of the pod lifecycle) so that schedulers, controllers and benchmarks meet
//!   realistic nodes without containers. Start reading at [`simulate::run`].
//!
//! # Invariants
//! - Talks to the API only through a `kube::Client`; knows nothing of the store, the log or
//!   the API crate's internals (a node must behave the same against any Kubernetes API
//!   server).
//! - Talks to containers only through CRI: no runc, no containerd client, no `ctr`.
//! - Knows no CLI: the binary (`ops/`) builds an [`agent::AgentConfig`] or a
//!   [`simulate::SimConfig`] and calls `run`.
//! - Never panics on what the API or the runtime sends: every error is logged and retried,
//!   reported in the pod's status, or returned.

pub mod agent;
pub mod cri;
pub mod simulate;
