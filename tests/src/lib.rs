//! End-to-end test support: start the real `logbook` binary on a fresh data directory and
//! a free port, talk to it with real clients (kubectl, kube-rs, the Python client), kill it
//! with SIGKILL, start it again on the same data.
//!
//! # Invariants
//! - Knows nothing of the crates' internals: the binary, its flags, its kubeconfig and the
//!   Kubernetes API are the whole interface.
//! - Every wait is bounded; a timeout's message says what did not happen.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `logbook serve` flags that leave the in-process controllers and scheduler out.
pub const API_ONLY: [&str; 2] = ["--no-controllers", "--no-scheduler"];

/// How long a server gets to print its ready line.
pub const SERVER_START_TIMEOUT_SECONDS: u64 = 60;

/// The `logbook` binary under test: `$LOGBOOK_BIN`, else `target/<profile>/logbook` next to
/// this test executable (cargo builds it for the workspace's tests).
pub fn logbook_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LOGBOOK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/logbook
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join("logbook")
}

/// The `kubectl-history` plugin under test: `$KUBECTL_HISTORY_BIN`, else the binary beside
/// [`logbook_bin`] (`cargo build -p logbook` builds both). kubectl finds plugins by file name
/// on PATH, so an override must also be named `kubectl-history`.
pub fn kubectl_history_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL_HISTORY_BIN") {
        return PathBuf::from(p);
    }
    logbook_bin().with_file_name("kubectl-history")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `cmd` (the `logbook` binary with its arguments) with stdout piped and the test
/// log level, and returns it with a receiver of its first stdout line (its ready line); the
/// rest of stdout is drained so the process never blocks on a full pipe.
fn spawn_logbook(cmd: &mut Command) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("LOGBOOK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the logbook binary")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    Ok((child, rx))
}

/// A running `logbook serve` on its own data directory.
pub struct Server {
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Extra `logbook serve` flags, kept across restarts.
    extra_args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a new temporary data directory.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts the API server alone: no controllers, no scheduler ([`API_ONLY`]). For tests of
    /// the API's own semantics, which count objects and revisions exactly (kube-apiserver's
    /// integration tests run without a controller-manager too).
    pub fn start_api_only() -> Result<Self> {
        Self::start_with(&API_ONLY)
    }

