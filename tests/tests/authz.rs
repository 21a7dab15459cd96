//! Who may do what (issue 9): authentication (client certificates, ServiceAccount tokens,
//! bootstrap tokens, anonymous), RBAC with the default roles, the node authorizer, the
//! review APIs behind `kubectl auth can-i` and `kubectl auth whoami`, impersonation, and
//! OIDC discovery — all against the real binary, with real clients.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use logbook_e2e::{Server, call_json, json_request, within};
use serde_json::{Value, json};

/// A kube client from a kubeconfig file.
async fn client_from(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.read_timeout = Some(std::time::Duration::from_secs(30));
    Ok(kube::Client::try_from(cfg)?)
}

/// The server's kubeconfig with its user replaced by `user` (YAML lines of a kubeconfig
/// `user:` block, already indented by four spaces); written to `dir/name.kubeconfig`.
fn kubeconfig_as(s: &Server, dir: &Path, name: &str, user: &[String]) -> Result<PathBuf> {
    let admin = std::fs::read_to_string(s.kubeconfig())?;
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("no server in the kubeconfig")?;
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .context("no CA in the kubeconfig")?;
    let user_block = if user.is_empty() {
        "  user: {}\n".to_string()
    } else {
        format!("  user:\n{}\n", user.join("\n"))
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n{user_block}contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn token_user(token: &str) -> Vec<String> {
    vec![format!("    token: {token}")]
}

/// `logbook user add` into `dir`.
fn add_user(s: &Server, dir: &Path, name: &str, groups: &[&str]) -> Result<PathBuf> {
    let out_path = dir.join(format!("{}.kubeconfig", name.replace(':', "_")));
    let mut args = vec!["user", "add", name];
    for g in groups {
        args.extend(["--group", g]);
    }
    let out_s = out_path.to_string_lossy().to_string();
    args.extend(["--out", &out_s]);
    let out = s.run_tool(&args)?;
    if !out.status.success() {
        bail!("user add: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out_path)
}

/// A client certificate for `cn` signed by a CA of its own (not the cluster's), made with
/// OpenSSL; returns the kubeconfig user lines.
fn foreign_cert_user(dir: &Path, cn: &str) -> Result<Vec<String>> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "fca.key",
        "-out",
        "fca.crt",
        "-subj",
        "/CN=foreign-ca",
        "-days",
        "2",
    ])?;
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "fu.key",
        "-out",
        "fu.csr",
        "-subj",
        &format!("/CN={cn}/O=system:masters"),
    ])?;
    std::fs::write(
        dir.join("fu.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "fu.csr",
        "-CA",
        "fca.crt",
        "-CAkey",
        "fca.key",
        "-CAcreateserial",
        "-out",
        "fu.crt",
        "-days",
        "1",
        "-extfile",
        "fu.ext",
    ])?;
    let b64 = |f: &str| -> Result<String> {
        let out = Command::new("base64")
            .args(["-w0", f])
            .current_dir(dir)
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    };
    Ok(vec![
        format!("    client-certificate-data: {}", b64("fu.crt")?),
        format!("    client-key-data: {}", b64("fu.key")?),
    ])
}

/// The HTTP status a request gets.
async fn status(c: &kube::Client, method: &str, path: &str, body: Value) -> Result<u16> {
    let req = json_request(method, path, "application/json", &body);
    let resp = c.send(req.map(kube::client::Body::from)).await?;
    Ok(resp.status().as_u16())
}

/// A token for `sa` in `ns` from the TokenRequest API.
async fn token_for(admin: &kube::Client, ns: &str, sa: &str, spec: Value) -> Result<String> {
    let tr = call_json(
        admin,
        "POST",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
    )
    .await?;
    tr["status"]["token"]
        .as_str()
        .map(str::to_string)
        .context("no token in the TokenRequest's status")
}

