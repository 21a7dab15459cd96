//! End-to-end tests: start the real `logbook` binary and drive it with real clients
//! (kubectl, the Python client, kube-rs). They arrive with the Kubernetes API issue.
