//! The admission chain against the real binary: LimitRanger, PodSecurity, and admission
//! webhooks served by an HTTPS server inside the test (its CA made with rcgen and given
//! to the API server as the configuration's caBundle).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::BodyExt;
use logbook_e2e::{Server, call_json, within};
use serde_json::{Value, json};

const TIMEOUT_SECONDS: u64 = 60;

fn pod(name: &str, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    });
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

async fn create_namespace(c: &kube::Client, name: &str, labels: Value) -> anyhow::Result<()> {
    call_json(
        c,
        "POST",
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .await?;
    Ok(())
}

/// The Status of a refused request.
fn status_of(e: &anyhow::Error) -> kube::core::Status {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => (**s).clone(),
        other => panic!("expected a Kubernetes Status, got {other:?} ({e})"),
    }
}

#[tokio::test]
async fn limit_range_defaults_appear_on_a_created_pod_and_a_pod_above_max_is_refused() {
    within(TIMEOUT_SECONDS, "LimitRanger admission", async {
        let s = Server::start_api_only().expect("server");
        let c = s.client().await.expect("client");
        create_namespace(&c, "limited", json!({})).await.expect("namespace");
        call_json(
            &c,
            "POST",
            "/api/v1/namespaces/limited/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
                "spec": {"limits": [{"type": "Container",
                    "default": {"cpu": "500m", "memory": "128Mi"},
                    "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
                    "max": {"cpu": "1"}}]}}),
        )
        .await
        .expect("limitrange");
        let created = call_json(&c, "POST", "/api/v1/namespaces/limited/pods", pod("plain", json!({})))
            .await
            .expect("a pod without resources is admitted");
        let res = &created["spec"]["containers"][0]["resources"];
        assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "128Mi"}), "{created}");
        assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "64Mi"}), "{created}");
        assert_eq!(
            created["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
        );
        // The QoS class follows the defaults LimitRanger set (requests < limits: Burstable).
        assert_eq!(created["status"]["qosClass"], "Burstable");

        let big = pod(
            "big",
            json!({"spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}}]}}),
        );
        let e = call_json(&c, "POST", "/api/v1/namespaces/limited/pods", big)
            .await
            .expect_err("a pod above max is refused");
        let st = status_of(&e);
        assert_eq!(st.code, 403, "{st:?}");
        assert_eq!(st.reason, "Forbidden");
        assert_eq!(
            st.message,
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        );
        let e = call_json(&c, "GET", "/api/v1/namespaces/limited/pods/big", Value::Null)
            .await
            .expect_err("nothing was written");
        assert_eq!(status_of(&e).code, 404);
    })
    .await;
}

