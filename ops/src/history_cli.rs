//! `kubectl history …` and `logbook history …`: an auditor's questions as commands, over the
//! history API (`history.logbook.dev/v1`, whose contract is `api/src/history.rs`) and the
//! `asOf` / `resourceVersionMatch=Exact` reads every resource accepts.
//!
//! One module, two binaries: `kubectl-history` (a kubectl plugin: kubectl runs it for
//! `kubectl history …` when it is on PATH) and the `history` subcommand of `logbook`. Both
//! read the kubeconfig the way kubectl does (`--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config`; `--context`; the context's namespace unless `-n`), through kube-rs, which
//! also handles client certificates and TLS.
//!
//! Verbs: `TYPE/NAME` (an object's revisions), `diff`, `get --as-of`, `changes`, `export`.
//! Tables look like kubectl's; `-o json|yaml` prints what the server answered (pages joined).
//!
//! # Invariants
//! - A client of the public API only: no store, no crate internals but the patch summary
//!   (`logbook_api::history::summary`, so the server's Table and this one agree).
//! - Never panics on server input; a server error prints its `Status` message and exits 1.
//! - `export` writes every change of its filter exactly once, oldest first, and says after
//!   which revision to resume; `--after R` continues exactly after R.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

/// The history API's path prefix.
pub const HISTORY_API: &str = "/apis/history.logbook.dev/v1";
/// Items asked for per request while following `continue` (the server's own default page).
pub const PAGE_ITEMS_DEFAULT: usize = 500;
/// Items per request of `export` (overridable with `--page-items`).
pub const EXPORT_PAGE_ITEMS_DEFAULT: usize = 1_000;
/// How often `export` redraws its progress line on a terminal.
pub const EXPORT_PROGRESS_INTERVAL_MS: u64 = 1_000;
/// The largest line-by-line table the diff builds (lines of one side × lines of the other,
/// after common leading and trailing lines are cut); beyond it the changed middle is shown as
/// removed then added (still a correct diff, only not the shortest). 4 M cells = 16 MiB.
pub const DIFF_CELLS_MAX: usize = 4_000_000;
/// Unchanged lines shown around each change of a diff (`diff -u`'s default).
pub const DIFF_CONTEXT_LINES: usize = 3;
/// Spaces between table columns (kubectl's tabwriter padding).
pub const COLUMN_GAP_SPACES: usize = 3;
/// Requests discovery makes at once (one per API group version).
pub const DISCOVERY_CONCURRENT_REQUESTS_MAX: usize = 8;

/// `history`'s arguments: a verb, or `TYPE/NAME` for an object's revisions.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    #[command(flatten)]
    pub show: ShowArgs,
}

/// Where the cluster is and which namespace is meant, as kubectl takes them.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; for `logbook history`
    /// also <data-dir>/kubeconfig when KUBECONFIG is unset and the file exists).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// A Logbook data directory whose admin kubeconfig is the default (`logbook history`
    /// uses logbook-data when this is not given).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The server's list (pages joined) as JSON.
    Json,
    /// The same as YAML.
    Yaml,
    /// The table with more columns.
    Wide,
}

