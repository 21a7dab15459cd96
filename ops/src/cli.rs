//! The command line: `logbook <command> ...`, parsed with clap's derive API.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "logbook",
    version,
    about = "Logbook: a Kubernetes-compatible control plane whose state is an append-only event log."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the control plane: HTTPS on --listen, the log on the embedded store in
    /// --data-dir (or on FoundationDB with --store fdb). The first start generates a CA,
    /// certificates and <data-dir>/kubeconfig.
    Serve(Box<ServeArgs>),
    /// Move a stopped store's retention horizon to --to (default: the head): history below
    /// it is removed, every object's state there is kept; older resourceVersions get 410.
    Compact(CompactArgs),
    /// Check a stopped store: every log record's checksum and hash-chain link, and that the
    /// current state is the newest revision of every object. Exits non-zero naming the first
    /// damaged record.
    Verify(VerifyArgs),
    /// After restoring a FoundationDB backup: make new resourceVersions start above --above
    /// (the newest one the lost store may have handed out) and answer reads between the
    /// restored head and it with 410, so clients relist instead of missing events.
    Fence(FenceArgs),
    /// Every revision of an object, who made it, and the cluster as of any moment (the
    /// same verbs as the `kubectl history` plugin, plus `export`). Uses the kubeconfig like
    /// kubectl; without --kubeconfig and KUBECONFIG, <data-dir>/kubeconfig.
    History(Box<crate::history_cli::HistoryArgs>),
    /// Run the built-in controllers (ReplicaSet, Deployment, ...) against any API server.
    /// `logbook serve` runs the same controllers in-process unless --no-controllers.
    Controllers(ComponentArgs),
    /// Run the scheduler against any API server: assigns pending pods to nodes.
    /// `logbook serve` runs the same scheduler in-process unless --no-scheduler.
    Scheduler(SchedulerArgs),
    /// Run a node agent against any API server: `--cri-socket S` runs this machine's pods
    /// as containers through a CRI runtime (containerd); `--simulate N` registers N
    /// simulated nodes that run their pods the way kwok does (for tests and scale
    /// benchmarks).
    Node(NodeArgs),
    /// Users with client certificates from the cluster CA.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Secrets at rest: move them to the current encryption key, and see which keys the
    /// retained revisions use (docs/security.md).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Tamper evidence for auditors.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Mint a client certificate (CN = NAME, O = each --group) signed by the cluster CA and
    /// write a kubeconfig for it (default: <data-dir>/users/NAME.kubeconfig).
    Add(UserAddArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UserAddArgs {
    /// The user name (the certificate's CN).
    pub name: String,
    /// A group (the certificate's O); repeatable.
    #[arg(long)]
    pub group: Vec<String>,
    /// The data directory holding the CA (as given to `logbook serve`).
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// Where to write the kubeconfig.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Rewrite every Secret's current state under the server's current write key: an
    /// unchanged update of each, which the server writes because the stored form is stale
    /// (as `kubectl get secrets -A -o json | kubectl replace -f -` does for kube-apiserver).
    /// Prints progress per namespace and a final count. Old revisions keep the key they
    /// were written with: the log is never rewritten.
    Reencrypt(SecretsReencryptArgs),
    /// On a stopped store: how many retained revisions (and current objects) of each
    /// encrypted resource use each key id, so you know when an old key may be dropped.
    KeyUsage(SecretsKeyUsageArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SecretsReencryptArgs {
    /// The kubeconfig (default: $KUBECONFIG, else <data-dir>/kubeconfig, else
    /// ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The data directory whose admin kubeconfig is the default.
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// Secrets listed per page.
    #[arg(long, default_value_t = crate::secrets::REENCRYPT_PAGE_ITEMS_DEFAULT)]
    pub page_items: u32,
}

#[derive(Debug, Clone, Args)]
pub struct SecretsKeyUsageArgs {
    /// The data directory (as given to `logbook serve`; the server must be stopped).
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// The resources to count, as in the encryption configuration (repeatable).
    #[arg(long, default_value = "secrets")]
    pub resource: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Re-derive, on a stopped store, every event hash, every per-object chain link (a chain
    /// may start at a compacted horizon) and every checkpoint; print progress, then a
    /// summary. Exits non-zero naming the first broken link (position and object).
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The committed store benchmark: durable appends, watch fan-out, list, reopen (and etcd
    /// side by side with --etcd). Progress goes to stderr, the Markdown results to stdout.
    Store(BenchStoreArgs),
    /// The committed API benchmark: starts `logbook serve` as a separate process and drives
    /// it over HTTPS (creates/s, GET and LIST latency, RSS, watch fan-out lag).
    Api(BenchApiArgs),
    /// The custom-resource benchmark: CRD to first object, custom-object creates, Table
    /// LIST of 10,000 custom objects with printer columns.
    Crd(BenchApiArgs),
    /// Controllers, scheduler and simulated nodes at scale: one Deployment of --replicas
    /// pods on --nodes simulated nodes; pod startup latency, pods bound per second, lease
    /// heartbeats, RSS.
    Workloads(BenchWorkloadsArgs),
    /// Kubernetes' scale envelope: 5,000 simulated nodes and 150,000 pods; mutating API p99
    /// under the node lease load, server RSS, and how fast 500 nodes going silent at once
    /// are noticed.
    Scale(BenchScaleArgs),
    /// What security costs: pod creates/s with 64 clients, security off
    /// (AlwaysAllow) vs a client certificate and a ServiceAccount token under RBAC.
    Auth(BenchApiArgs),
    /// Per-user fairness: a quiet user's p50/p99 alone and while a noisy user offers 10x
    /// the server's measured capacity (it should mostly get 429s).
    Fairness(BenchApiArgs),
    /// The history benchmark: a store of 1,000,000 events, then an object's revisions, a
    /// list as of an old position and one user's change feed, over HTTPS.
    History(BenchApiArgs),
    /// `audit verify` over a store of --events events (1,000,000 by default): events/s.
    Audit(BenchAuditArgs),
    /// Pod startup latency with real containers: a real node agent on --cri-socket
    /// (containerd), --pods busybox pods created at once; p50/p90/p99 from create to the
    /// watch seeing Running (`scripts/bench-pod-startup.sh` starts a private containerd).
    PodStartup(BenchPodsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchPodsArgs {
    /// The containerd CRI socket the node agent uses.
    #[arg(long)]
    pub cri_socket: PathBuf,
    /// Pods per phase.
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// Creation rate of the paced phase, pods per second (the burst phase creates all at
    /// once).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out/pod-startup")]
    pub out: PathBuf,
    /// The logbook binary to start as server and node agent (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchAuditArgs {
    /// Events to write before verifying.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Where the temporary data directory goes (default: the system temp dir).
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchApiArgs {
    /// Smoke run: 3 s phases, 20,000 pods listed, 200 watches.
    #[arg(long)]
    pub quick: bool,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out/api")]
    pub out: PathBuf,
    /// The logbook binary to start as the server (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra arguments for `logbook serve` (repeatable), e.g. `--server-arg=--advertise-address=10.0.0.5`.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchWorkloadsArgs {
    /// Smoke run: 100 nodes, 2,000 replicas.
    #[arg(long)]
    pub quick: bool,
    /// Simulated nodes in the server's process.
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Replicas of the one Deployment.
    #[arg(long, default_value_t = 30_000)]
    pub replicas: usize,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out/workloads")]
    pub out: PathBuf,
    /// The logbook binary to start as the server (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra arguments for `logbook serve` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchScaleArgs {
    /// Smoke run: 300 nodes (30 silenced), 9,000 pods.
    #[arg(long)]
    pub quick: bool,
    /// Simulated nodes, in two `logbook node` processes.
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Pods, as Deployments of 5,000 replicas.
    #[arg(long, default_value_t = 150_000)]
    pub pods: usize,
    /// Nodes that go silent at once in the last phase.
    #[arg(long, default_value_t = 500)]
    pub silent: usize,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out/scale")]
    pub out: PathBuf,
    /// The logbook binary to start as the server (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra arguments for `logbook serve` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchStoreArgs {
    /// Smoke run: shorter phases and 100,000 events instead of 1,000,000 for the reopen phase.
    #[arg(long)]
    pub quick: bool,
    /// Directory for results.md and results.json (created if missing).
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Also start a local etcd and measure its puts/s side by side (needs the `etcd` feature).
    #[arg(long)]
    pub etcd: bool,
    /// The etcd server binary (Debian's etcd-server installs /usr/bin/etcd).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Run only these phases (comma separated); all of them by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Phase>,
    /// Where the temporary data directories go (default: the system temp dir). They are
    /// deleted at the end.
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Append,
    Fanout,
    List,
    Reopen,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The data directory (as given to `logbook serve`).
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// Check only the newest N events of the log instead of all of it (what startup does).
    #[arg(long)]
    pub tail: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct FenceArgs {
    /// The newest resourceVersion clients may hold from before the restore (e.g. the lost
    /// store's last `logbook_log_position` metric, rounded up generously).
    #[arg(long, value_name = "RV")]
    pub above: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The data directory: the store (embedded), the PKI (pki/) and the admin kubeconfig.
    /// With `--store fdb` it holds only the PKI and local state; replicas share the cluster
    /// CA by holding the same `pki/ca.crt` and `pki/ca.key`.
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address and port to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: std::net::SocketAddr,
    /// Extra names or IP addresses clients use to reach this server (added to the serving
    /// certificate; the first one goes into the kubeconfig instead of 127.0.0.1).
    #[arg(long)]
    pub advertise_address: Vec<String>,
    /// The IPv4 range Service ClusterIPs are allocated from (the first address goes to the
    /// `kubernetes` Service).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The port range NodePorts are allocated from, inclusive.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// How long a resource's old revisions are kept, as RESOURCE=DURATION (repeatable).
    /// RESOURCE is kubectl's PLURAL.GROUP (`leases.coordination.k8s.io`, `events`,
    /// `events.events.k8s.io`); DURATION is `30m`, `1h`, `7d` or `forever`. Default: every
    /// revision forever, except Leases and Events (both groups): 1h. Current objects are
    /// never removed.
    #[arg(long, value_name = "RESOURCE=DURATION")]
    pub retention: Vec<String>,
    /// How often the retention compactor runs (default `RETENTION_COMPACT_INTERVAL_MS`,
    /// 60s; tests use 1s).
    #[arg(long, hide = true)]
    pub retention_interval: Option<String>,
    /// How often checkpoints are written (default `CHECKPOINT_INTERVAL_MS`, 10s; tests use
    /// 500ms).
    #[arg(long, hide = true)]
    pub checkpoint_interval: Option<String>,
    /// Non-watch requests one user may have in flight (default
    /// `REQUESTS_INFLIGHT_PER_USER_MAX`, 512; tests lower it). system:masters is exempt.
    #[arg(long, hide = true, value_name = "N")]
    pub requests_inflight_per_user: Option<usize>,
    /// How long an HTTP/1 client may take to send a request's headers, idle keep-alive
    /// included (default `HTTP1_HEADER_READ_TIMEOUT_MS`, 120s; tests shorten it).
    #[arg(long, hide = true, value_name = "DURATION")]
    pub http1_header_read_timeout: Option<String>,
    /// kube-apiserver's EncryptionConfiguration file: which resources are encrypted before
    /// their events are written, and with which keys (`aesgcm`, `identity`). Default:
    /// <data-dir>/pki/encryption-config.yaml, generated on first start with a random key for
    /// Secrets (docs/security.md).
    #[arg(long, value_name = "PATH")]
    pub encryption_provider_config: Option<PathBuf>,
    /// Do not run the built-in controllers in-process (run `logbook controllers` instead,
    /// or none).
    /// Serve requests without credentials as `system:anonymous` (group
    /// `system:unauthenticated`), authorized like any user; off: they get 401. Health probes
    /// (`/healthz`, `/livez`, `/readyz`) never need credentials.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub anonymous_auth: bool,
    /// `Node,RBAC` (the default: system:masters, the node authorizer, then RBAC) or
    /// `AlwaysAllow` (every authenticated request allowed: only for measuring what
    /// authorization costs).
    #[arg(long, default_value = "Node,RBAC", value_name = "MODE")]
    pub authorization_mode: String,
    /// The `iss` of ServiceAccount tokens and of OIDC discovery.
    #[arg(long, default_value = logbook_api::auth::authn::SERVICE_ACCOUNT_ISSUER_DEFAULT)]
    pub service_account_issuer: String,
    /// Audiences a token must carry to authenticate to this server (default: the issuer).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    #[arg(long)]
    pub no_controllers: bool,
    /// Do not run the scheduler in-process (run `logbook scheduler` instead, or none).
    #[arg(long)]
    pub no_scheduler: bool,
    /// How long a node may stay silent (no Lease renewal, no status) before the node
    /// lifecycle controller marks it Unknown and taints it (kube's flag; default 50s).
    #[arg(long, value_name = "DURATION")]
    pub node_monitor_grace_period: Option<String>,
    /// Also run this many simulated nodes in-process (kwok-like; default none).
    #[arg(long, default_value_t = 0)]
    pub simulate_nodes: usize,
    #[command(flatten)]
    pub sim_shape: SimShape,
}

/// Which store the log is in (`serve`, `fence`).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where the log lives: `embedded` (in the data directory) or `fdb` (a FoundationDB
    /// cluster; needs a build with the `fdb` feature and libfdb_c).
    #[arg(long = "store", value_enum, default_value_t = StoreKind::Embedded)]
    pub kind: StoreKind,
    /// The FoundationDB cluster file (`--store fdb`); default: `$FDB_CLUSTER_FILE`, then
    /// `/etc/foundationdb/fdb.cluster`.
    #[arg(long, value_name = "PATH")]
    pub fdb_cluster_file: Option<PathBuf>,
    /// The store's name in the cluster: its keys live in the directory `logbook/NAME`
    /// (`--store fdb`). Every replica of one control plane uses the same name.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub fdb_directory: String,
    /// Log partitions of a FoundationDB store (`--store fdb`): appends spread over this many
    /// key ranges so no storage server takes every commit. A larger value than the store has
    /// grows it (older events stay where they are); a smaller one is ignored (docs/fdb.md).
    #[arg(long, default_value_t = DEFAULT_FDB_LOG_PARTITIONS)]
    pub fdb_log_partitions: u16,
}

/// Log partitions of a new FoundationDB store unless `--fdb-log-partitions` says otherwise.
pub const DEFAULT_FDB_LOG_PARTITIONS: u16 = 16;

/// The storage backend of `logbook serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// redb plus a write-ahead log in the data directory.
    Embedded,
    /// A FoundationDB 7.3 cluster, shared by any number of replicas.
    Fdb,
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How many simulated nodes to register and run (instead of a real node agent).
    #[arg(
        long,
        conflicts_with = "cri_socket",
        required_unless_present = "cri_socket"
    )]
    pub simulate: Option<usize>,
    #[command(flatten)]
    pub shape: SimShape,
    /// Run the real node agent against this CRI runtime socket (containerd's, CRI-O's):
    /// pods bound to this node run as containers.
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// The Node's name (the kubeconfig's user must be `system:node:<name>`; default: the
    /// host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where pod volumes, container logs and the agent's serving certificate live.
    #[arg(long, default_value = "/var/lib/logbook-node")]
    pub root_dir: PathBuf,
    /// The address the API server reaches this node at (default: the source address of the
    /// default route).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// The agent's HTTPS port (logs, exec, port-forward), as kubelet's 10250.
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Pods this node accepts at most.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
}

/// What simulated nodes look like.
#[derive(Debug, Clone, Args)]
pub struct SimShape {
    /// Node names are `<prefix>-<index>`.
    #[arg(long, default_value = "sim-node")]
    pub node_name_prefix: String,
    /// CPU cores per simulated node.
    #[arg(long, default_value_t = 32)]
    pub node_cpu: u64,
    /// Memory per simulated node, in GiB.
    #[arg(long, default_value_t = 256)]
    pub node_memory_gib: u64,
    /// Pods per simulated node at most (the `pods` capacity).
    #[arg(long, default_value_t = 110)]
    pub node_pods_max: u32,
}

#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Schedule the pods whose `spec.schedulerName` is this (a second scheduler beside the
    /// default one takes another name).
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Schedule only while holding the scheduler's Lease in kube-system (so two schedulers
    /// never bind at once); `--leader-elect=false` to always schedule.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
}

/// How a component (controllers, scheduler, node agent) reaches the API server.
#[derive(Debug, Clone, Args)]
pub struct ComponentArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the component saves its caches and log positions, to resume from them after
    /// a restart instead of listing everything again.
    #[arg(long, default_value = "logbook-controllers-state")]
    pub state_dir: PathBuf,
    /// How long a node may stay silent before it is marked Unknown and tainted (default 50s).
    #[arg(long, value_name = "DURATION")]
    pub node_monitor_grace_period: Option<String>,
    /// Reconcile only while holding the `logbook-controllers` Lease in kube-system (so two
    /// copies never reconcile at once); `--leader-elect=false` to always reconcile.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// The data directory (as given to `logbook serve`; the server must be stopped).
    #[arg(long, default_value = "logbook-data")]
    pub data_dir: PathBuf,
    /// The new horizon, a resourceVersion (default: the log head).
    #[arg(long)]
    pub to: Option<String>,
}