#[tokio::test]
async fn pod_security_restricted_refuses_a_privileged_pod_with_kubes_message_and_admits_a_compliant_one()
 {
    within(TIMEOUT_SECONDS, "PodSecurity enforce", async {
        let s = Server::start_api_only().expect("server");
        let c = s.client().await.expect("client");
        create_namespace(
            &c,
            "secure",
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        )
        .await
        .expect("namespace");
        let privileged = pod(
            "priv",
            json!({"spec": {"containers": [{"name": "app", "image": "x",
                "securityContext": {"privileged": true}}]}}),
        );
        let e = call_json(&c, "POST", "/api/v1/namespaces/secure/pods", privileged)
            .await
            .expect_err("a privileged pod is refused");
        let st = status_of(&e);
        assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"), "{st:?}");
        assert_eq!(
            st.message,
            "pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": \
             privileged (container \"app\" must not set securityContext.privileged=true), \
             allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let compliant = pod(
            "ok",
            json!({"spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "image": "x", "securityContext": {
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}),
        );
        call_json(&c, "POST", "/api/v1/namespaces/secure/pods", compliant)
            .await
            .expect("a compliant pod is admitted");
    })
    .await;
}

#[tokio::test]
async fn namespace_lifecycle_keeps_the_standard_namespaces_and_refuses_creates_in_missing_ones() {
    within(TIMEOUT_SECONDS, "NamespaceLifecycle", async {
        let s = Server::start_api_only().expect("server");
        let c = s.client().await.expect("client");
        for ns in ["default", "kube-system", "kube-public"] {
            let e = call_json(
                &c,
                "DELETE",
                &format!("/api/v1/namespaces/{ns}"),
                Value::Null,
            )
            .await
            .expect_err("an immortal namespace");
            let st = status_of(&e);
            assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"), "{st:?}");
            assert_eq!(
                st.message,
                format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")
            );
        }
        let e = call_json(
            &c,
            "POST",
            "/api/v1/namespaces/nowhere/pods",
            pod("p", json!({})),
        )
        .await
        .expect_err("no namespace");
        let st = status_of(&e);
        assert_eq!(st.code, 404, "{st:?}");
        assert_eq!(st.message, "namespaces \"nowhere\" not found");
    })
    .await;
}

#[tokio::test]
async fn pod_security_warn_label_gives_kubectl_a_warning() {
    within(TIMEOUT_SECONDS, "PodSecurity warn", async {
        let s = Server::start_api_only().expect("server");
        s.kubectl(&["create", "namespace", "watched"]).expect("namespace");
        s.kubectl(&[
            "label",
            "namespace",
            "watched",
            "pod-security.kubernetes.io/warn=baseline",
        ])
        .expect("label");
        let out = s
            .kubectl_output(
                "kubectl",
                &[
                    "run",
                    "hostnet",
                    "-n",
                    "watched",
                    "--image=x",
                    "--overrides={\"spec\":{\"hostNetwork\":true}}",
                ],
            )
            .expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "warn does not refuse: {stderr}");
        assert!(
            stderr.contains(
                "Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
            ),
            "kubectl printed: {stderr}"
        );

        // Enforcing the level later warns about the pods already violating it.
        let out = s
            .kubectl_output(
                "kubectl",
                &[
                    "label",
                    "namespace",
                    "watched",
                    "pod-security.kubernetes.io/enforce=baseline",
                ],
            )
            .expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(
                "Warning: existing pods in namespace \"watched\" violate the new PodSecurity enforce level \"baseline:latest\""
            ) && stderr.contains("Warning: hostnet: host namespaces"),
            "kubectl printed: {stderr}"
        );

        // An invalid level is refused, as kube validates the labels.
        let out = s
            .kubectl_output(
                "kubectl",
                &["label", "--overwrite", "namespace", "watched", "pod-security.kubernetes.io/enforce=strict"],
            )
            .expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "an invalid level is refused");
        assert!(
            stderr.contains("metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
            "kubectl printed: {stderr}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// An HTTPS admission webhook server: `/deny` refuses, `/deny-delete` refuses naming the
/// old object, `/mutate` adds the label `mutated=yes`, `/slow` answers after 3 s, anything
/// else allows.
struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_webhook() -> Webhook {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "webhook-test-ca");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    // Reached by URL (the IP) and through the Service `hook` in `default`.
    let leaf = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "hook.default.svc".to_string(),
    ])
    .expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let uid = review["request"]["uid"].clone();
                        let response = match path.as_str() {
                            "/deny" => {
                                let user = review["request"]["userInfo"]["username"]
                                    .as_str()
                                    .unwrap_or("");
                                json!({"uid": uid, "allowed": false, "status": {"code": 403,
                                "message": format!("pods labelled webhook=deny are not welcome, {user}")}})
                            }
                            "/mutate" => {
                                let patch = json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]);
                                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
                                "warnings": ["mutated by the test webhook"]})
                            }
                            "/deny-delete" => {
                                // Refuses deleting, naming the object it was shown as oldObject.
                                let old = review["request"]["oldObject"]["metadata"]["name"]
                                    .as_str()
                                    .unwrap_or("");
                                let op = review["request"]["operation"].as_str().unwrap_or("");
                                json!({"uid": uid, "allowed": false,
                                "status": {"code": 403, "message": format!("{op} of {old} refused")}})
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                json!({"uid": uid, "allowed": true})
                            }
                            _ => json!({"uid": uid, "allowed": true}),
                        };
                        let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(out.to_string()),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Webhook {
        addr,
        ca_pem: ca_cert.pem(),
        task,
    }
}

/// A webhook configuration of `kind` with one webhook on pod creates labelled
/// `webhook=<label>`, calling `url`.
fn configuration(
    kind: &str,
    name: &str,
    url: &str,
    ca_pem: &str,
    label: &str,
    extra: Value,
) -> Value {
    let mut hook = json!({
        "name": format!("{name}.test.logbook.dev"),
        "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "objectSelector": {"matchLabels": {"webhook": label}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(h), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": [hook]})
}

fn labelled(name: &str, label: &str) -> Value {
    pod(
        name,
        json!({"metadata": {"name": name, "labels": {"webhook": label}}}),
    )
}

