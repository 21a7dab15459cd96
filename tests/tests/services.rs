//! Service address allocation as users meet it: the `kubernetes` Service, ClusterIPs unique
//! under concurrent creates and recorded as IPAddress objects, NodePorts in range, requested
//! addresses and ports honoured or refused with 422, everything released on delete, and a
//! full range answered with an error instead of a duplicate.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::collections::HashSet;

use anyhow::Result;
use logbook_e2e::{Server, call_json as call, within};
use serde_json::{Value, json};

fn req(method: &str, path: &str, body: &Value) -> http::Request<Vec<u8>> {
    logbook_e2e::json_request(method, path, "application/json", body)
}

async fn fails(c: &kube::Client, method: &str, path: &str, body: Value) -> (u16, String) {
    match c.request_text(req(method, path, &body)).await {
        Err(kube::Error::Api(s)) => (s.code, s.message.clone()),
        other => panic!("{method} {path} should fail, got {other:?}"),
    }
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

const SVCS: &str = "/api/v1/namespaces/default/services";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_unique_addresses_and_ports_released_on_delete() -> Result<()> {
    within(120, "a service allocation did not finish", async {
        let s = Server::start()?;
        let c = s.client_without_retries().await?;

        // The kubernetes Service, as every cluster has it.
        let k = call(&c, "GET", &format!("{SVCS}/kubernetes"), Value::Null).await?;
        assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(k["spec"]["ports"][0]["port"], 443);
        assert_eq!(k["spec"]["ports"][0]["targetPort"], s.port);
        let ep = call(&c, "GET", "/api/v1/namespaces/default/endpoints/kubernetes", Value::Null).await?;
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");

        // 40 concurrent creates: 40 different addresses, each an IPAddress naming its Service.
        let mut tasks = Vec::new();
        for i in 0..40 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                call(&c, "POST", SVCS, svc(&format!("s{i}"), json!({"ports": [{"port": 80}]}))).await
            }));
        }
        let mut ips = HashSet::new();
        for t in tasks {
            let created = t.await??;
            let ip = created["spec"]["clusterIP"].as_str().unwrap().to_string();
            assert!(ip.starts_with("10."), "{ip}");
            assert_eq!(created["spec"]["clusterIPs"][0], ip.as_str());
            ips.insert(ip);
        }
        assert_eq!(ips.len(), 40, "every Service got its own address");
        let ipa = call(&c, "GET", &format!("/apis/networking.k8s.io/v1/ipaddresses/{}", ips.iter().next().unwrap()), Value::Null).await?;
        assert_eq!(ipa["spec"]["parentRef"]["resource"], "services");

        // A requested address: honoured once, then 422; outside the range: 422.
        let mine = call(&c, "POST", SVCS, svc("mine", json!({"clusterIP": "10.100.0.10", "ports": [{"port": 80}]}))).await?;
        assert_eq!(mine["spec"]["clusterIP"], "10.100.0.10");
        let (code, msg) = fails(&c, "POST", SVCS, svc("again", json!({"clusterIP": "10.100.0.10", "ports": [{"port": 80}]}))).await;
        assert_eq!(code, 422, "{msg}");
        assert!(msg.contains("provided IP is already allocated"), "{msg}");
        let (code, msg) = fails(&c, "POST", SVCS, svc("outside", json!({"clusterIP": "192.168.0.1", "ports": [{"port": 80}]}))).await;
        assert_eq!(code, 422, "{msg}");
        assert!(msg.contains("not in the valid range"), "{msg}");
        let (code, _) = fails(&c, "GET", &format!("{SVCS}/again"), Value::Null).await;
        assert_eq!(code, 404, "a refused Service is not stored");

        // Headless and ExternalName Services take no address.
        let headless = call(&c, "POST", SVCS, svc("headless", json!({"clusterIP": "None", "ports": [{"port": 80}]}))).await?;
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let ext = call(&c, "POST", SVCS, svc("ext", json!({"type": "ExternalName", "externalName": "example.com"}))).await?;
        assert!(ext["spec"].get("clusterIP").is_none_or(|v| v == "" ), "{}", ext["spec"]);

        // NodePorts: in range, unique, a requested one honoured once.
        let np = call(&c, "POST", SVCS, svc("np", json!({"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]}))).await?;
        let ports: Vec<i64> = np["spec"]["ports"].as_array().unwrap().iter().map(|p| p["nodePort"].as_i64().unwrap()).collect();
        assert!(ports.iter().all(|p| (30000..=32767).contains(p)), "{ports:?}");
        assert_ne!(ports[0], ports[1]);
        let fixed = call(&c, "POST", SVCS, svc("fixed", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}))).await?;
        assert_eq!(fixed["spec"]["ports"][0]["nodePort"], 31000);
        let (code, msg) = fails(&c, "POST", SVCS, svc("fixed2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}))).await;
        assert_eq!(code, 422, "{msg}");
        assert!(msg.contains("provided port is already allocated"), "{msg}");
        let (code, msg) = fails(&c, "POST", SVCS, svc("low", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}))).await;
        assert_eq!(code, 422, "{msg}");

        // Deleting releases: the address and the port can be requested again.
        call(&c, "DELETE", &format!("{SVCS}/mine"), Value::Null).await?;
        call(&c, "DELETE", &format!("{SVCS}/fixed"), Value::Null).await?;
        let (code, _) = fails(&c, "GET", "/apis/networking.k8s.io/v1/ipaddresses/10.100.0.10", Value::Null).await;
        assert_eq!(code, 404, "the IPAddress went with its Service");
        call(&c, "POST", SVCS, svc("mine2", json!({"clusterIP": "10.100.0.10", "ports": [{"port": 80}]}))).await?;
        call(&c, "POST", SVCS, svc("fixed3", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}))).await?;
        anyhow::Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_range_is_an_error_never_a_duplicate() -> Result<()> {
    within(120, "allocation in a small range did not finish", async {
        // A /29 has 6 usable addresses; the kubernetes Service holds the first.
        let s = Server::start_with(&["--service-cluster-ip-range=10.0.0.0/29"])?;
        let c = s.client_without_retries().await?;
        let mut ips = HashSet::new();
        for i in 0..5 {
            let created = call(
                &c,
                "POST",
                SVCS,
                svc(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
            )
            .await?;
            ips.insert(created["spec"]["clusterIP"].as_str().unwrap().to_string());
        }
        assert_eq!(ips.len(), 5);
        assert!(
            !ips.contains("10.0.0.1") && !ips.contains("10.0.0.0") && !ips.contains("10.0.0.7"),
            "{ips:?}"
        );
        let (code, msg) = fails(
            &c,
            "POST",
            SVCS,
            svc("one-too-many", json!({"ports": [{"port": 80}]})),
        )
        .await;
        assert_eq!(code, 500, "{msg}");
        assert!(msg.contains("range is full"), "{msg}");
        anyhow::Ok(())
    })
    .await
}