/// `history TYPE/NAME`: one object's revisions, newest first.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The object: TYPE/NAME (deploy/web) or TYPE NAME.
    #[arg(value_name = "TYPE/NAME")]
    pub target: Vec<String>,
    /// Show at most this many revisions (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start from a continue token a previous `--limit` printed.
    #[arg(long = "continue")]
    pub continue_token: Option<String>,
    /// Output format: json, yaml or wide.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum HistoryCommand {
    /// A unified diff of an object's YAML between two revisions:
    /// `diff TYPE/NAME RV1 RV2` (or `diff TYPE NAME RV1 RV2`).
    Diff(DiffArgs),
    /// Objects as they were at a moment: `get TYPE [NAME] --as-of TIME`.
    Get(GetArgs),
    /// The change feed of the namespace (or with -A, the cluster), newest first.
    Changes(ChangesArgs),
    /// Every change of the filter as JSON lines, oldest first, resumable with --after (default:
    /// the whole cluster; -n for one namespace).
    Export(ExportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// TYPE/NAME RV1 RV2, or TYPE NAME RV1 RV2.
    #[arg(value_name = "ARGS", num_args = 3..=4, required = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The resource type (pods, po, deploy, deployments.apps…), or TYPE/NAME.
    #[arg(value_name = "TYPE")]
    pub resource: String,
    /// One object's name.
    pub name: Option<String>,
    /// The moment: an RFC 3339 time (2026-11-20T14:02:00Z) or how long ago (2h, 90m).
    #[arg(long)]
    pub as_of: String,
    /// Output format: json, yaml or wide.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

/// The filters the change feed takes (shared by `changes` and `export`).
#[derive(Debug, Clone, Args)]
pub struct FeedFilter {
    /// Only changes by this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only changes to this resource type (deploy, pods, configmaps…).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only changes to objects of this name (needs --resource).
    #[arg(long)]
    pub name: Option<String>,
    /// Only these verbs (comma-separated: create,patch,update,delete…).
    #[arg(long)]
    pub verb: Option<String>,
    /// From this time: RFC 3339, or how long ago (168h).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time: RFC 3339, or how long ago.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    pub filter: FeedFilter,
    /// Show at most this many changes (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start from a continue token a previous `--limit` printed.
    #[arg(long = "continue")]
    pub continue_token: Option<String>,
    /// Output format: json, yaml or wide.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FeedFilter,
    /// Only changes after this revision (exclusive): what the last export printed to resume.
    #[arg(long)]
    pub after: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub out: Option<PathBuf>,
    /// Changes asked for per request.
    #[arg(long, default_value_t = EXPORT_PAGE_ITEMS_DEFAULT)]
    pub page_items: usize,
}

/// Runs a history command; prints errors kubectl's way. Returns the process exit code.
/// `default_data_dir`: where `logbook history` looks for an admin kubeconfig when neither
/// `--kubeconfig` nor `KUBECONFIG` is given (the plugin has none: it behaves like kubectl).
pub async fn main(args: HistoryArgs, default_data_dir: Option<&Path>) -> i32 {
    match run(args, default_data_dir).await {
        Ok(()) => 0,
        Err(e) => {
            match e.downcast_ref::<ServerError>() {
                Some(s) => eprintln!("{s}"),
                None => eprintln!("error: {e:#}"),
            }
            1
        }
    }
}

async fn run(args: HistoryArgs, default_data_dir: Option<&Path>) -> Result<()> {
    let conn = Conn::new(&args.conn, default_data_dir).await?;
    match args.command {
        None => show(&conn, &args.show).await,
        Some(HistoryCommand::Diff(a)) => diff(&conn, &a).await,
        Some(HistoryCommand::Get(a)) => get_as_of(&conn, &a).await,
        Some(HistoryCommand::Changes(a)) => changes(&conn, &a).await,
        Some(HistoryCommand::Export(a)) => export(&conn, &args.conn, &a).await,
    }
}

/// An error answer of the server: printed as kubectl prints it.
#[derive(Debug)]
struct ServerError {
    reason: String,
    message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "Error from server: {}", self.message)
        } else {
            write!(f, "Error from server ({}): {}", self.reason, self.message)
        }
    }
}

impl std::error::Error for ServerError {}

/// A connected client and the namespace the command means.
struct Conn {
    client: Client,
    /// The namespace: `-n`, else the context's.
    namespace: String,
    /// Whether `-n` was given (export defaults to the whole cluster otherwise).
    namespace_given: bool,
    all_namespaces: bool,
}

