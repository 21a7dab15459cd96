//! logbook-controllers: the controller runtime, the built-in controllers and the scheduler.
//!
//! Owns: the runtime ([`runtime`]: informers that list+watch from a log position, keep a
//! cache and resume from their saved position after a restart; bounded de-duplicating work
//! queues with back-off; workers calling reconcilers); the controllers that make intent
//! true — [`replicaset`], [`deployment`], [`namespace`], [`gc`] (ownerReferences),
//! [`serviceaccount`], [`endpoints`] and [`endpointslice`] (a selector's pods published as a
//! Service's Endpoints and EndpointSlices), [`statefulset`] and [`daemonset`] (apps/v1
//! workloads with revision history in ControllerRevisions, [`history`]), [`job`] and [`cronjob`] (batch/v1: pods run
//! to completion, Jobs created on a [`cron`] schedule), [`nodelifecycle`] (silent nodes → Unknown,
//! taints, rate-limited taint-based eviction), [`disruption`] (PodDisruptionBudget status)
//! [`podgc`] and [`resourcequota`] (quota status) — started together by [`manager`], elected through a Lease
//! ([`runtime::leader`]) when more than one copy runs; and
//! [`scheduler`], which assigns
//! pending pods to nodes like kube-scheduler's default profile (start at
//! [`scheduler::run`]).
//!
//! # Invariants
//! - Talks to the API through a `kube::Client`, like any controller — over HTTPS, or
//!   in-process through the API router when `logbook serve` runs it; never to the store.
//! - Level-triggered: a reconcile reads the whole desired and observed state from the caches,
//!   so a missed or repeated event costs a reconcile, never a wrong result.
//! - Every queue and buffer is bounded by a named limit.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod pods;
pub mod podwrites;
pub mod replicaset;
pub mod resourcequota;
pub mod runtime;
pub mod scheduler;
pub mod selector;
pub mod serviceaccount;
pub mod statefulset;
