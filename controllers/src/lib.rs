//! logbook-controllers: the controller runtime, built-in controllers and the scheduler.
//!
//! # Invariants
//! - Talks to the API through a client, like any controller; never to the store directly.
//!
//! Empty shell until the controllers issue lands.