impl Conn {
    async fn new(args: &ConnArgs, default_data_dir: Option<&Path>) -> Result<Self> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| default_data_dir.map(Path::to_path_buf));
        let path = args.kubeconfig.clone().or_else(|| {
            if std::env::var_os("KUBECONFIG").is_some() {
                return None;
            }
            data_dir
                .map(|d| d.join("kubeconfig"))
                .filter(|p| p.exists())
        });
        let config = match path {
            Some(p) => {
                let kc = Kubeconfig::read_from(&p)
                    .with_context(|| format!("reading the kubeconfig {}", p.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| format!("loading the kubeconfig {}", p.display()))?
            }
            None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("loading the kubeconfig")?,
            None => kube::Config::infer()
                .await
                .context("finding a kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config)")?,
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("building the client")?;
        Ok(Conn {
            client,
            namespace,
            namespace_given: args.namespace.is_some(),
            all_namespaces: args.all_namespaces,
        })
    }

    /// GETs `path?query` and parses the JSON answer.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        accept: Option<&str>,
    ) -> Result<Value> {
        let uri = with_query(path, query);
        let mut req = http::Request::get(&uri);
        if let Some(a) = accept {
            req = req.header(http::header::ACCEPT, a);
        }
        let req = req.body(Vec::new()).with_context(|| format!("GET {uri}"))?;
        let text = match self.client.request_text(req).await {
            Ok(t) => t,
            Err(kube::Error::Api(s)) => {
                return Err(ServerError {
                    reason: s.reason.clone(),
                    message: s.message.clone(),
                }
                .into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("GET {uri}"))),
        };
        serde_json::from_str(&text).with_context(|| format!("GET {uri}: the answer is not JSON"))
    }

    /// GETs a list, following `continue` until the end or until `limit` items.
    async fn list_pages(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: Option<usize>,
        mut cont: Option<String>,
    ) -> Result<Value> {
        let mut items = Vec::new();
        let mut list: Value;
        loop {
            let want = limit.map_or(PAGE_ITEMS_DEFAULT, |l| l.saturating_sub(items.len()));
            let mut q = query.to_vec();
            q.push(("limit", want.clamp(1, PAGE_ITEMS_DEFAULT).to_string()));
            if let Some(c) = &cont {
                q.push(("continue", c.clone()));
            }
            let mut page = self.get(path, &q, None).await?;
            if let Some(Value::Array(more)) = page.get_mut("items").map(Value::take) {
                items.extend(more);
            }
            cont = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            list = page;
            if cont.is_none() || limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        if let Some(l) = limit
            && items.len() > l
        {
            items.truncate(l);
        }
        if let Value::Object(m) = &mut list {
            m.insert("items".into(), Value::Array(items));
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                match &cont {
                    Some(c) => meta.insert("continue".into(), Value::String(c.clone())),
                    None => meta.remove("continue"),
                };
            }
        }
        Ok(list)
    }

    /// The API resource a kubectl-style type names, through discovery.
    async fn resolve(&self, ty: &str) -> Result<ApiResource> {
        let all = discover(self).await?;
        resolve(&all, ty).cloned()
    }
}

/// `path?k=v&…` with the values percent-encoded.
fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let mut uri = path.to_string();
    for (i, (k, v)) in query.iter().enumerate() {
        uri.push(if i == 0 { '?' } else { '&' });
        uri.push_str(k);
        uri.push('=');
        uri.push_str(&encode(v));
    }
    uri
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One resource of discovery (`/api/v1`, `/apis/GROUP/VERSION`).
#[derive(Debug, Clone)]
struct ApiResource {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    short_names: Vec<String>,
    namespaced: bool,
}

impl ApiResource {
    /// The collection's path: in `ns`, or across namespaces / cluster-scoped for `None`.
    fn collection(&self, ns: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) if self.namespaced => {
                format!("{prefix}/namespaces/{}/{}", encode(ns), self.plural)
            }
            _ => format!("{prefix}/{}", self.plural),
        }
    }

    /// `plural.group`, how the history API and kubectl name it unambiguously.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every resource of every group's preferred version, core first (kubectl's priority when a
/// short name is ambiguous, e.g. `events`).
async fn discover(conn: &Conn) -> Result<Vec<ApiResource>> {
    use futures::{StreamExt, TryStreamExt};
    let core = conn.get("/api", &[], None).await?;
    let mut gvs: Vec<(String, String)> = core
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(1)
        .map(|v| (String::new(), v.to_string()))
        .collect();
    let groups = conn.get("/apis", &[], None).await?;
    for g in groups
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = g.get("name").and_then(Value::as_str).unwrap_or("");
        let version = g
            .pointer("/preferredVersion/version")
            .or_else(|| g.pointer("/versions/0/version"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !name.is_empty()
            && !version.is_empty()
            && !HISTORY_API.ends_with(&format!("{name}/{version}"))
        {
            gvs.push((name.to_string(), version.to_string()));
        }
    }
    let lists: Vec<(String, String, Value)> = futures::stream::iter(gvs)
        .map(|(g, v)| async move {
            let path = if g.is_empty() {
                format!("/api/{v}")
            } else {
                format!("/apis/{g}/{v}")
            };
            conn.get(&path, &[], None).await.map(|l| (g, v, l))
        })
        .buffered(DISCOVERY_CONCURRENT_REQUESTS_MAX)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for (group, version, list) in lists {
        for r in list
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let plural = s("name");
            if plural.is_empty() || plural.contains('/') {
                continue; // subresources
            }
            out.push(ApiResource {
                group: group.clone(),
                version: version.clone(),
                singular: s("singularName"),
                kind: s("kind"),
                short_names: r
                    .get("shortNames")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                namespaced: r
                    .get("namespaced")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                plural,
            });
        }
    }
    Ok(out)
}

