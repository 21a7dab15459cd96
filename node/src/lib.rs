//! logbook-node: the node agent (registration, lease heartbeats, pod workers, runtimes).
//!
//! # Invariants
//! - Talks to the API through a client; knows nothing of the store.
//!
//! Empty shell until the node-agent issues land.