#[tokio::test]
async fn admission_webhooks_deny_mutate_and_follow_their_failure_policy_and_timeout() {
    within(TIMEOUT_SECONDS * 2, "admission webhooks", async {
        let s = Server::start_api_only().expect("server");
        let c = s.client().await.expect("client");
        let hook = start_webhook().await;
        let base = format!("https://{}", hook.addr);
        let validating = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
        let mutating = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
        let pods = "/api/v1/namespaces/default/pods";

        // A validating webhook denies: its status and message, prefixed with its name.
        call_json(&c, "POST", validating, configuration("ValidatingWebhookConfiguration", "deny",
            &format!("{base}/deny"), &hook.ca_pem, "deny", json!({}))).await.expect("config");
        let e = call_json(&c, "POST", pods, labelled("denied", "deny")).await.expect_err("denied");
        let st = status_of(&e);
        assert_eq!(st.code, 403, "{st:?}");
        assert_eq!(
            st.message,
            "admission webhook \"deny.test.logbook.dev\" denied the request: pods labelled webhook=deny are not welcome, logbook-admin"
        );
        call_json(&c, "POST", pods, labelled("unselected", "other"))
            .await
            .expect("the objectSelector leaves other pods alone");

        // A mutating webhook's JSONPatch lands in the stored object.
        call_json(&c, "POST", mutating, configuration("MutatingWebhookConfiguration", "mutate",
            &format!("{base}/mutate"), &hook.ca_pem, "mutate", json!({}))).await.expect("config");
        let created = call_json(&c, "POST", pods, labelled("mutated", "mutate")).await.expect("mutated");
        assert_eq!(created["metadata"]["labels"]["mutated"], "yes", "{created}");
        let read = call_json(&c, "GET", &format!("{pods}/mutated"), Value::Null).await.expect("get");
        assert_eq!(read["metadata"]["labels"]["mutated"], "yes");

        // Unreachable: Ignore admits, Fail refuses with 500.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let unreachable = format!("https://127.0.0.1:{closed}/");
        call_json(&c, "POST", validating, configuration("ValidatingWebhookConfiguration", "ignore",
            &unreachable, &hook.ca_pem, "ignore", json!({"failurePolicy": "Ignore"}))).await.expect("config");
        call_json(&c, "POST", pods, labelled("ignored", "ignore"))
            .await
            .expect("failurePolicy Ignore admits when the webhook is unreachable");
        call_json(&c, "POST", validating, configuration("ValidatingWebhookConfiguration", "fail",
            &unreachable, &hook.ca_pem, "fail", json!({"failurePolicy": "Fail"}))).await.expect("config");
        let e = call_json(&c, "POST", pods, labelled("failed", "fail")).await.expect_err("Fail refuses");
        let st = status_of(&e);
        assert_eq!((st.code, st.reason.as_str()), (500, "InternalError"), "{st:?}");
        assert!(
            st.message.contains("failed calling webhook \"fail.test.logbook.dev\""),
            "{}",
            st.message
        );

        // A webhook slower than its timeoutSeconds fails the call within about that time.
        call_json(&c, "POST", validating, configuration("ValidatingWebhookConfiguration", "slow",
            &format!("{base}/slow"), &hook.ca_pem, "slow", json!({"timeoutSeconds": 1}))).await.expect("config");
        let started = std::time::Instant::now();
        let e = call_json(&c, "POST", pods, labelled("slow", "slow")).await.expect_err("timed out");
        let took = started.elapsed();
        let st = status_of(&e);
        assert_eq!(st.code, 500, "{st:?}");
        assert!(st.message.contains("deadline"), "{}", st.message);
        assert!(took < Duration::from_millis(2_900), "the 1 s timeout was not honoured: {took:?}");

        // Dry-run requests reach webhooks without side effects, and are refused by them too.
        let e = call_json(&c, "POST", &format!("{pods}?dryRun=All"), labelled("dry", "deny"))
            .await
            .expect_err("dry run is admitted like a real create");
        assert_eq!(status_of(&e).code, 403);
        // A webhook reached through a Service (its Endpoints' address) sees DELETE with the
        // old object.
        call_json(&c, "POST", "/api/v1/namespaces/default/services", json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.addr.port()}]}}))
            .await
            .expect("service");
        call_json(&c, "POST", "/api/v1/namespaces/default/endpoints", json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "https", "port": hook.addr.port()}]}]}))
            .await
            .expect("endpoints");
        let mut by_service = configuration("ValidatingWebhookConfiguration", "keep", "", &hook.ca_pem, "keep", json!({}));
        by_service["webhooks"][0]["clientConfig"] = json!({
            "service": {"namespace": "default", "name": "hook", "path": "/deny-delete"},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&hook.ca_pem)});
        by_service["webhooks"][0]["rules"] = json!([{"operations": ["DELETE"], "apiGroups": [""],
            "apiVersions": ["v1"], "resources": ["configmaps"]}]);
        call_json(&c, "POST", validating, by_service).await.expect("config");
        let cms = "/api/v1/namespaces/default/configmaps";
        call_json(&c, "POST", cms, json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kept", "labels": {"webhook": "keep"}}}))
            .await
            .expect("a create is not matched by a DELETE rule");
        let e = call_json(&c, "DELETE", &format!("{cms}/kept"), Value::Null).await.expect_err("refused");
        let st = status_of(&e);
        assert_eq!(st.code, 403, "{st:?}");
        assert_eq!(st.message, "admission webhook \"keep.test.logbook.dev\" denied the request: DELETE of kept refused");
        call_json(&c, "GET", &format!("{cms}/kept"), Value::Null).await.expect("still there");

        // A configuration write is never sent to webhooks: deleting the failing one works.
        call_json(&c, "DELETE", &format!("{validating}/fail"), Value::Null).await.expect("delete");
        call_json(&c, "POST", pods, labelled("after", "fail")).await.expect("admitted once it is gone");
    })
    .await;
}