/// The resource `ty` names in kubectl's forms: `deployments`, `deployment`, `deploy`,
/// `Deployment`, `deployments.apps`, `deployments.v1.apps`. The first match in discovery order.
fn resolve<'a>(all: &'a [ApiResource], ty: &str) -> Result<&'a ApiResource> {
    let (name, group) = match ty.split_once('.') {
        Some((n, g)) => (n, Some(g)),
        None => (ty, None),
    };
    let lower = name.to_ascii_lowercase();
    all.iter()
        .find(|r| {
            let named = r.plural == lower
                || r.singular == lower
                || r.kind.eq_ignore_ascii_case(name)
                || r.short_names.contains(&lower);
            let grouped = group.is_none_or(|g| {
                r.group == g
                    || g.split_once('.')
                        .is_some_and(|(v, g)| v == r.version && g == r.group)
            });
            named && grouped
        })
        .ok_or_else(|| anyhow::anyhow!("the server doesn't have a resource type {ty:?}"))
}

/// `TYPE/NAME` or `TYPE NAME`.
fn parse_target(args: &[String]) -> Result<(String, String)> {
    match args {
        [one] => match one.split_once('/') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok((t.to_string(), n.to_string())),
            _ => bail!("expected TYPE/NAME (e.g. deploy/web) or TYPE NAME, got {one:?}"),
        },
        [t, n] if !t.contains('/') => Ok((t.clone(), n.clone())),
        [] => bail!(
            "expected TYPE/NAME (e.g. `history deploy/web`) or a verb: diff, get, changes, export (see --help)"
        ),
        _ => bail!("expected TYPE/NAME (e.g. deploy/web) or TYPE NAME, got {args:?}"),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// JSON (pretty) or YAML.
fn render(v: &Value, format: Format) -> Result<String> {
    Ok(match format {
        Format::Yaml => serde_saphyr::to_string(v).context("rendering YAML")?,
        _ => format!("{}\n", serde_json::to_string_pretty(v)?),
    })
}

/// A kubectl-style table: uppercase headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                line.push_str(&" ".repeat(pad + COLUMN_GAP_SPACES));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A string field of a history item (`<none>` when empty, as kubectl shows missing values).
fn field(item: &Value, pointer: &str) -> String {
    match item.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => "<none>".into(),
    }
}

/// `resource[.group]/name` of a change's object.
fn object_name(item: &Value) -> String {
    let s = |p: &str| item.pointer(p).and_then(Value::as_str).unwrap_or("");
    let group = s("/object/group");
    let resource = if group.is_empty() {
        s("/object/resource").to_string()
    } else {
        format!("{}.{group}", s("/object/resource"))
    };
    format!("{resource}/{}", s("/object/name"))
}

fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Prints where to continue when `--limit` left items on the server.
/// One column of a table of history items: its header and how a cell is read.
type Column = (&'static str, fn(&Value) -> String);

const REVISION: Column = ("revision", |i| field(i, "/revision"));
const TIME: Column = ("time", |i| field(i, "/time"));
const NAMESPACE: Column = ("namespace", |i| field(i, "/object/namespace"));
const VERB: Column = ("verb", |i| field(i, "/verb"));
const USER: Column = ("user", |i| field(i, "/user/username"));
const OBJECT: Column = ("object", object_name);
const CHANGE: Column = ("change", |i| logbook_api::history::summary(i.get("patch")));
const USER_AGENT: Column = ("user-agent", |i| field(i, "/userAgent"));
const SOURCE: Column = ("source", |i| field(i, "/sourceIP"));
const GROUPS: Column = ("groups", |i| field(i, "/user/groups"));

/// Prints the items of a history list as a table of `columns`, then the continue hint.
fn change_table(list: &Value, columns: &[Column]) -> Result<()> {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|i| columns.iter().map(|(_, cell)| cell(i)).collect())
        .collect();
    emit(&table(&headers, &rows))?;
    hint_continue(list);
    Ok(())
}

