//! Issue 6, items 4 and 5: `kubectl history` (the `kubectl-history` plugin, run by real
//! kubectl from PATH) and `logbook history export`, against the real server after a scripted
//! series of changes by two users with their own client certificates (alice and bob).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use logbook_e2e::{Server, kubectl_history_bin, logbook_bin};
use serde_json::Value;

/// How long one command (kubectl, the plugin, an export) may take.
const COMMAND_TIMEOUT_SECONDS: u64 = 60;

/// Runs a command to completion within [`COMMAND_TIMEOUT_SECONDS`]; panics naming `what` when
/// it hangs.
fn run_bounded(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut pipes = (child.stdout.take(), child.stderr.take());
    let out = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = pipes.0.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        if let Some(s) = pipes.1.as_mut() {
            let _ = s.read_to_end(&mut e);
        }
        (o, e)
    });
    let deadline = Instant::now() + Duration::from_secs(COMMAND_TIMEOUT_SECONDS);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                panic!("timed out after {COMMAND_TIMEOUT_SECONDS} s: {what} (a request hung?)");
            }
        }
    };
    let (stdout, stderr) = out.join().unwrap_or_default();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The scripted cluster: a server, alice's and bob's kubeconfigs, and what they did.
struct Cluster {
    server: Server,
    alice: PathBuf,
    bob: PathBuf,
    home: tempfile::TempDir,
}

impl Cluster {
    /// Starts a server, adds alice and bob, and makes the changes every test reads:
    /// deployment web: created (alice), scaled to 3 (alice), image set (bob), labelled (alice);
    /// configmap settings: created (alice), edited (bob), deleted (bob).
    fn scripted() -> Self {
        let server = Server::start_api_only().expect("the server starts");
        for (user, group) in [("alice", "developers"), ("bob", "operators")] {
            let out = server
                .run_tool(&["user", "add", user, "--group", group])
                .expect("logbook user add runs");
            assert!(
                out.status.success(),
                "logbook user add {user} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            server
                .kubectl(&[
                    "create",
                    "clusterrolebinding",
                    &format!("{group}-edit"),
                    "--clusterrole=edit",
                    &format!("--group={group}"),
                ])
                .expect("a binding for the user's group");
        }
        let users = server.data_dir.join("users");
        let c = Cluster {
            alice: users.join("alice.kubeconfig"),
            bob: users.join("bob.kubeconfig"),
            server,
            home: tempfile::tempdir().expect("a temporary HOME"),
        };
        let (alice, bob) = (c.alice.clone(), c.bob.clone());
        for (who, args) in [
            (
                &alice,
                vec!["create", "deployment", "web", "--image=nginx:1.25"],
            ),
            (&alice, vec!["scale", "deployment", "web", "--replicas=3"]),
            (
                &bob,
                vec!["set", "image", "deployment/web", "nginx=nginx:1.26"],
            ),
            (&alice, vec!["label", "deployment", "web", "tier=frontend"]),
            (
                &alice,
                vec![
                    "create",
                    "configmap",
                    "settings",
                    "--from-literal=mode=relaxed",
                ],
            ),
            (
                &bob,
                vec![
                    "patch",
                    "configmap",
                    "settings",
                    "--type=merge",
                    "-p",
                    r#"{"data":{"mode":"strict"}}"#,
                ],
            ),
            (&bob, vec!["delete", "configmap", "settings"]),
        ] {
            c.kubectl_ok(who, &args);
        }
        c
    }

    /// Real kubectl as the owner of `kubeconfig`, with the plugin's directory first on PATH.
    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        let plugin = kubectl_history_bin();
        assert!(
            plugin.exists(),
            "{} does not exist: build it first (cargo build -p logbook --bins) or set KUBECTL_HISTORY_BIN",
            plugin.display()
        );
        let dir = plugin.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .expect("a PATH");
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", path)
            .env("HOME", self.home.path());
        run_bounded(cmd, &format!("kubectl {}", args.join(" ")))
    }

