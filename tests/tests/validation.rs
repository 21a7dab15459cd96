//! Defaulting and validation of the built-in kinds, against the real binary: what kubectl
//! shows after a create (the defaults kube-apiserver fills in), and the 422 answers to
//! invalid objects and forbidden updates, with kube-apiserver's field paths and wording.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use anyhow::Result;
use logbook_e2e::Server;
use serde_json::{Value, json};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

/// Runs kubectl expecting failure; returns its stderr.
fn kubectl_fails(s: &Server, args: &[&str]) -> String {
    let out = s.kubectl_output("kubectl", args).expect("kubectl runs");
    assert!(
        !out.status.success(),
        "kubectl {} succeeded: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn req(method: &str, path: &str, content_type: &str, body: &Value) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).expect("json"))
        .expect("request")
}

/// The Status of a request expected to fail.
async fn status_of(c: &kube::Client, r: http::Request<Vec<u8>>) -> kube::core::Status {
    match c.request_text(r).await {
        Err(kube::Error::Api(s)) => *s,
        Err(e) => panic!("expected a Status error, got {e}"),
        Ok(t) => panic!("expected a failure, got {t}"),
    }
}

/// `(field, message)` of each cause of a 422.
fn causes(s: &kube::core::Status) -> Vec<(String, String)> {
    s.details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

const BAD_NAME_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: Web_Server
    image: nginx:1.25
"#;

const NO_IMAGE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
"#;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx:1.25
    ports:
    - containerPort: 80
"#;

#[test]
fn kubectl_create_of_invalid_pods_fails_naming_the_field() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;

    let f = write(dir.path(), "bad-name.yaml", BAD_NAME_POD);
    let err = kubectl_fails(&s, &["create", "-f", &f]);
    assert!(
        err.contains("spec.containers[0].name: Invalid value: \"Web_Server\"")
            && err.contains("a lowercase RFC 1123 label"),
        "{err}"
    );

    let f = write(dir.path(), "no-image.yaml", NO_IMAGE_POD);
    let err = kubectl_fails(&s, &["create", "-f", &f]);
    assert!(
        err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );

    // Nothing was stored.
    let err = kubectl_fails(&s, &["get", "pod", "web"]);
    assert!(err.contains("NotFound"), "{err}");
    Ok(())
}

#[test]
fn kubectl_get_shows_the_defaults_kube_apiserver_fills_in() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    let f = write(dir.path(), "pod.yaml", POD);
    assert_eq!(s.kubectl(&["create", "-f", &f])?.trim(), "pod/web created");

    let yaml = s.kubectl(&["get", "pod", "web", "-o", "yaml"])?;
    for line in [
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "schedulerName: default-scheduler",
        "terminationGracePeriodSeconds: 30",
        "securityContext: {}",
        "enableServiceLinks: true",
        "terminationMessagePath: /dev/termination-log",
        "terminationMessagePolicy: File",
        "imagePullPolicy: IfNotPresent",
        "protocol: TCP",
        "resources: {}",
    ] {
        assert!(yaml.contains(line), "{line:?} missing from:\n{yaml}");
    }

    // A Deployment, a Service and a Secret, through kubectl's own generators.
    s.kubectl(&["create", "deployment", "app", "--image=nginx"])?;
    let got = s.kubectl(&[
        "get",
        "deploy",
        "app",
        "-o",
        "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit} {.spec.progressDeadlineSeconds} {.spec.template.spec.containers[0].imagePullPolicy}",
    ])?;
    assert_eq!(got, "1 RollingUpdate 25% 10 600 Always");
    s.kubectl(&["create", "service", "clusterip", "app", "--tcp=80:8080"])?;
    let got = s.kubectl(&[
        "get",
        "svc",
        "app",
        "-o",
        "jsonpath={.spec.type} {.spec.sessionAffinity} {.spec.ports[0].protocol} {.spec.ipFamilyPolicy} {.spec.ipFamilies[0]} {.spec.internalTrafficPolicy}",
    ])?;
    assert_eq!(got, "ClusterIP None TCP SingleStack IPv4 Cluster");
    s.kubectl(&["create", "secret", "generic", "creds", "--from-literal=a=b"])?;
    assert_eq!(
        s.kubectl(&["get", "secret", "creds", "-o", "jsonpath={.type}"])?,
        "Opaque"
    );
    assert_eq!(
        s.kubectl(&[
            "get",
            "ns",
            "default",
            "-o",
            "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name} {.spec.finalizers[0]}"
        ])?,
        "default kubernetes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_whose_selector_misses_its_template_is_a_422() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    let st = status_of(
        &c,
        req(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            "application/json",
            &d,
        ),
    )
    .await;
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        st.message,
        "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
    );
    assert_eq!(
        causes(&st),
        vec![(
            "spec.template.metadata.labels".to_string(),
            "Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".to_string()
        )]
    );
    let details = st.details.as_ref().unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("web", "apps", "Deployment")
    );

    // dryRun=All defaults and validates too, and answers with the defaulted object.
    let mut good = d.clone();
    good["spec"]["selector"]["matchLabels"]["app"] = json!("web");
    let dry: Value = serde_json::from_str(
        &c.request_text(req(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments?dryRun=All",
            "application/json",
            &good,
        ))
        .await?,
    )?;
    assert_eq!(
        (
            dry["spec"]["replicas"].clone(),
            dry["spec"]["template"]["spec"]["restartPolicy"].clone()
        ),
        (json!(1), json!("Always"))
    );
    let st = status_of(
        &c,
        req(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments?dryRun=All",
            "application/json",
            &d,
        ),
    )
    .await;
    assert_eq!(st.code, 422);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_deployments_selector_is_refused_as_immutable() -> Result<()> {
    let s = Server::start_api_only()?;
    let c = s.client().await?;
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "tier": "a"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    c.request_text(req(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        &d,
    ))
    .await?;
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let patch = json!({"spec": {"selector": {"matchLabels": {"tier": "a"}}}});
    for ct in [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        let st = status_of(&c, req("PATCH", path, ct, &patch)).await;
        assert_eq!(st.code, 422, "{ct}: {st:?}");
        assert!(
            causes(&st).contains(&(
                "spec.selector".to_string(),
                "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"a\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()
            )) || causes(&st).contains(&(
                "spec.selector".to_string(),
                "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"tier\":\"a\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()
            )),
            "{ct}: {:?}",
            causes(&st)
        );
    }
    let json_patch =
        json!([{"op": "replace", "path": "/spec/selector/matchLabels/app", "value": "api"}]);
    let st = status_of(
        &c,
        req("PATCH", path, "application/json-patch+json", &json_patch),
    )
    .await;
    assert_eq!(st.code, 422);
    assert!(st.message.contains("field is immutable"), "{}", st.message);

    // The template may change; the scale subresource and /status still work.
    let ok = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    let now: Value = serde_json::from_str(
        &c.request_text(req(
            "PATCH",
            path,
            "application/strategic-merge-patch+json",
            &ok,
        ))
        .await?,
    )?;
    assert_eq!(now["spec"]["replicas"], 3);
    let st = status_of(
        &c,
        req(
            "PATCH",
            &format!("{path}/scale"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": -1}}),
        ),
    )
    .await;
    assert_eq!(st.code, 422);
    let status: Value = serde_json::from_str(
        &c.request_text(req(
            "PATCH",
            &format!("{path}/status"),
            "application/merge-patch+json",
            &json!({"status": {"replicas": 3}}),
        ))
        .await?,
    )?;
    assert_eq!(status["status"]["replicas"], 3);
    Ok(())
}

#[test]
fn a_pods_image_may_change_but_not_its_container_names() -> Result<()> {
    let s = Server::start_api_only()?;
    let dir = tempfile::tempdir()?;
    let f = write(dir.path(), "pod.yaml", POD);
    s.kubectl(&["create", "-f", &f])?;

    s.kubectl(&["set", "image", "pod/web", "web=nginx:1.27"])?;
    assert_eq!(
        s.kubectl(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ])?,
        "nginx:1.27"
    );
    // The original manifest replaces cleanly: defaults fill in what it leaves out.
    s.kubectl(&["replace", "-f", &f])?;

    let renamed = write(
        dir.path(),
        "renamed.yaml",
        &POD.replace("- name: web", "- name: server"),
    );
    let err = kubectl_fails(&s, &["replace", "-f", &renamed]);
    assert!(
        err.contains("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"),
        "{err}"
    );
    let err = kubectl_fails(
        &s,
        &[
            "patch",
            "pod",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/containers/0/name","value":"server"}]"#,
        ],
    );
    assert!(err.contains("pod updates may not change fields"), "{err}");
    Ok(())
}