fn hint_continue(list: &Value) {
    if let Some(c) = list.pointer("/metadata/continue").and_then(Value::as_str) {
        eprintln!("(more: add --continue {c})");
    }
}

/// `history TYPE/NAME`.
async fn show(conn: &Conn, args: &ShowArgs) -> Result<()> {
    let (ty, name) = parse_target(&args.target)?;
    let res = conn.resolve(&ty).await?;
    let path = if res.namespaced {
        format!(
            "{HISTORY_API}/namespaces/{}/revisions",
            encode(&conn.namespace)
        )
    } else {
        format!("{HISTORY_API}/revisions")
    };
    let query = [("resource", res.qualified()), ("name", name.clone())];
    let list = conn
        .list_pages(&path, &query, args.limit, args.continue_token.clone())
        .await?;
    if let Some(f @ (Format::Json | Format::Yaml)) = args.output {
        return emit(&render(&list, f)?);
    }
    if items(&list).is_empty() {
        eprintln!("No revisions of {}/{name} found.", res.qualified());
        return Ok(());
    }
    let mut columns: Vec<Column> = vec![REVISION, TIME, VERB, USER, CHANGE];
    if args.output == Some(Format::Wide) {
        columns.extend([USER_AGENT, SOURCE, GROUPS]);
    }
    change_table(&list, &columns)
}

/// `history changes`.
async fn changes(conn: &Conn, args: &ChangesArgs) -> Result<()> {
    let path = if conn.all_namespaces {
        format!("{HISTORY_API}/changes")
    } else {
        format!(
            "{HISTORY_API}/namespaces/{}/changes",
            encode(&conn.namespace)
        )
    };
    let list = conn
        .list_pages(
            &path,
            &feed_query(&args.filter),
            args.limit,
            args.continue_token.clone(),
        )
        .await?;
    if let Some(f @ (Format::Json | Format::Yaml)) = args.output {
        return emit(&render(&list, f)?);
    }
    if items(&list).is_empty() {
        eprintln!("No changes found.");
        return Ok(());
    }
    let mut columns: Vec<Column> = vec![TIME];
    if conn.all_namespaces {
        columns.push(NAMESPACE);
    }
    columns.extend([USER, VERB, OBJECT, CHANGE]);
    if args.output == Some(Format::Wide) {
        columns.extend([REVISION, USER_AGENT, SOURCE, GROUPS]);
    }
    change_table(&list, &columns)
}

/// The change feed's query parameters for a filter.
fn feed_query(f: &FeedFilter) -> Vec<(&'static str, String)> {
    [
        ("user", &f.user),
        ("resource", &f.resource),
        ("name", &f.name),
        ("verb", &f.verb),
        ("since", &f.since),
        ("until", &f.until),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

/// `--as-of`: an RFC 3339 time as given, or a duration turned into the time that long ago.
fn parse_as_of(s: &str) -> Result<String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.to_string());
    }
    if let Ok(d) = s.parse::<jiff::SignedDuration>() {
        let t = jiff::Timestamp::now()
            .checked_sub(d)
            .with_context(|| format!("--as-of {s:?} is out of range"))?;
        return Ok(t.to_string());
    }
    bail!("--as-of {s:?} is neither an RFC 3339 time (2026-11-20T14:02:00Z) nor a duration (2h)")
}