    /// kubectl that must succeed; its stdout.
    fn kubectl_ok(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let out = self.kubectl(kubeconfig, args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `logbook history …` with the server's admin kubeconfig (through --data-dir).
    fn logbook(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(logbook_bin());
        cmd.arg("history")
            .args(args)
            .arg("--data-dir")
            .arg(&self.server.data_dir)
            .env_remove("KUBECONFIG");
        run_bounded(cmd, &format!("logbook history {}", args.join(" ")))
    }

    fn admin(&self) -> PathBuf {
        self.server.kubeconfig()
    }

    /// deploy/web's revisions, newest first, through `-o json`.
    fn web_revisions(&self) -> Vec<Value> {
        let list: Value = serde_json::from_str(
            &self.kubectl_ok(&self.admin(), &["history", "deploy/web", "-o", "json"]),
        )
        .expect("-o json is JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A table's rows (header first), each split on runs of spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn history_of_a_deployment_lists_every_revision_newest_first_with_its_user_and_verb() {
    let c = Cluster::scripted();
    let table = c.kubectl_ok(&c.alice, &["history", "deploy/web"]);
    let t = rows(&table);
    assert_eq!(
        t[0][..5],
        ["REVISION", "TIME", "VERB", "USER", "CHANGE"],
        "{table}"
    );
    let body = &t[1..];
    assert_eq!(body.len(), 4, "four revisions of deploy/web:\n{table}");
    let users: Vec<&str> = body.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(
        users,
        ["alice", "bob", "alice", "alice"],
        "newest first:\n{table}"
    );
    let verbs: Vec<&str> = body.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(verbs, ["patch", "patch", "patch", "create"], "{table}");
    let revisions: Vec<u64> = body
        .iter()
        .map(|r| r[0].parse().expect("a revision"))
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {revisions:?}"
    );
    assert!(
        table.contains("+/metadata/labels/tier"),
        "the label change's summary:\n{table}"
    );
    assert!(
        table.contains("~/spec/replicas"),
        "the scale's summary:\n{table}"
    );

    // TYPE NAME works too, and -o wide adds the client and the groups.
    let wide = c.kubectl_ok(&c.alice, &["history", "deployment", "web", "-o", "wide"]);
    let header = &rows(&wide)[0];
    assert_eq!(header[5..], ["USER-AGENT", "SOURCE", "GROUPS"], "{wide}");
    assert!(wide.contains("kubectl"), "the user agent:\n{wide}");
    assert!(
        wide.contains("operators") && wide.contains("developers"),
        "the groups:\n{wide}"
    );

    // --limit pages: the two newest, then the rest from the printed continue token.
    let out = c.kubectl(&c.alice, &["history", "deploy/web", "--limit", "2"]);
    assert!(out.status.success());
    let first = rows(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(first.len(), 3, "a header and two revisions");
    assert_eq!(first[1][0], revisions[0].to_string());
    let hint = String::from_utf8_lossy(&out.stderr).into_owned();
    let token = hint
        .split("--continue ")
        .nth(1)
        .map(|t| t.trim().trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("a continue hint on stderr: {hint:?}"));
    let rest = rows(&c.kubectl_ok(&c.alice, &["history", "deploy/web", "--continue", &token]));
    let rest: Vec<u64> = rest[1..]
        .iter()
        .map(|r| r[0].parse().expect("a revision"))
        .collect();
    assert_eq!(rest, revisions[2..], "the second page continues the first");

    // -o json and -o yaml print the server's list.
    let items = c.web_revisions();
    assert_eq!(items.len(), 4);
    assert_eq!(s(&items[0], "/kind"), "Revision");
    assert_eq!(s(&items[3], "/user/username"), "alice");
    assert_eq!(s(&items[1], "/user/username"), "bob");
    let yaml = c.kubectl_ok(&c.alice, &["history", "deploy/web", "-o", "yaml"]);
    assert!(yaml.contains("kind: RevisionList"), "{yaml}");
}

#[test]
fn diff_between_two_revisions_shows_the_replicas_and_image_lines_that_changed() {
    let c = Cluster::scripted();
    let items = c.web_revisions();
    let created = s(&items[3], "/revision");
    let image_set = s(&items[1], "/revision");
    let diff = c.kubectl_ok(
        &c.alice,
        &["history", "diff", "deploy/web", &created, &image_set],
    );
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines[0],
        format!("--- deployments.apps/web@{created}"),
        "{diff}"
    );
    assert_eq!(
        lines[1],
        format!("+++ deployments.apps/web@{image_set}"),
        "{diff}"
    );
    let has = |sign: char, text: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(sign) && l.trim_start_matches(sign).trim() == text)
    };
    assert!(has('-', "replicas: 1") && has('+', "replicas: 3"), "{diff}");
    assert!(
        has('-', "- image: nginx:1.25") && has('+', "- image: nginx:1.26"),
        "{diff}"
    );
    assert!(
        !diff.contains("managedFields") && !diff.contains("resourceVersion"),
        "{diff}"
    );
    assert!(!has('+', "tier: frontend"), "the label came later:\n{diff}");

    // TYPE NAME RV1 RV2 is the same diff; the same revision twice is no diff at all.
    assert_eq!(
        c.kubectl_ok(
            &c.alice,
            &[
                "history",
                "diff",
                "deployments.apps",
                "web",
                &created,
                &image_set
            ]
        ),
        diff
    );
    assert_eq!(
        c.kubectl_ok(
            &c.alice,
            &["history", "diff", "deploy/web", &created, &created]
        ),
        ""
    );
}

#[test]
fn get_as_of_a_past_time_shows_the_objects_as_they_were_then() {
    let c = Cluster::scripted();
    let items = c.web_revisions();
    let (created_at, scaled_at) = (s(&items[3], "/time"), s(&items[2], "/time"));

    // Between the scale and the new image: three replicas of nginx:1.25.
    let list: Value = serde_json::from_str(&c.kubectl_ok(
        &c.bob,
        &[
            "history", "get", "deploy", "--as-of", &scaled_at, "-o", "json",
        ],
    ))
    .expect("-o json is JSON");
    let web = &list["items"][0];
    assert_eq!(s(web, "/metadata/name"), "web", "{list}");
    assert_eq!(
        web.pointer("/spec/replicas"),
        Some(&Value::from(3)),
        "{web}"
    );
    assert_eq!(
        s(web, "/spec/template/spec/containers/0/image"),
        "nginx:1.25",
        "{web}"
    );
    assert_eq!(web.pointer("/metadata/labels/tier"), None, "{web}");

    // The table of that moment, and of the moment of the create.
    let then = c.kubectl_ok(
        &c.bob,
        &["history", "get", "deployments", "--as-of", &scaled_at],
    );
    assert!(then.starts_with("NAME"), "{then}");
    assert!(
        then.lines()
            .any(|l| l.starts_with("web ") && l.contains("0/3")),
        "{then}"
    );
    let first = c.kubectl_ok(
        &c.bob,
        &["history", "get", "deploy/web", "--as-of", &created_at],
    );
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("0/1")),
        "{first}"
    );

    // A deleted object is still there as of a time it existed, with bob's edit.
    let gone = c.kubectl(&c.bob, &["get", "configmap", "settings"]);
    assert!(!gone.status.success(), "settings is deleted now");
    let changes: Value = serde_json::from_str(&c.kubectl_ok(
        &c.bob,
        &[
            "history",
            "changes",
            "--resource",
            "cm",
            "--verb",
            "patch",
            "-o",
            "json",
        ],
    ))
    .expect("-o json is JSON");
    let edited_at = s(&changes["items"][0], "/time");
    let cm: Value = serde_json::from_str(&c.kubectl_ok(
        &c.alice,
        &[
            "history", "get", "cm", "settings", "--as-of", &edited_at, "-o", "json",
        ],
    ))
    .expect("-o json is JSON");
    assert_eq!(s(&cm, "/data/mode"), "strict", "{cm}");
    let all = c.kubectl_ok(
        &c.alice,
        &["history", "get", "cm", "-A", "--as-of", &edited_at],
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("default ") && l.contains("settings")),
        "-A adds the namespace column:\n{all}"
    );

    // Before anything was written there is nothing; "2h" ago is before this server existed.
    let out = c.kubectl(&c.alice, &["history", "get", "deploy", "--as-of", "2h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found"));
}