/// `kubectl auth can-i` as the user of `kubeconfig`: yes or no.
fn can_i(kubeconfig: &Path, args: &[&str]) -> Result<bool> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.as_str() {
        "yes" => Ok(true),
        t if t == "no" || t.starts_with("no - ") => Ok(false),
        _ => bail!(
            "kubectl auth can-i {args:?}: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_answers_exactly_401_403_or_2xx() -> Result<()> {
    within(240, "the authorization matrix did not finish", async {
        let s = Server::start_api_only()?;
        let dir = tempfile::tempdir()?;
        let admin = s.client().await?;
        s.kubectl(&["create", "namespace", "team"])?;
        s.kubectl(&["create", "serviceaccount", "bot", "-n", "team"])?;
        s.kubectl(&["create", "serviceaccount", "gone", "-n", "team"])?;
        s.kubectl(&["create", "rolebinding", "bot-view", "-n", "team", "--clusterrole=view", "--serviceaccount=team:bot"])?;
        s.kubectl(&["create", "rolebinding", "gone-view", "-n", "team", "--clusterrole=view", "--serviceaccount=team:gone"])?;
        s.kubectl(&["create", "rolebinding", "bob-edit", "-n", "team", "--clusterrole=edit", "--user=bob"])?;
        s.kubectl(&["create", "configmap", "cm", "-n", "team", "--from-literal=k=v"])?;
        s.kubectl(&["create", "secret", "generic", "sec", "-n", "team", "--from-literal=k=v"])?;

        let bot = token_for(&admin, "team", "bot", json!({})).await?;
        let wrong_aud = token_for(&admin, "team", "bot", json!({"audiences": ["vault"]})).await?;
        let gone = token_for(&admin, "team", "gone", json!({})).await?;
        s.kubectl(&["delete", "serviceaccount", "gone", "-n", "team"])?;
        let expired = expired_token(&s, "team", "bot")?;

        let identities: Vec<(&str, PathBuf)> = vec![
            ("anonymous", kubeconfig_as(&s, dir.path(), "anon", &[])?),
            ("expired token", kubeconfig_as(&s, dir.path(), "expired", &token_user(&expired))?),
            ("wrong audience", kubeconfig_as(&s, dir.path(), "aud", &token_user(&wrong_aud))?),
            ("deleted serviceaccount", kubeconfig_as(&s, dir.path(), "gone", &token_user(&gone))?),
            ("another CA", kubeconfig_as(&s, dir.path(), "foreign", &foreign_cert_user(dir.path(), "mallory")?)?),
            ("alice (no bindings)", add_user(&s, dir.path(), "alice", &[])?),
            ("bob (edit in team)", add_user(&s, dir.path(), "bob", &[])?),
            ("bot token (view in team)", kubeconfig_as(&s, dir.path(), "bot", &token_user(&bot))?),
        ];
        // (verb, method, path, body): what each identity is asked to do.
        let requests: Vec<(&str, &str, &str, &str, String, Value)> = vec![
            ("list", "pods", "GET", "team", "/api/v1/namespaces/team/pods".into(), Value::Null),
            ("get", "configmaps", "GET", "team", "/api/v1/namespaces/team/configmaps/cm".into(), Value::Null),
            ("get", "secrets", "GET", "team", "/api/v1/namespaces/team/secrets/sec".into(), Value::Null),
            ("create", "configmaps", "POST", "team", "/api/v1/namespaces/team/configmaps".into(),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "m-"}})),
            ("list", "pods", "GET", "default", "/api/v1/namespaces/default/pods".into(), Value::Null),
            ("list", "nodes", "GET", "", "/api/v1/nodes".into(), Value::Null),
            ("create", "rolebindings", "POST", "team", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings".into(),
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"generateName": "x-"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                    "subjects": [{"kind": "User", "name": "bob"}]})),
        ];
        let expected = |who: &str, verb: &str, res: &str, ns: &str| -> u16 {
            match who {
                "anonymous" | "expired token" | "wrong audience" | "deleted serviceaccount" | "another CA" => 401,
                "alice (no bindings)" => 403,
                "bob (edit in team)" => {
                    if ns == "team" && res != "rolebindings" { if verb == "create" { 201 } else { 200 } } else { 403 }
                }
                _ => {
                    // view: reads in team, except Secrets.
                    if ns == "team" && matches!(verb, "get" | "list") && res != "secrets" { 200 } else { 403 }
                }
            }
        };
        let mut failures = Vec::new();
        let mut checked = 0;
        for (who, kc) in &identities {
            let c = client_from(kc).await?;
            for (verb, res, method, ns, path, body) in &requests {
                let got = status(&c, method, path, body.clone()).await?;
                let want = expected(who, verb, res, ns);
                checked += 1;
                if got != want {
                    failures.push(format!("{who}: {method} {path}: got {got}, want {want}"));
                }
                // kubectl auth can-i agrees for authenticated identities.
                if want != 401 {
                    let mut args = vec![*verb, *res];
                    if !ns.is_empty() {
                        args.extend(["-n", ns]);
                    }
                    let yes = can_i(kc, &args)?;
                    if yes != (want < 300) {
                        failures.push(format!("{who}: kubectl auth can-i {args:?} said {yes}, the request got {got}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{} of {checked} checks failed:\n{}", failures.len(), failures.join("\n"));
        Ok(())
    })
    .await
}

/// A token for `ns/sa` that expired a minute ago, signed with the server's own key
/// (`pki/sa.key`, read from the data directory) by OpenSSL — so only the expiry is wrong.
fn expired_token(s: &Server, ns: &str, sa: &str) -> Result<String> {
    let uid_out = s.kubectl(&[
        "get",
        "serviceaccount",
        sa,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    let now = jiff::Timestamp::now().as_second();
    let b64url = |b: &[u8]| -> Result<String> {
        let mut child = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(b)?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8(out.stdout)?
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_"))
    };
    let header = b64url(br#"{"alg":"ES256"}"#)?;
    let claims = json!({"iss": "https://kubernetes.default.svc.cluster.local",
        "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": now - 60, "iat": now - 3700,
        "nbf": now - 3700, "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid_out.trim()}}});
    let payload = b64url(&serde_json::to_vec(&claims)?)?;
    let signing_input = format!("{header}.{payload}");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in"), &signing_input)?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(s.data_dir.join("pki/sa.key"))
        .arg(dir.path().join("in"))
        .output()?;
    if !out.status.success() {
        bail!("openssl dgst: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sig = der_to_jws(&out.stdout).context("an ECDSA signature in DER")?;
    Ok(format!("{signing_input}.{}", b64url(&sig)?))
}

/// An ECDSA signature in DER (SEQUENCE of two INTEGERs) as JWS wants it: r || s, 32 bytes
/// each.
fn der_to_jws(der: &[u8]) -> Option<Vec<u8>> {
    let mut i = 2usize;
    if der.first()? != &0x30 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..2 {
        if der.get(i)? != &0x02 {
            return None;
        }
        let len = *der.get(i + 1)? as usize;
        let int = der.get(i + 2..i + 2 + len)?;
        let int = if int.len() > 32 {
            &int[int.len() - 32..]
        } else {
            int
        };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_and_writes_only_what_is_its_own() -> Result<()> {
    within(120, "the node authorizer checks did not finish", async {
        let s = Server::start_api_only()?;
        let dir = tempfile::tempdir()?;
        let admin = s.client().await?;
        for n in ["n1", "n2"] {
            call_json(&admin, "POST", "/api/v1/nodes", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})).await?;
        }
        s.kubectl(&["create", "secret", "generic", "mine", "--from-literal=k=v"])?;
        s.kubectl(&["create", "secret", "generic", "theirs", "--from-literal=k=v"])?;
        let mut p1 = pod("p1", Some("n1"));
        p1["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "mine"}}]);
        call_json(&admin, "POST", "/api/v1/namespaces/default/pods", p1).await?;
        let mut p2 = pod("p2", Some("n2"));
        p2["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "theirs"}}]);
        call_json(&admin, "POST", "/api/v1/namespaces/default/pods", p2).await?;

        let kc = add_user(&s, dir.path(), "system:node:n1", &["system:nodes"])?;
        let n1 = client_from(&kc).await?;
        let patch = |path: &str| {
            let req = http::Request::builder()
                .method("PATCH")
                .uri(path)
                .header("content-type", "application/merge-patch+json")
                .body(serde_json::to_vec(&json!({"metadata": {"labels": {"touched": "yes"}}})).unwrap_or_default())
                .expect("a request");
            req.map(kube::client::Body::from)
        };
        let cases: Vec<(&str, u16)> = vec![
            ("GET /api/v1/namespaces/default/pods/p1", 200),
            ("GET /api/v1/namespaces/default/pods/p2", 403),
            ("GET /api/v1/namespaces/default/pods", 403),
            ("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn1", 200),
            ("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn2", 403),
            ("GET /api/v1/namespaces/default/secrets/mine", 200),
            ("GET /api/v1/namespaces/default/secrets/theirs", 403),
            ("GET /api/v1/nodes/n2", 200),
            ("GET /api/v1/namespaces/kube-system/configmaps", 403),
        ];
        let mut failures = Vec::new();
        for (req, want) in &cases {
            let (method, path) = req.split_once(' ').unwrap_or(("GET", req));
            let got = status(&n1, method, path, Value::Null).await?;
            if got != *want {
                failures.push(format!("{req}: got {got}, want {want}"));
            }
        }
        for (path, want) in [("/api/v1/nodes/n1", 200u16), ("/api/v1/nodes/n2", 403)] {
            let got = n1.send(patch(path)).await?.status().as_u16();
            if got != want {
                failures.push(format!("PATCH {path}: got {got}, want {want}"));
            }
        }
        let lease = |n: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n}});
        for (n, want) in [("n2", 403u16), ("n1", 201)] {
            let got = status(&n1, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease(n)).await?;
            if got != want {
                failures.push(format!("create Lease {n}: got {got}, want {want}"));
            }
        }
        let got = status(&n1, "POST", "/api/v1/nodes", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3"}})).await?;
        if got != 403 {
            failures.push(format!("create Node n3 as n1: got {got}, want 403"));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // kubectl agrees, including on the field selector.
        assert!(!can_i(&kc, &["list", "pods", "-A"])?);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_and_are_reviewed_and_discoverable() -> Result<()> {
    within(120, "the token checks did not finish", async {
        let s = Server::start_api_only()?;
        let dir = tempfile::tempdir()?;
        let admin = s.client().await?;
        s.kubectl(&["create", "serviceaccount", "robot"])?;
        // kubectl create token is the TokenRequest API.
        let token = s.kubectl(&["create", "token", "robot", "--duration=15m"])?.trim().to_string();
        let kc = kubeconfig_as(&s, dir.path(), "robot", &token_user(&token))?;
        let who = Command::new("kubectl").arg("--kubeconfig").arg(&kc).args(["auth", "whoami", "-o", "json"]).output()?;
        let who: Value = serde_json::from_slice(&who.stdout).with_context(|| String::from_utf8_lossy(&who.stderr).to_string())?;
        assert_eq!(who["status"]["userInfo"]["username"], json!("system:serviceaccount:default:robot"));
        let groups = who["status"]["userInfo"]["groups"].to_string();
        assert!(groups.contains("system:serviceaccounts:default") && groups.contains("system:authenticated"), "{groups}");

        let review = call_json(&admin, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})).await?;
        assert_eq!(review["status"]["authenticated"], json!(true), "{review}");
        assert_eq!(review["status"]["user"]["username"], json!("system:serviceaccount:default:robot"));
        let bad = call_json(&admin, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": format!("{token}x")}})).await?;
        assert_eq!(bad["status"]["authenticated"], json!(false), "{bad}");

        // OIDC discovery, readable by service accounts (system:service-account-issuer-discovery).
        let robot = client_from(&kc).await?;
        let disco = call_json(&robot, "GET", "/.well-known/openid-configuration", Value::Null).await?;
        assert_eq!(disco["issuer"], json!("https://kubernetes.default.svc.cluster.local"));
        let jwks = call_json(&robot, "GET", "/openid/v1/jwks", Value::Null).await?;
        let kid = jwks["keys"][0]["kid"].as_str().context("a key id")?.to_string();
        let header = token.split('.').next().context("a JWT header")?;
        let header = String::from_utf8(base64url_decode(header)?)?;
        assert!(header.contains(&kid), "the token's header {header} names the JWKS key {kid}");

        // A token bound to a pod dies with the pod.
        call_json(&admin, "POST", "/api/v1/namespaces/default/pods", pod("holder", None)).await?;
        let bound = s.kubectl(&["create", "token", "robot", "--bound-object-kind=Pod", "--bound-object-name=holder"])?.trim().to_string();
        let bkc = kubeconfig_as(&s, dir.path(), "bound", &token_user(&bound))?;
        let bc = client_from(&bkc).await?;
        assert_eq!(status(&bc, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})).await?, 201);
        s.kubectl(&["delete", "pod", "holder", "--grace-period=0", "--force"])?;
        assert_eq!(status(&bc, "GET", "/api/v1/namespaces/default/pods", Value::Null).await?, 401);

        // A TokenRequest below ten minutes is invalid; one for a missing account is 404.
        let short = admin.send(json_request("POST", "/api/v1/namespaces/default/serviceaccounts/robot/token", "application/json",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 60}})).map(kube::client::Body::from)).await?;
        assert_eq!(short.status().as_u16(), 422);
        assert_eq!(status(&admin, "POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})).await?, 404);
        Ok(())
    })
    .await
}

fn base64url_decode(s: &str) -> Result<Vec<u8>> {
    let mut t = s.replace('-', "+").replace('_', "/");
    while !t.len().is_multiple_of(4) {
        t.push('=');
    }
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(t.as_bytes())?;
    Ok(child.wait_with_output()?.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_impersonation_and_anonymous_access_follow_kube() -> Result<()> {
    within(120, "the checks did not finish", async {
        let s = Server::start_with(&[
            "--no-controllers",
            "--no-scheduler",
            "--anonymous-auth=true",
        ])?;
        let dir = tempfile::tempdir()?;
        // A bootstrap token.
        s.kubectl(&[
            "create",
            "secret",
            "generic",
            "bootstrap-token-abcdef",
            "-n",
            "kube-system",
            "--type=bootstrap.kubernetes.io/token",
            "--from-literal=token-id=abcdef",
            "--from-literal=token-secret=0123456789abcdef",
            "--from-literal=usage-bootstrap-authentication=true",
            "--from-literal=auth-extra-groups=system:bootstrappers:workers",
        ])?;
        let kc = kubeconfig_as(
            &s,
            dir.path(),
            "boot",
            &token_user("abcdef.0123456789abcdef"),
        )?;
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["auth", "whoami", "-o", "json"])
            .output()?;
        let who: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
        assert_eq!(
            who["status"]["userInfo"]["username"],
            json!("system:bootstrap:abcdef")
        );
        assert!(
            who["status"]["userInfo"]["groups"]
                .to_string()
                .contains("system:bootstrappers:workers")
        );
        let wrong = kubeconfig_as(
            &s,
            dir.path(),
            "boot-wrong",
            &token_user("abcdef.0123456789abcdee"),
        )?;
        assert_eq!(
            status(&client_from(&wrong).await?, "GET", "/api", Value::Null).await?,
            401
        );

        // Impersonation: the admin may, alice may not.
        assert!(!can_i(&s.kubeconfig(), &["get", "pods", "--as", "alice"])?);
        s.kubectl(&[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
        ])?;
        assert!(can_i(&s.kubeconfig(), &["get", "pods", "--as", "alice"])?);
        let alice = add_user(&s, dir.path(), "alice", &[])?;
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&alice)
            .args(["get", "pods", "--as", "bob"])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cannot impersonate resource \"users\""),
            "{err}"
        );

        // Anonymous (enabled here): public info yes, resources no.
        let anon = client_from(&kubeconfig_as(&s, dir.path(), "anon", &[])?).await?;
        assert_eq!(status(&anon, "GET", "/version", Value::Null).await?, 200);
        assert_eq!(
            status(&anon, "GET", "/api/v1/namespaces/default/pods", Value::Null).await?,
            403
        );
        assert_eq!(status(&anon, "GET", "/healthz", Value::Null).await?, 200);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roles_aggregate_and_can_i_list_reports_the_rules() -> Result<()> {
    within(120, "the checks did not finish", async {
        let s = Server::start_api_only()?;
        let dir = tempfile::tempdir()?;
        // A new role labelled for aggregation joins `view`'s rules.
        let crd_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get", "list"], "apiGroups": ["example.com"], "resources": ["widgets"]}]});
        call_json(&s.client().await?, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", crd_role).await?;
        s.kubectl(&["create", "rolebinding", "carol-view", "--clusterrole=view", "--user=carol"])?;
        let carol = add_user(&s, dir.path(), "carol", &[])?;
        logbook_e2e::eventually(20, "view aggregates widgets-view", || {
            let v = s.kubectl_json(&["get", "clusterrole", "view", "-o", "json"])?;
            Ok(v["rules"].to_string().contains("widgets"))
        })
        .await;
        let sar = call_json(&s.client().await?, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "carol", "resourceAttributes": {"verb": "list", "group": "example.com", "resource": "widgets", "namespace": "default"}}})).await?;
        assert_eq!(sar["status"]["allowed"], json!(true), "{sar}");
        // admin holds edit's and view's rules through two levels of aggregation.
        let admin_role = s.kubectl_json(&["get", "clusterrole", "admin", "-o", "json"])?;
        assert!(admin_role["rules"].to_string().contains("widgets"), "{admin_role}");
        let list = Command::new("kubectl").arg("--kubeconfig").arg(&carol).args(["auth", "can-i", "--list"]).output()?;
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(text.contains("widgets.example.com") && text.contains("selfsubjectaccessreviews"), "{text}");
        assert!(!text.contains("secrets"), "view does not read secrets:\n{text}");
        Ok(())
    })
    .await
}