/// `history get TYPE [NAME] --as-of TIME`.
async fn get_as_of(conn: &Conn, args: &GetArgs) -> Result<()> {
    let (ty, name) = match (args.resource.split_once('/'), &args.name) {
        (Some((t, n)), None) => (t.to_string(), Some(n.to_string())),
        (Some(_), Some(_)) => bail!("give TYPE NAME or TYPE/NAME, not both"),
        (None, n) => (args.resource.clone(), n.clone()),
    };
    let res = conn.resolve(&ty).await?;
    let as_of = parse_as_of(&args.as_of)?;
    let all = conn.all_namespaces && name.is_none();
    let ns = (!all).then_some(conn.namespace.as_str());
    let mut path = res.collection(ns);
    if let Some(n) = &name {
        path = format!("{path}/{}", encode(n));
    }
    let query = [("asOf", as_of.clone())];
    if let Some(f @ (Format::Json | Format::Yaml)) = args.output {
        return emit(&render(&conn.get(&path, &query, None).await?, f)?);
    }
    let t = conn
        .get(
            &path,
            &query,
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        )
        .await?;
    let wide = args.output == Some(Format::Wide);
    let columns: Vec<(usize, String)> = t
        .get("columnDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
        .map(|(i, c)| {
            (
                i,
                c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let rows = t
        .get("rows")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        match ns.filter(|_| res.namespaced) {
            Some(ns) => eprintln!("No resources found in {ns} namespace as of {as_of}."),
            None => eprintln!("No resources found as of {as_of}."),
        }
        return Ok(());
    }
    let with_ns = all && res.namespaced;
    let mut headers: Vec<&str> = Vec::new();
    if with_ns {
        headers.push("namespace");
    }
    headers.extend(columns.iter().map(|(_, n)| n.as_str()));
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if with_ns {
                row.push(field(r, "/object/metadata/namespace"));
            }
            for (i, _) in &columns {
                row.push(match r.pointer(&format!("/cells/{i}")) {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => "<none>".into(),
                    Some(v) => v.to_string(),
                });
            }
            row
        })
        .collect();
    emit(&table(&headers, &rows))
}

/// `history diff TYPE/NAME RV1 RV2`.
async fn diff(conn: &Conn, args: &DiffArgs) -> Result<()> {
    let (target, rv1, rv2) = match args.args.as_slice() {
        [t, a, b] => (parse_target(std::slice::from_ref(t))?, a, b),
        [t, n, a, b] => (parse_target(&[t.clone(), n.clone()])?, a, b),
        other => bail!("expected TYPE/NAME RV1 RV2, got {other:?}"),
    };
    let (ty, name) = target;
    let res = conn.resolve(&ty).await?;
    let path = format!(
        "{}/{}",
        res.collection(Some(&conn.namespace)),
        encode(&name)
    );
    let mut sides = Vec::new();
    for rv in [rv1, rv2] {
        let query = [
            ("resourceVersion", rv.clone()),
            ("resourceVersionMatch", "Exact".to_string()),
        ];
        let mut obj = conn.get(&path, &query, None).await?;
        if let Some(Value::Object(m)) = obj.get_mut("metadata") {
            // Rewritten by every write (times, versions): noise in a diff.
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        sides.push(render(&obj, Format::Yaml)?);
    }
    let label = format!("{}/{name}", res.qualified());
    let (a, b) = (&sides[0], &sides[1]);
    emit(&unified_diff(
        a,
        b,
        &format!("{label}@{rv1}"),
        &format!("{label}@{rv2}"),
    ))
}

/// One step of a line diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Same,
    Removed,
    Added,
}

/// The steps turning `a` into `b`: common leading and trailing lines, and a longest common
/// subsequence between them (bounded by [`DIFF_CELLS_MAX`]).
fn diff_steps(a: &[&str], b: &[&str]) -> Vec<Step> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut steps = vec![Step::Same; prefix];
    let (n, m) = (ma.len(), mb.len());
    if n.saturating_mul(m) > DIFF_CELLS_MAX {
        steps.extend(std::iter::repeat_n(Step::Removed, n));
        steps.extend(std::iter::repeat_n(Step::Added, m));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                steps.push(Step::Same);
                i += 1;
                j += 1;
            } else if j == m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                steps.push(Step::Removed);
                i += 1;
            } else {
                steps.push(Step::Added);
                j += 1;
            }
        }
    }
    steps.extend(std::iter::repeat_n(Step::Same, suffix));
    steps
}