#[test]
fn changes_by_user_lists_exactly_that_users_changes() {
    let c = Cluster::scripted();
    let table = c.kubectl_ok(
        &c.alice,
        &["history", "changes", "--user", "bob", "--since", "1h"],
    );
    let t = rows(&table);
    assert_eq!(
        t[0],
        ["TIME", "USER", "VERB", "OBJECT", "CHANGE"],
        "{table}"
    );
    let body: Vec<(&str, &str, &str)> = t[1..]
        .iter()
        .map(|r| (r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        body,
        [
            ("bob", "delete", "configmaps/settings"),
            ("bob", "patch", "configmaps/settings"),
            ("bob", "patch", "deployments.apps/web"),
        ],
        "{table}"
    );

    let list: Value = serde_json::from_str(&c.kubectl_ok(
        &c.alice,
        &["history", "changes", "--user", "bob", "-A", "-o", "json"],
    ))
    .expect("-o json is JSON");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3, "{list}");
    assert!(
        items.iter().all(|i| s(i, "/user/username") == "bob"),
        "{list}"
    );
    assert_eq!(s(&list, "/kind"), "ChangeList");

    // -A shows the namespace; alice's changes are the other four of ours.
    let alice = c.kubectl_ok(&c.bob, &["history", "changes", "--user", "alice", "-A"]);
    let alice = rows(&alice);
    assert_eq!(alice[0][..3], ["TIME", "NAMESPACE", "USER"]);
    assert_eq!(alice.len(), 5, "{alice:?}");
    assert!(
        alice[1..]
            .iter()
            .all(|r| r[1] == "default" && r[2] == "alice"),
        "{alice:?}"
    );

    // --resource, --verb filter the feed; -o yaml parses as the same list.
    let creates = c.kubectl_ok(
        &c.bob,
        &[
            "history",
            "changes",
            "--verb",
            "create",
            "--resource",
            "deploy",
        ],
    );
    assert_eq!(
        rows(&creates).len(),
        2,
        "one create of a deployment:\n{creates}"
    );
    let yaml = c.kubectl_ok(
        &c.bob,
        &["history", "changes", "--user", "bob", "-o", "yaml"],
    );
    assert!(
        yaml.contains("kind: ChangeList") && yaml.contains("username: bob"),
        "{yaml}"
    );
}

