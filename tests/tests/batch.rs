//! Jobs and CronJobs as users drive them with kubectl against the real binary, with the
//! controllers and scheduler in-process and simulated nodes running the pods (the pod
//! template's `sim.logbook.dev/run-seconds` and `sim.logbook.dev/exit-code` annotations say
//! how long each pod runs and how it exits): completions and parallelism, a failing pod
//! within the backoff limit, the backoff limit (failed pods, and restarts under
//! OnFailure), activeDeadlineSeconds, suspend and resume, ttlSecondsAfterFinished, Indexed
//! completion, a podFailurePolicy, work-queue Jobs, and a CronJob running every minute with
//! its history pruned, plus `kubectl create job --from`.

#![allow(clippy::unwrap_used)] // a test that panics has failed; the message says where

use std::time::Duration;

use anyhow::Result;
use logbook_e2e::{Server, eventually, within};
use serde_json::{Value, json};

fn json_of(s: &Server, args: &[&str]) -> Result<Value> {
    s.kubectl_json(args)
}

fn create(s: &Server, name: &str, manifest: &Value) -> Result<String> {
    let path = s.data_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(manifest)?)?;
    s.kubectl(&["create", "-f", &path.to_string_lossy()])
}

/// A Job whose pods run `run_seconds` and exit with `exit_code` on a simulated node;
/// `spec` is merged over the defaults (completions 1, parallelism 1).
fn job(name: &str, run_seconds: &str, exit_code: i32, spec: Value) -> Value {
    let mut s = json!({
        "template": {
            "metadata": {"annotations": {
                "sim.logbook.dev/run-seconds": run_seconds,
                "sim.logbook.dev/exit-code": exit_code.to_string(),
            }},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
            },
        },
    });
    merge(&mut s, &spec);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": s})
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn job_pods(s: &Server, job: &str) -> Result<Vec<Value>> {
    let v = json_of(
        s,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
        ],
    )?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