/// A unified diff (`diff -u`) of two texts; empty when they are equal.
fn unified_diff(a: &str, b: &str, label_a: &str, label_b: &str) -> String {
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let steps = diff_steps(&la, &lb);
    // Before each step: the lines of a and b consumed so far.
    let mut at = Vec::with_capacity(steps.len() + 1);
    let (mut i, mut j) = (0usize, 0usize);
    for s in &steps {
        at.push((i, j));
        match s {
            Step::Same => (i, j) = (i + 1, j + 1),
            Step::Removed => i += 1,
            Step::Added => j += 1,
        }
    }
    at.push((i, j));
    let changes: Vec<usize> = (0..steps.len())
        .filter(|&k| steps[k] != Step::Same)
        .collect();
    if changes.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {label_a}\n+++ {label_b}\n");
    let mut k = 0;
    while k < changes.len() {
        // A hunk: changes closer than two contexts apart share one.
        let first = changes[k];
        let mut last = first;
        while k + 1 < changes.len() && changes[k + 1] - last <= 2 * DIFF_CONTEXT_LINES + 1 {
            k += 1;
            last = changes[k];
        }
        k += 1;
        let start = first.saturating_sub(DIFF_CONTEXT_LINES);
        let end = (last + 1 + DIFF_CONTEXT_LINES).min(steps.len());
        let (a0, b0) = at[start];
        let (a1, b1) = at[end];
        let pos = |from: usize, count: usize| if count == 0 { from } else { from + 1 };
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            pos(a0, a1 - a0),
            a1 - a0,
            pos(b0, b1 - b0),
            b1 - b0
        ));
        for s in start..end {
            let (ia, ib) = at[s];
            match steps[s] {
                Step::Same => out.push_str(&format!(" {}\n", la[ia])),
                Step::Removed => out.push_str(&format!("-{}\n", la[ia])),
                Step::Added => out.push_str(&format!("+{}\n", lb[ib])),
            }
        }
    }
    out
}

/// What the progress line shows.
struct Progress {
    written: AtomicU64,
    /// The time of the last change written (RFC 3339).
    at: std::sync::Mutex<String>,
    started: Instant,
}

impl Progress {
    fn line(&self) -> String {
        let n = self.written.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let at = self.at.lock().map(|s| s.clone()).unwrap_or_default();
        #[allow(clippy::cast_precision_loss)] // a rate on a progress line
        let rate = n as f64 / secs;
        format!("{n} events written, {rate:.0} events/s, at {at}")
    }
}

