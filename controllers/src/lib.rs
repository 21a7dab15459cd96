//! logbook-controllers: the controller runtime, built-in controllers and the scheduler.
//!
//! - [`scheduler`] assigns pending pods to nodes like kube-scheduler's default profile
//!   (start at [`scheduler::run`]).
//!
//! # Invariants
//! - Talks to the API through a client, like any controller; never to the store directly.
//!
//! Empty shell until the controllers issue lands.

pub mod scheduler;