/// An export's lines as JSON.
fn read_export(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("the export file")
        .lines()
        .map(str::to_string)
        .collect()
}

fn revision_of(line: &str) -> u64 {
    let v: Value = serde_json::from_str(line).expect("each line is JSON");
    s(&v, "/revision").parse().expect("a revision")
}

#[test]
fn export_resumed_after_a_middle_revision_completes_the_full_export_without_gaps_or_repeats() {
    let c = Cluster::scripted();
    let dir = tempfile::tempdir().expect("a directory");
    let full_path = dir.path().join("full.jsonl");
    let full_file = full_path.to_str().expect("a UTF-8 path");
    // Small pages, so the export follows continue tokens many times.
    let out = c.logbook(&["export", "-o", full_file, "--page-items", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let full = read_export(&full_path);
    let revisions: Vec<u64> = full.iter().map(|l| revision_of(l)).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats: {revisions:?}"
    );
    let last = revisions.last().copied().expect("events");
    assert!(
        stderr.contains(&format!("--after {last}")),
        "the end says how to resume: {stderr}"
    );
    let ours: Vec<(String, String)> = full
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|v| ["alice", "bob"].contains(&s(v, "/user/username").as_str()))
        .map(|v| (s(&v, "/user/username"), s(&v, "/verb")))
        .collect();
    assert_eq!(ours.len(), 7, "every scripted change is exported: {ours:?}");

    // Resume after a middle revision: together the two exports are the full one, line for line.
    let middle = revisions[revisions.len() / 2];
    let rest_path = dir.path().join("rest.jsonl");
    let out = c.logbook(&[
        "export",
        "--after",
        &middle.to_string(),
        "-o",
        rest_path.to_str().expect("a UTF-8 path"),
        "--page-items",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest = read_export(&rest_path);
    let mut joined: Vec<String> = full
        .iter()
        .filter(|l| revision_of(l) <= middle)
        .cloned()
        .collect();
    joined.extend(rest);
    assert_eq!(joined, full, "nothing missing, nothing repeated");

    // Without -o the lines go to stdout; filters apply as in `changes`.
    let out = c.logbook(&["export", "--user", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(bob.len(), 3, "{bob:?}");
    assert!(
        bob.iter().all(|l| full.contains(l)),
        "the same items as the full export"
    );
}

#[test]
fn logbook_history_answers_the_same_as_the_kubectl_plugin() {
    let c = Cluster::scripted();
    let out = c.logbook(&["deploy/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        c.kubectl_ok(&c.admin(), &["history", "deploy/web"])
    );
    // --kubeconfig after the plugin's arguments is the plugin's own flag.
    let alice = c.alice.to_str().expect("a UTF-8 path");
    let out = c.kubectl(
        Path::new("/nonexistent"),
        &[
            "history",
            "changes",
            "--kubeconfig",
            alice,
            "--user",
            "alice",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&String::from_utf8_lossy(&out.stdout)).len(), 5);
}

#[test]
fn server_errors_print_the_status_message_and_exit_1() {
    let c = Cluster::scripted();
    let out = c.kubectl(&c.alice, &["history", "changes", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error from server (BadRequest): since: \"yesterday\""),
        "{stderr}"
    );
    let out = c.kubectl(&c.alice, &["history", "diff", "deploy/nothing", "1", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error from server (NotFound):"),
        "{stderr}"
    );
    let out = c.kubectl(&c.alice, &["history", "widgets/web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("doesn't have a resource type \"widgets\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