/// `logbook history export`.
async fn export(conn: &Conn, conn_args: &ConnArgs, args: &ExportArgs) -> Result<()> {
    // A SIEM export is of the whole cluster unless a namespace is asked for.
    let path = if conn.namespace_given && !conn_args.all_namespaces {
        format!(
            "{HISTORY_API}/namespaces/{}/changes",
            encode(&conn.namespace)
        )
    } else {
        format!("{HISTORY_API}/changes")
    };
    let mut query = feed_query(&args.filter);
    query.push(("order", "oldest".into()));
    query.push(("limit", args.page_items.max(1).to_string()));
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let progress = Arc::new(Progress {
        written: AtomicU64::new(0),
        at: std::sync::Mutex::new(String::new()),
        started: Instant::now(),
    });
    let ticker = std::io::stderr().is_terminal().then(|| {
        let p = Arc::clone(&progress);
        tokio::spawn(async move {
            let period = Duration::from_millis(EXPORT_PROGRESS_INTERVAL_MS);
            // The first line after one period: an export that ends sooner needs none.
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                every.tick().await;
                eprint!("\r\x1b[K{}", p.line());
            }
        })
    });
    let mut last: Option<String> = args.after.clone();
    let mut cont: Option<String> = None;
    let result: Result<()> = async {
        loop {
            let mut q = query.clone();
            match (&cont, &last) {
                (Some(c), _) => q.push(("continue", c.clone())),
                // The first page (and nothing else) starts after --after.
                (None, Some(a)) => q.push(("after", a.clone())),
                (None, None) => {}
            }
            let page = conn.get(&path, &q, None).await?;
            for item in items(&page) {
                let line = serde_json::to_string(item)?;
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                last = item
                    .get("revision")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                progress.written.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(t) = items(&page)
                .last()
                .and_then(|i| i.get("time"))
                .and_then(Value::as_str)
                && let Ok(mut at) = progress.at.lock()
            {
                *at = t.to_string();
            }
            cont = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cont.is_none() {
                break;
            }
        }
        Ok(())
    }
    .await;
    let flushed = out.flush();
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r\x1b[K");
    }
    let written = progress.written.load(Ordering::Relaxed);
    let resume = match &last {
        Some(r) => format!("resume with the same command and --after {r}"),
        None => "nothing to resume from: run the same command again".to_string(),
    };
    match result.and(flushed.map_err(anyhow::Error::from)) {
        Ok(()) => {
            let at = progress.at.lock().map(|s| s.clone()).unwrap_or_default();
            match &last {
                Some(r) if written > 0 => eprintln!(
                    "export: {written} events written; last revision {r} ({at}); {resume}"
                ),
                _ => eprintln!("export: no events; {resume}"),
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("export stopped after {written} events; {resume}");
            Err(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics has failed
mod tests {
    use super::*;

    #[test]
    fn unified_diffs_show_changed_lines_with_three_lines_of_context() {
        let a = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let b = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n";
        assert_eq!(
            unified_diff(a, b, "x@1", "x@2"),
            "--- x@1\n+++ x@2\n@@ -2,8 +2,9 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n i\n+j\n"
        );
        assert_eq!(unified_diff(a, a, "x@1", "x@2"), "");
        assert_eq!(
            unified_diff("", "new\n", "x@1", "x@2"),
            "--- x@1\n+++ x@2\n@@ -0,0 +1,1 @@\n+new\n"
        );
    }

    #[test]
    fn distant_changes_get_separate_hunks() {
        let a: String = (0..20).map(|i| format!("{i}\n")).collect();
        let b = a.replace("2\n", "two\n").replace("17\n", "seventeen\n");
        let d = unified_diff(&a, &b, "a", "b");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("@@ -1,6 +1,6 @@\n 0\n 1\n-2\n+two\n"), "{d}");
    }

    #[test]
    fn tables_pad_columns_like_kubectl() {
        let t = table(
            &["name", "age"],
            &[
                vec!["web".into(), "1d".into()],
                vec!["database".into(), "2h".into()],
            ],
        );
        assert_eq!(t, "NAME       AGE\nweb        1d\ndatabase   2h\n");
    }

    #[test]
    fn types_resolve_by_plural_singular_short_name_kind_and_group() {
        let r = |group: &str, plural: &str, kind: &str, short: &[&str], ns: bool| ApiResource {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: plural.trim_end_matches('s').into(),
            kind: kind.into(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            namespaced: ns,
        };
        let all = vec![
            r("", "events", "Event", &["ev"], true),
            r("", "nodes", "Node", &["no"], false),
            r("apps", "deployments", "Deployment", &["deploy"], true),
            r("events.k8s.io", "events", "Event", &["ev"], true),
        ];
        for (ty, want) in [
            ("deploy", "deployments.apps"),
            ("deployment", "deployments.apps"),
            ("Deployment", "deployments.apps"),
            ("deployments.apps", "deployments.apps"),
            ("deployments.v1.apps", "deployments.apps"),
            ("events", "events"),
            ("events.events.k8s.io", "events.events.k8s.io"),
            ("no", "nodes"),
        ] {
            assert_eq!(resolve(&all, ty).unwrap().qualified(), want, "{ty}");
        }
        assert!(resolve(&all, "nonsense").is_err());
        assert_eq!(
            resolve(&all, "deploy").unwrap().collection(Some("prod")),
            "/apis/apps/v1/namespaces/prod/deployments"
        );
        assert_eq!(
            resolve(&all, "no").unwrap().collection(Some("prod")),
            "/api/v1/nodes"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            with_query(
                "/p",
                &[
                    ("asOf", "2026-01-01T00:00:00+01:00".into()),
                    ("verb", "a,b".into())
                ]
            ),
            "/p?asOf=2026-01-01T00%3A00%3A00%2B01%3A00&verb=a%2Cb"
        );
    }

    #[test]
    fn as_of_takes_times_and_durations_before_now() {
        assert_eq!(
            parse_as_of("2026-11-20T14:02:00Z").unwrap(),
            "2026-11-20T14:02:00Z"
        );
        let two_hours_ago: jiff::Timestamp = parse_as_of("2h").unwrap().parse().unwrap();
        let diff = jiff::Timestamp::now().duration_since(two_hours_ago);
        assert!((diff.as_secs() - 7_200).abs() < 60, "{diff:?}");
        assert!(parse_as_of("yesterday").is_err());
    }

    #[test]
    fn targets_are_type_slash_name_or_type_and_name() {
        assert_eq!(
            parse_target(&["deploy/web".into()]).unwrap(),
            ("deploy".into(), "web".into())
        );
        assert_eq!(
            parse_target(&["deploy".into(), "web".into()]).unwrap(),
            ("deploy".into(), "web".into())
        );
        assert!(parse_target(&["deploy".into()]).is_err());
        assert!(parse_target(&[]).is_err());
    }
}
