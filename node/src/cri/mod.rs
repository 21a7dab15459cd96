//! The Container Runtime Interface client: `runtime.v1` RuntimeService and ImageService over
//! gRPC on a unix socket (containerd's CRI plugin, CRI-O, …).
//!
//! `runtime.v1.rs` is generated from `node/proto/api.proto` (kubernetes/cri-api) by
//! `scripts/gen-cri.sh` and committed, so that building logbook needs no protoc. [`Cri`]
//! wraps both clients with a deadline on every call ([`CRI_CALL_TIMEOUT_MS`], longer for the
//! calls that wait on processes) and the labels through which the agent finds its own
//! sandboxes and containers again after a restart.

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]
#[path = "runtime.v1.rs"]
pub mod v1;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// Deadline of one ordinary CRI call, in milliseconds.
pub const CRI_CALL_TIMEOUT_MS: u64 = 30_000;
/// Deadline of an image pull, in milliseconds (no registry is reachable in some clusters:
/// a pull must fail rather than hang).
pub const CRI_PULL_TIMEOUT_MS: u64 = 60_000;
/// Largest gRPC message the agent accepts from the runtime, in bytes (list responses of a
/// full node; ExecSync output).
pub const CRI_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Label on every sandbox and container the agent creates.
pub const MANAGED_LABEL: &str = "logbook.dev/managed";
/// The kubelet's labels, which containerd and crictl also read.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Label on every sandbox: the Node it belongs to (several agents may share one runtime,
/// as the tests' agents do; each reaps only its own orphans).
pub const NODE_LABEL: &str = "logbook.dev/node";
/// Annotation on a container: whether it is an init container ("true").
pub const INIT_ANNOTATION: &str = "logbook.dev/init-container";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to the container runtime at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("{call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("{call}: no answer within {ms} ms")]
    Timeout { call: &'static str, ms: u64 },
}

impl CriError {
    /// The gRPC code, if the runtime answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CriError::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

pub type CriResult<T> = Result<T, CriError>;

/// Both CRI services over one channel.
#[derive(Clone)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn call<T>(
    name: &'static str,
    ms: u64,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> CriResult<T> {
    match tokio::time::timeout(Duration::from_millis(ms), fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(CriError::Call {
            call: name,
            status: Box::new(status),
        }),
        Err(_) => Err(CriError::Timeout { call: name, ms }),
    }
}

impl Cri {
    /// Connects to the runtime's unix socket (lazily: the first call dials).
    ///
    /// # Errors
    /// The endpoint cannot be built.
    pub fn connect(socket: &Path) -> CriResult<Cri> {
        let path = socket.to_path_buf();
        let p = path.clone();
        // The URI is not used for unix sockets; the connector dials the path.
        let channel = Endpoint::from_static("http://cri.local")
            .connect_timeout(Duration::from_millis(CRI_CALL_TIMEOUT_MS))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }));
        let rt = RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(CRI_MESSAGE_BYTES_MAX);
        let img = ImageServiceClient::new(channel).max_decoding_message_size(CRI_MESSAGE_BYTES_MAX);
        let _ = path;
        Ok(Cri { rt, img })
    }

    pub async fn version(&self) -> CriResult<v1::VersionResponse> {
        let mut c = self.rt.clone();
        call(
            "Version",
            CRI_CALL_TIMEOUT_MS,
            c.version(v1::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
    }

    pub async fn status(&self) -> CriResult<v1::StatusResponse> {
        let mut c = self.rt.clone();
        call(
            "Status",
            CRI_CALL_TIMEOUT_MS,
            c.status(v1::StatusRequest { verbose: false }),
        )
        .await
    }

    pub async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> CriResult<String> {
        let mut c = self.rt.clone();
        let r = call(
            "RunPodSandbox",
            CRI_CALL_TIMEOUT_MS * 2,
            c.run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }),
        )
        .await?;
        Ok(r.pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let mut c = self.rt.clone();
        call(
            "StopPodSandbox",
            CRI_CALL_TIMEOUT_MS * 2,
            c.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await
        .map(drop)
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let mut c = self.rt.clone();
        call(
            "RemovePodSandbox",
            CRI_CALL_TIMEOUT_MS * 2,
            c.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await
        .map(drop)
    }

    pub async fn pod_sandbox_status(&self, id: &str) -> CriResult<Option<v1::PodSandboxStatus>> {
        let mut c = self.rt.clone();
        let r = call(
            "PodSandboxStatus",
            CRI_CALL_TIMEOUT_MS,
            c.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            }),
        )
        .await;
        match r {
            Ok(r) => Ok(r.status),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every sandbox carrying all of `labels`.
    pub async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> CriResult<Vec<v1::PodSandbox>> {
        let mut c = self.rt.clone();
        let r = call(
            "ListPodSandbox",
            CRI_CALL_TIMEOUT_MS,
            c.list_pod_sandbox(v1::ListPodSandboxRequest {
                filter: Some(v1::PodSandboxFilter {
                    id: String::new(),
                    state: None,
                    label_selector: labels,
                }),
            }),
        )
        .await?;
        Ok(r.items)
    }

    /// Every container carrying all of `labels`.
    pub async fn list_containers(
        &self,
        labels: HashMap<String, String>,
    ) -> CriResult<Vec<v1::Container>> {
        let mut c = self.rt.clone();
        let r = call(
            "ListContainers",
            CRI_CALL_TIMEOUT_MS,
            c.list_containers(v1::ListContainersRequest {
                filter: Some(v1::ContainerFilter {
                    id: String::new(),
                    state: None,
                    pod_sandbox_id: String::new(),
                    label_selector: labels,
                }),
            }),
        )
        .await?;
        Ok(r.containers)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> CriResult<String> {
        let mut c = self.rt.clone();
        let r = call(
            "CreateContainer",
            CRI_CALL_TIMEOUT_MS * 2,
            c.create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )
        .await?;
        Ok(r.container_id)
    }

    pub async fn start_container(&self, id: &str) -> CriResult<()> {
        let mut c = self.rt.clone();
        call(
            "StartContainer",
            CRI_CALL_TIMEOUT_MS * 2,
            c.start_container(v1::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .await
        .map(drop)
    }

    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()> {
        let mut c = self.rt.clone();
        let secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let ms = grace.as_millis().try_into().unwrap_or(u64::MAX);
        let r = call(
            "StopContainer",
            ms.saturating_add(CRI_CALL_TIMEOUT_MS),
            c.stop_container(v1::StopContainerRequest {
                container_id: id.into(),
                timeout: secs,
            }),
        )
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_container(&self, id: &str) -> CriResult<()> {
        let mut c = self.rt.clone();
        let r = call(
            "RemoveContainer",
            CRI_CALL_TIMEOUT_MS,
            c.remove_container(v1::RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn container_status(&self, id: &str) -> CriResult<Option<v1::ContainerStatus>> {
        let mut c = self.rt.clone();
        let r = call(
            "ContainerStatus",
            CRI_CALL_TIMEOUT_MS,
            c.container_status(v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )
        .await;
        match r {
            Ok(r) => Ok(r.status),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `cmd` in a container and waits at most `timeout` for it.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> CriResult<v1::ExecSyncResponse> {
        let mut c = self.rt.clone();
        let secs = i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX);
        let ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        call(
            "ExecSync",
            ms.saturating_add(2_000),
            c.exec_sync(v1::ExecSyncRequest {
                container_id: id.into(),
                cmd,
                timeout: secs,
            }),
        )
        .await
    }

    /// The runtime's streaming URL for an exec session.
    pub async fn exec(&self, req: v1::ExecRequest) -> CriResult<String> {
        let mut c = self.rt.clone();
        Ok(call("Exec", CRI_CALL_TIMEOUT_MS, c.exec(req)).await?.url)
    }

    /// The runtime's streaming URL for attaching to a container.
    pub async fn attach(&self, req: v1::AttachRequest) -> CriResult<String> {
        let mut c = self.rt.clone();
        Ok(call("Attach", CRI_CALL_TIMEOUT_MS, c.attach(req))
            .await?
            .url)
    }

    /// The runtime's streaming URL for forwarding ports into a sandbox.
    pub async fn port_forward(&self, req: v1::PortForwardRequest) -> CriResult<String> {
        let mut c = self.rt.clone();
        Ok(
            call("PortForward", CRI_CALL_TIMEOUT_MS, c.port_forward(req))
                .await?
                .url,
        )
    }

    /// The image's status, or `None` when the runtime does not have it.
    pub async fn image_status(&self, image: &str) -> CriResult<Option<v1::Image>> {
        let mut c = self.img.clone();
        let r = call(
            "ImageStatus",
            CRI_CALL_TIMEOUT_MS,
            c.image_status(v1::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            }),
        )
        .await?;
        Ok(r.image)
    }

    /// Pulls an image; the image reference the runtime resolved it to.
    pub async fn pull_image(&self, image: &str) -> CriResult<String> {
        let mut c = self.img.clone();
        let r = call(
            "PullImage",
            CRI_PULL_TIMEOUT_MS,
            c.pull_image(v1::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: None,
            }),
        )
        .await?;
        Ok(r.image_ref)
    }
}

pub fn image_spec(image: &str) -> v1::ImageSpec {
    v1::ImageSpec {
        image: image.into(),
        annotations: HashMap::new(),
        user_specified_image: image.into(),
        runtime_handler: String::new(),
    }
}
