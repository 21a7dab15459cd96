//! In-process clients: a `kube::Client` whose requests go straight into the API router
//! ([`logbook_api::handle`]) instead of over a socket. `logbook serve` gives one to each
//! component it runs in-process (controllers, scheduler, simulated nodes), each with its own
//! identity, so the history records who did what exactly as it would for separate processes.
//! The components cannot tell the difference: the same code runs against a kubeconfig in
//! `logbook controllers`, `logbook scheduler` and `logbook node`.

use std::convert::Infallible;
use std::sync::Arc;

use logbook_api::{Api, Identity, handle};

/// A client for `api` that acts as `user` in `groups`.
pub fn client(api: &Arc<Api>, user: &str, groups: &[&str]) -> kube::Client {
    let api = Arc::clone(api);
    let identity = Identity {
        user: user.to_string(),
        groups: groups
            .iter()
            .map(|g| (*g).to_string())
            .chain(std::iter::once("system:authenticated".to_string()))
            .collect(),
        source: "in-process".to_string(),
        ..Identity::anonymous()
    };
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let api = Arc::clone(&api);
        let identity = identity.clone();
        async move {
            let req = req.map(axum::body::Body::new);
            Ok::<_, Infallible>(handle(api, identity, req).await)
        }
    });
    kube::Client::new(service, "default")
}