fn phase_of(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn start() -> Result<Server> {
    Server::start_with(&["--simulate-nodes", "3"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_with_parallelism_3_and_one_failing_pod_within_its_backoff_limit_completes()
-> Result<()> {
    within(150, "the indexed job with one failure did not complete", async {
        let s = start()?;
        // Pods wait on cordoned nodes while the test tells index 1's pod to fail (the
        // simulated kubelet reads the annotations when a pod lands on its node).
        eventually(30, "three simulated nodes registered", || {
            Ok(json_of(&s, &["get", "nodes"])?["items"].as_array().map(Vec::len) == Some(3))
        })
        .await;
        s.kubectl(&["cordon", "-l", "type=logbook-simulated"])?;
        create(
            &s,
            "idx",
            &job(
                "idx",
                "1",
                0,
                json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3, "backoffLimit": 2}),
            ),
        )?;
        eventually(30, "three pods, one per index", || Ok(job_pods(&s, "idx")?.len() == 3)).await;
        let pods = job_pods(&s, "idx")?;
        let one = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "1")
            .cloned()
            .unwrap();
        let name = one["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("idx-1-"), "{name}");
        assert_eq!(
            one["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
            "1"
        );
        assert_eq!(one["spec"]["hostname"], "idx-1");
        for label in [
            "batch.kubernetes.io/controller-uid",
            "batch.kubernetes.io/job-name",
            "controller-uid",
            "job-name",
        ] {
            assert!(one["metadata"]["labels"][label].is_string(), "{label}: {one}");
        }
        let owner = &one["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Job");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        s.kubectl(&["annotate", "pod", &name, "--overwrite", "sim.logbook.dev/exit-code=1"])?;
        s.kubectl(&["uncordon", "-l", "type=logbook-simulated"])?;

        s.kubectl(&["wait", "--for=condition=complete", "job/idx", "--timeout=100s"])?;
        let j = json_of(&s, &["get", "job", "idx"])?;
        assert_eq!(j["status"]["succeeded"], 3, "{j}");
        assert_eq!(j["status"]["failed"], 1, "{j}");
        assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
        assert!(j["status"]["completionTime"].is_string(), "{j}");
        assert_eq!(condition(&j, "SuccessCriteriaMet").unwrap()["status"], "True");
        let pods = job_pods(&s, "idx")?;
        let failed: Vec<&Value> = pods.iter().filter(|p| phase_of(p) == "Failed").collect();
        assert_eq!(failed.len(), 1, "{pods:?}");
        assert_eq!(failed[0]["metadata"]["name"], name.as_str());
        assert_eq!(
            pods.iter().filter(|p| phase_of(p) == "Succeeded").count(),
            3,
            "{pods:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_pods_keep_failing_fails_with_backoff_limit_exceeded() -> Result<()> {
    within(90, "the failing job did not fail", async {
        let s = start()?;
        create(&s, "bad", &job("bad", "0.5", 3, json!({"backoffLimit": 1})))?;
        s.kubectl(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"])?;
        let j = json_of(&s, &["get", "job", "bad"])?;
        let failed = condition(&j, "Failed").unwrap();
        assert_eq!(failed["reason"], "BackoffLimitExceeded", "{j}");
        assert_eq!(condition(&j, "FailureTarget").unwrap()["status"], "True");
        assert_eq!(j["status"]["failed"], 2, "{j}");
        assert!(j["status"]["completionTime"].is_null(), "{j}");
        assert_eq!(job_pods(&s, "bad")?.len(), 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_restarts_under_restart_policy_on_failure_count_against_the_backoff_limit()
-> Result<()> {
    within(90, "the crash-looping job did not fail", async {
        let s = start()?;
        let mut manifest = job("loop", "0.5", 1, json!({"backoffLimit": 1}));
        manifest["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        create(&s, "loop", &manifest)?;
        s.kubectl(&[
            "wait",
            "--for=condition=failed",
            "job/loop",
            "--timeout=60s",
        ])?;
        let j = json_of(&s, &["get", "job", "loop"])?;
        assert_eq!(
            condition(&j, "Failed").unwrap()["reason"],
            "BackoffLimitExceeded",
            "{j}"
        );
        // One pod, restarted rather than replaced; deleted when the Job failed, and so
        // counted as failed (kube counts every pod unfinished at the failure).
        assert_eq!(j["status"]["failed"], 1, "{j}");
        eventually(30, "the crash-looping pod deleted", || {
            Ok(job_pods(&s, "loop")?.is_empty())
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_active_deadline_fails_and_its_pods_are_deleted() -> Result<()> {
    within(90, "the deadline did not end the job", async {
        let s = start()?;
        create(
            &s,
            "slow",
            &job(
                "slow",
                "600",
                0,
                json!({"parallelism": 2, "completions": 2, "activeDeadlineSeconds": 3}),
            ),
        )?;
        s.kubectl(&[
            "wait",
            "--for=condition=failed",
            "job/slow",
            "--timeout=60s",
        ])?;
        let j = json_of(&s, &["get", "job", "slow"])?;
        assert_eq!(
            condition(&j, "Failed").unwrap()["reason"],
            "DeadlineExceeded",
            "{j}"
        );
        eventually(30, "the job's pods deleted", || {
            Ok(job_pods(&s, "slow")?.is_empty())
        })
        .await;
        eventually(10, "a DeadlineExceeded warning event about the job", || {
            let evs = json_of(&s, &["get", "events"])?;
            Ok(evs["items"].as_array().into_iter().flatten().any(|e| {
                e["involvedObject"]["kind"] == "Job"
                    && e["involvedObject"]["name"] == "slow"
                    && e["reason"] == "DeadlineExceeded"
                    && e["type"] == "Warning"
            }))
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_runs_no_pods_until_resumed_and_suspending_it_deletes_them() -> Result<()> {
    within(120, "suspend and resume did not work", async {
        let s = start()?;
        create(
            &s,
            "later",
            &job(
                "later",
                "4",
                0,
                json!({"parallelism": 2, "completions": 2, "suspend": true}),
            ),
        )?;
        eventually(30, "the Suspended condition", || {
            let j = json_of(&s, &["get", "job", "later"])?;
            Ok(condition(&j, "Suspended").is_some_and(|c| c["status"] == "True"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(job_pods(&s, "later")?.is_empty());
        let j = json_of(&s, &["get", "job", "later"])?;
        assert!(j["status"]["startTime"].is_null(), "{j}");

        s.kubectl(&[
            "patch",
            "job",
            "later",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])?;
        eventually(30, "two active pods after resuming", || {
            Ok(json_of(&s, &["get", "job", "later"])?["status"]["active"] == 2)
        })
        .await;
        let j = json_of(&s, &["get", "job", "later"])?;
        let c = condition(&j, "Suspended").unwrap();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("JobResumed"))
        );
        assert!(j["status"]["startTime"].is_string(), "{j}");

        s.kubectl(&[
            "patch",
            "job",
            "later",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ])?;
        eventually(30, "the pods deleted on suspend", || {
            Ok(job_pods(&s, "later")?.is_empty())
        })
        .await;
        let j = json_of(&s, &["get", "job", "later"])?;
        assert_eq!(condition(&j, "Suspended").unwrap()["status"], "True", "{j}");

        s.kubectl(&[
            "patch",
            "job",
            "later",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])?;
        s.kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/later",
            "--timeout=60s",
        ])?;
        assert_eq!(
            json_of(&s, &["get", "job", "later"])?["status"]["succeeded"],
            2
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_with_ttl_seconds_after_finished_is_deleted_with_its_pods() -> Result<()> {
    within(90, "the finished job was not deleted", async {
        let s = start()?;
        create(
            &s,
            "brief",
            &job("brief", "0.5", 0, json!({"ttlSecondsAfterFinished": 2})),
        )?;
        s.kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/brief",
            "--timeout=60s",
        ])?;
        eventually(30, "the job deleted after its TTL", || {
            let out = s.kubectl_output("kubectl", &["get", "job", "brief"])?;
            Ok(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
        })
        .await;
        eventually(30, "its pods deleted by the garbage collector", || {
            Ok(job_pods(&s, "brief")?.is_empty())
        })
        .await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_job_rule_fails_the_job_at_the_first_matching_exit_code() -> Result<()> {
    within(90, "the pod failure policy did not fail the job", async {
        let s = start()?;
        create(
            &s,
            "policy",
            &job("policy", "0.5", 42, json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            ]}})),
        )?;
        s.kubectl(&["wait", "--for=condition=failed", "job/policy", "--timeout=60s"])?;
        let j = json_of(&s, &["get", "job", "policy"])?;
        let c = condition(&j, "Failed").unwrap();
        assert_eq!(c["reason"], "PodFailurePolicy", "{j}");
        let msg = c["message"].as_str().unwrap_or("");
        assert!(
            msg.starts_with("Container main for pod default/policy-")
                && msg.ends_with("failed with exit code 42 matching FailJob rule at index 1"),
            "{msg}"
        );
        assert_eq!(job_pods(&s, "policy")?.len(), 1, "no retry after FailJob");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_job_completes_once_a_pod_succeeded_and_all_finished_and_parallelism_0_runs_none()
-> Result<()> {
    within(90, "the work-queue job did not complete", async {
        let s = start()?;
        create(
            &s,
            "queue",
            &job("queue", "1", 0, json!({"parallelism": 2})),
        )?;
        create(&s, "idle", &job("idle", "1", 0, json!({"parallelism": 0})))?;
        s.kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/queue",
            "--timeout=60s",
        ])?;
        let j = json_of(&s, &["get", "job", "queue"])?;
        assert!(j["spec"]["completions"].is_null(), "{j}");
        assert_eq!(j["status"]["succeeded"], 2, "{j}");
        assert_eq!(job_pods(&s, "queue")?.len(), 2);
        let idle = json_of(&s, &["get", "job", "idle"])?;
        assert!(
            idle["status"]["conditions"].is_null() || condition(&idle, "Complete").is_none(),
            "{idle}"
        );
        assert!(job_pods(&s, "idle")?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_every_minute_creates_jobs_keeps_one_in_history_and_instantiates_on_demand()
-> Result<()> {
    within(200, "the cronjob did not run twice", async {
        let s = start()?;
        let template = job("unused", "1", 0, json!({}))["spec"].clone();
        let cron = |name: &str, schedule: &str, suspend: bool| {
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
                "spec": {"schedule": schedule, "suspend": suspend, "successfulJobsHistoryLimit": 1,
                    "jobTemplate": {"metadata": {"labels": {"from": name}}, "spec": template}}})
        };
        create(&s, "tick", &cron("tick", "*/1 * * * *", false))?;
        create(&s, "manual", &cron("manual", "@yearly", true))?;

        // On demand, from a suspended CronJob.
        s.kubectl(&["create", "job", "now", "--from=cronjob/manual"])?;
        s.kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/now",
            "--timeout=60s",
        ])?;
        let now = json_of(&s, &["get", "job", "now"])?;
        assert_eq!(
            now["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
        assert_eq!(now["metadata"]["ownerReferences"][0]["kind"], "CronJob");

        // Two scheduled runs; history keeps only the newest successful one.
        let mut seen: Vec<String> = Vec::new();
        eventually(150, "two scheduled jobs completed", || {
            let jobs = json_of(&s, &["get", "jobs", "-l", "from=tick"])?;
            for j in jobs["items"].as_array().cloned().unwrap_or_default() {
                let name = j["metadata"]["name"].as_str().unwrap_or("").to_string();
                if condition(&j, "Complete").is_some() && !seen.contains(&name) {
                    seen.push(name);
                }
            }
            Ok(seen.len() >= 2)
        })
        .await;
        seen.sort();
        let newest = seen.last().cloned().unwrap();
        let minutes: i64 = newest.trim_start_matches("tick-").parse()?;
        eventually(30, "history pruned to the newest job", || {
            let jobs = json_of(&s, &["get", "jobs", "-l", "from=tick"])?;
            let names: Vec<String> = jobs["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|j| condition(j, "Complete").is_some())
                .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect();
            Ok(names == [newest.clone()])
        })
        .await;
        let j = json_of(&s, &["get", "job", &newest])?;
        let stamp = j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let t: jiff::Timestamp = stamp.parse()?;
        assert_eq!(
            t.as_second(),
            minutes * 60,
            "{stamp} names minute {minutes}"
        );
        assert_eq!(
            j["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        let cj = json_of(&s, &["get", "cronjob", "tick"])?;
        assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
        assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
        Ok(())
    })
    .await
}