    /// Starts a server with extra `logbook serve` flags.
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut s = Server {
            data_dir: tmp.path().join("data"),
            port: free_port()?,
            child: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: Some(tmp),
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts a server on `data_dir` (which may already hold files, e.g. another replica's
    /// cluster CA in `pki/`), with extra `logbook serve` flags.
    pub fn start_in(data_dir: PathBuf, args: &[&str]) -> Result<Self> {
        let mut s = Server {
            data_dir,
            port: free_port()?,
            child: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            _tmp: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = logbook_bin();
        if !bin.exists() {
            bail!(
                "{} does not exist: build it first (cargo build -p logbook) or set LOGBOOK_BIN",
                bin.display()
            );
        }
        let (child, rx) = spawn_logbook(
            Command::new(&bin)
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .args(&self.extra_args),
        )?;
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(SERVER_START_TIMEOUT_SECONDS)) {
            Ok(line) if line.contains("logbook serving on") => Ok(()),
            Ok(line) => bail!("the server printed {line:?} instead of its ready line"),
            Err(_) => bail!(
                "the server did not print its ready line within {SERVER_START_TIMEOUT_SECONDS} s"
            ),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit; returns whether the exit status was success.
    pub fn terminate(&mut self) -> Result<bool> {
        let Some(mut c) = self.child.take() else {
            return Ok(true);
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        for _ in 0..300 {
            if let Some(st) = c.try_wait()? {
                return Ok(st.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill()?;
        c.wait()?;
        bail!("the server did not exit within 15 s of SIGTERM")
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Runs the logbook binary with other arguments (e.g. `verify`, `compact`) on this
    /// server's data directory while it is stopped.
    pub fn run_tool(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(logbook_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()?)
    }

    /// A kube-rs client from the generated kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// A kube-rs client that does not retry 429/5xx answers (to observe them).
    pub async fn client_without_retries(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        cfg.default_retry = false;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Runs `kubectl` (or `kubectl.1.NN`) against this server; returns stdout, fails with
    /// stderr on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with("kubectl", args)
    }

    pub fn kubectl_with(&self, binary: &str, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(binary, args)?;
        if !out.status.success() {
            bail!(
                "{binary} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn kubectl_output(&self, binary: &str, args: &[&str]) -> Result<std::process::Output> {
        self.kubectl_output_env(binary, args, &[])
    }

    /// Runs a kubectl binary with extra environment variables (e.g. `EDITOR`), returning its
    /// output whatever its exit status.
    pub fn kubectl_output_env(
        &self,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<std::process::Output> {
        let home = self.data_dir.join("kubectl-home");
        std::fs::create_dir_all(&home)?;
        Command::new(binary)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", &home)
            .envs(env.iter().copied())
            .output()
            .with_context(|| format!("running {binary}"))
    }

    /// The installed kubectl binaries: `kubectl` on PATH and every `kubectl.1.NN` beside the
    /// real binary, oldest first, as (label, path).
    pub fn kubectl_binaries() -> Vec<(String, String)> {
        let real = Command::new("sh")
            .args(["-c", "readlink -f \"$(command -v kubectl)\""])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let dir = Path::new(&real)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut out = Vec::new();
        for minor in 27..=40 {
            let bin = dir.join(format!("kubectl.1.{minor}"));
            if bin.exists() {
                out.push((format!("1.{minor}"), bin.display().to_string()));
            }
        }
        if !real.is_empty() {
            out.push(("default".to_string(), "kubectl".to_string()));
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// A request with raw body bytes and an optional content type (for bodies no encoder
/// would produce: malformed, oversized, invalid UTF-8).
pub fn raw_request(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(body).expect("a request from a method and a path")
}

/// A request carrying `body` as JSON with `content_type` (no body and no content type when
/// `body` is null).
pub fn json_request(
    method: &str,
    path: &str,
    content_type: &str,
    body: &serde_json::Value,
) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder().method(method).uri(path);
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        b = b.header("content-type", content_type);
        serde_json::to_vec(body).unwrap_or_default()
    };
    b.body(bytes).expect("a request from a method and a path")
}

/// Sends a JSON request (`application/json`) and parses the JSON answer.
///
/// # Errors
/// The server's Status as `kube::Error::Api`, or an undecodable answer.
pub async fn call_json(
    c: &kube::Client,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let text = c
        .request_text(json_request(method, path, "application/json", &body))
        .await?;
    Ok(serde_json::from_str(&text)?)
}

/// GETs `path` and parses the JSON answer.
///
/// # Errors
/// The server's Status as `kube::Error::Api` (with the path as context), or an undecodable
/// answer.
pub async fn get_json(c: &kube::Client, path: &str) -> Result<serde_json::Value> {
    call_json(c, "GET", path, serde_json::Value::Null)
        .await
        .with_context(|| format!("GET {path}"))
}

/// A `logbook` component process (`controllers`, `scheduler`, `node`) started against a
/// server; SIGKILLed when dropped.
pub struct Component {
    child: Option<Child>,
}

impl Component {
    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

impl Server {
    /// Runs `logbook <args> --kubeconfig <this server's kubeconfig>` and waits for its first
    /// stdout line (its ready line) to contain `ready`.
    pub fn component(&self, args: &[&str], ready: &str) -> Result<Component> {
        let (child, rx) = spawn_logbook(
            Command::new(logbook_bin())
                .args(args)
                .arg("--kubeconfig")
                .arg(self.kubeconfig()),
        )?;
        let comp = Component { child: Some(child) };
        match rx.recv_timeout(Duration::from_secs(SERVER_START_TIMEOUT_SECONDS)) {
            Ok(line) if line.contains(ready) => Ok(comp),
            Ok(line) => bail!(
                "logbook {} printed {line:?} instead of its ready line",
                args.join(" ")
            ),
            Err(_) => bail!("logbook {} did not print its ready line", args.join(" ")),
        }
    }

    /// The server's `apiserver_request_total` for one verb and resource (all codes; not its
    /// subresources: a pod's `binding` is not a pod create).
    pub async fn request_count(&self, verb: &str, resource: &str) -> Result<u64> {
        let c = self.client().await?;
        let text = c
            .request_text(json_request(
                "GET",
                "/metrics",
                "",
                &serde_json::Value::Null,
            ))
            .await?;
        let needle =
            format!("apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=");
        Ok(text
            .lines()
            .filter(|l| l.starts_with(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }
}

/// Polls `f` every 200 ms until it returns true (an error counts as not yet), within
/// `secs`; the message names what did not happen.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> Result<bool>) {
    within(secs, what, async {
        loop {
            if f().unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

impl Server {
    /// `kubectl <args> -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&a)?)?)
    }
}

/// Bounds an async test step; the message names what did not happen.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// The CRI socket of the containerd that `scripts/test.sh` starts for the real-container
/// tests (`LOGBOOK_CRI_SOCKET`), or `None` with a printed skip line.
pub fn cri_socket(test: &str) -> Option<PathBuf> {
    match std::env::var("LOGBOOK_CRI_SOCKET") {
        Ok(s) if !s.is_empty() && Path::new(&s).exists() => Some(PathBuf::from(s)),
        _ => {
            println!(
                "skipped: {test}: LOGBOOK_CRI_SOCKET is not set to a running containerd (scripts/test.sh starts one)"
            );
            None
        }
    }
}

impl Server {
    /// Starts `logbook node --cri-socket <socket>` as Node `name`, with its own node
    /// identity (`system:node:<name>` in `system:nodes`), its root directory under this
    /// server's data directory and any free port for its endpoint.
    pub fn node_agent(&self, name: &str, socket: &Path) -> Result<Component> {
        let kc = self.data_dir.join(format!("node-{name}.kubeconfig"));
        if !kc.exists() {
            let out = self.run_tool(&[
                "user",
                "add",
                &format!("system:node:{name}"),
                "--group",
                "system:nodes",
                "--out",
                &kc.display().to_string(),
            ])?;
            if !out.status.success() {
                bail!(
                    "minting the node identity failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let root = self.data_dir.join(format!("node-{name}"));
        let (child, rx) = spawn_logbook(
            Command::new(logbook_bin())
                .args(["node", "--cri-socket"])
                .arg(socket)
                .args(["--node-name", name, "--port", "0", "--root-dir"])
                .arg(&root)
                .arg("--kubeconfig")
                .arg(&kc),
        )?;
        let comp = Component { child: Some(child) };
        match rx.recv_timeout(Duration::from_secs(SERVER_START_TIMEOUT_SECONDS)) {
            Ok(line) if line.contains("node agent") => Ok(comp),
            Ok(line) => bail!("logbook node printed {line:?} instead of its ready line"),
            Err(_) => bail!("logbook node did not print its ready line"),
        }
    }
}
