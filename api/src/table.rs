//! Server-side printing: `meta.k8s.io` Tables (what `kubectl get` asks for) and
//! PartialObjectMetadata, negotiated from the `Accept` header the way kube-apiserver does
//! (`application/json;as=Table;v=v1;g=meta.k8s.io`, `v1beta1` too, alternatives separated
//! by commas and tried in order).
//!
//! A [`Renderer`] turns stored objects into whichever form was negotiated: the object itself
//! (the resourceVersion spliced, no parse), a Table row (one JSON parse for the cells; the
//! row's object is a PartialObjectMetadata cut out of the stored bytes), or a
//! PartialObjectMetadata. Lists and watches call it per item, so streamed lists stay
//! streamed. Column definitions are rendered once per printer at startup ([`Columns`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use logbook_schema::printers::{self, Docs, Printer};
use logbook_schema::registry::ResourceInfo;
use logbook_store::Position;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::object::{metadata_inner, render_into_as, set_resource_version};
use crate::request::Query;

/// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`: the group version a client asked the Table or
/// PartialObjectMetadata in (the two are the same on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    V1,
    V1beta1,
}

impl MetaVersion {
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What a Table row carries in `object` (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    /// The default: a PartialObjectMetadata.
    Metadata,
    Object,
}

/// The form a response takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The objects themselves (and lists of them).
    Object,
    Table {
        version: MetaVersion,
        include: Include,
    },
    /// `as=PartialObjectMetadata` (`list: false`) or `as=PartialObjectMetadataList`.
    Partial { version: MetaVersion, list: bool },
}

fn not_acceptable(msg: impl Into<String>) -> ApiError {
    ApiError::new(406, "NotAcceptable", msg)
}

/// Chooses the output from the `Accept` header: the first alternative this server can
/// produce, 406 when none. JSON only (protobuf alternatives are skipped; kubectl always
/// offers JSON after them).
///
/// # Errors
/// 406 when no alternative is acceptable; 400 for an unknown `includeObject`.
pub fn negotiate(accept: Option<&str>, query: &Query) -> ApiResult<Output> {
    let accept = accept.map(str::trim).unwrap_or("");
    if accept.is_empty() {
        return Ok(Output::Object);
    }
    for alternative in accept.split(',') {
        let mut parts = alternative.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if !matches!(media.as_str(), "*/*" | "application/*" | "application/json") {
            continue;
        }
        let (mut as_kind, mut group, mut version) = (None, None, None);
        let mut refused = false;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "as" => as_kind = Some(v.to_string()),
                "g" => group = Some(v.to_string()),
                "v" => version = Some(v.to_string()),
                "q" => refused = v.parse::<f32>().is_ok_and(|q| q <= 0.0),
                _ => {}
            }
        }
        if refused {
            continue;
        }
        let Some(as_kind) = as_kind else {
            return Ok(Output::Object);
        };
        if group.as_deref() != Some("meta.k8s.io") {
            continue;
        }
        let version = match version.as_deref() {
            Some("v1") => MetaVersion::V1,
            Some("v1beta1") => MetaVersion::V1beta1,
            _ => continue,
        };
        match as_kind.as_str() {
            "Table" => {
                let include = match query.get("includeObject") {
                    None | Some("" | "Metadata") => Include::Metadata,
                    Some("None") => Include::None,
                    Some("Object") => Include::Object,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "unrecognized includeObject value: {other:?}"
                        )));
                    }
                };
                return Ok(Output::Table { version, include });
            }
            "PartialObjectMetadata" => {
                return Ok(Output::Partial {
                    version,
                    list: false,
                });
            }
            "PartialObjectMetadataList" => {
                return Ok(Output::Partial {
                    version,
                    list: true,
                });
            }
            _ => continue,
        }
    }
    Err(not_acceptable(
        "only the following media types are accepted: application/json",
    ))
}

/// Every printer's `columnDefinitions`, rendered once.
pub struct Columns {
    by_printer: HashMap<&'static str, Bytes>,
}

impl Default for Columns {
    fn default() -> Self {
        let docs = Docs::load();
        let by_printer = printers::all()
            .map(|p| {
                (
                    p.id,
                    Bytes::from(ordered_columns(&docs.column_definitions(p))),
                )
            })
            .collect();
        Columns { by_printer }
    }
}

/// Column definitions with their keys in kube-apiserver's order (name, type, format,
/// description, priority) rather than serde_json's sorted one.
fn ordered_columns(defs: &Value) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, c) in defs.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let field = |k: &str| serde_json::to_string(&c[k]).unwrap_or_else(|_| "null".into());
        out.extend_from_slice(
            format!(
                "{{\"name\":{},\"type\":{},\"format\":{},\"description\":{},\"priority\":{}}}",
                field("name"),
                field("type"),
                field("format"),
                field("description"),
                field("priority")
            )
            .as_bytes(),
        );
    }
    out.push(b']');
    out
}

impl Columns {
    fn get(&self, printer: &Printer) -> Bytes {
        self.by_printer
            .get(printer.id)
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(b"[]"))
    }
}

/// Seconds since the Unix epoch now (the "now" of ages).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Renders stored objects in the negotiated form. Cheap to clone (moved into the task of
/// a streamed list).
#[derive(Clone)]
pub struct Renderer {
    pub output: Output,
    printer: &'static Printer,
    columns: Bytes,
    /// A custom resource's `additionalPrinterColumns`, when it declares any.
    custom_columns: Option<Arc<Vec<Value>>>,
    /// The `apiVersion` objects are served as, when not the stored one.
    api_version: Option<Arc<str>>,
    now: i64,
}

impl Renderer {
    pub fn new(ctx: &Ctx) -> Renderer {
        Renderer::for_output(ctx.output, &ctx.info, &ctx.api.columns)
    }

    pub fn for_output(output: Output, info: &ResourceInfo, columns: &Columns) -> Renderer {
        let printer = printers::printer_for(&info.group, &info.kind, info.check.is_none());
        let custom_columns = info
            .custom
            .as_ref()
            .filter(|c| !c.printer_columns.is_empty())
            .map(|c| Arc::new(c.printer_columns.clone()));
        let columns = match (output, &custom_columns) {
            (Output::Table { .. }, Some(cols)) => {
                Bytes::from(ordered_columns(&printers::custom_column_definitions(cols)))
            }
            (Output::Table { .. }, None) => columns.get(printer),
            _ => Bytes::new(),
        };
        Renderer {
            output,
            printer,
            columns,
            custom_columns,
            api_version: info.served_api_version().map(Arc::from),
            now: unix_now(),
        }
    }

    /// Whether objects are served as themselves, as stored (the shared watch lines and the
    /// byte-level fast paths apply).
    pub fn is_object(&self) -> bool {
        self.output == Output::Object && self.api_version.is_none()
    }

    /// 406 when the negotiated form cannot describe a list.
    pub fn check_list(&self) -> ApiResult<()> {
        match self.output {
            Output::Partial { list: false, .. } => Err(not_acceptable(
                "you requested PartialObjectMetadata, but the requested object is a list",
            )),
            _ => Ok(()),
        }
    }

    /// The start of a list response, up to the opening `[` of its items or rows.
    pub fn list_head(
        &self,
        info: &ResourceInfo,
        rv: Position,
        token: Option<&str>,
        remaining: Option<u64>,
    ) -> Vec<u8> {
        let mut meta = serde_json::Map::new();
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        if let Some(t) = token {
            meta.insert("continue".into(), Value::String(t.to_string()));
        }
        if let Some(r) = remaining {
            meta.insert("remainingItemCount".into(), Value::from(r));
        }
        let meta = Value::Object(meta);
        let mut out = Vec::with_capacity(256 + self.columns.len());
        match self.output {
            Output::Object => out.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
                    info.list_kind(),
                    info.api_version(),
                )
                .as_bytes(),
            ),
            Output::Table { version, .. } => {
                out.extend_from_slice(
                    format!(
                        "{{\"kind\":\"Table\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"columnDefinitions\":",
                        version.api_version()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&self.columns);
                out.extend_from_slice(b",\"rows\":[");
            }
            Output::Partial { version, .. } => out.extend_from_slice(
                format!(
                    "{{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
                    version.api_version()
                )
                .as_bytes(),
            ),
        }
        out
    }

    /// One element of a list: the object, its Table row, or its PartialObjectMetadata.
    pub fn item(&self, out: &mut Vec<u8>, stored: &[u8], rv: u64) {
        match self.output {
            Output::Object => render_into_as(out, stored, rv, self.api_version.as_deref()),
            Output::Table { version, include } => {
                self.row_into(out, stored, rv, (version, include), self.now);
            }
            Output::Partial { version, .. } => partial_into(out, stored, rv, version),
        }
    }

    /// The response to a GET of one object.
    ///
    /// # Errors
    /// 406 when a list form was negotiated.
    pub fn single(&self, stored: &[u8], rv: u64) -> ApiResult<Vec<u8>> {
        let mut out = Vec::with_capacity(stored.len() + 64 + self.columns.len());
        match self.output {
            Output::Partial { list: true, .. } => {
                return Err(not_acceptable(
                    "you requested PartialObjectMetadataList, but the requested object is not a list",
                ));
            }
            Output::Table { .. } => self.table_into(&mut out, stored, rv, true, self.now),
            _ => self.item(&mut out, stored, rv),
        }
        Ok(out)
    }

    /// The object of one watch event: a one-row Table (with `columnDefinitions` only when
    /// `columns`, as kube-apiserver sends them in a watch's first event only), a
    /// PartialObjectMetadata, or the object.
    pub fn event_object(&self, out: &mut Vec<u8>, stored: &[u8], rv: u64, columns: bool) {
        match self.output {
            Output::Table { .. } => self.table_into(out, stored, rv, columns, unix_now()),
            Output::Partial { version, .. } => partial_into(out, stored, rv, version),
            Output::Object => render_into_as(out, stored, rv, self.api_version.as_deref()),
        }
    }

    /// The object of a BOOKMARK event in a non-object form: a Table without rows, or a
    /// PartialObjectMetadata carrying only the resourceVersion (and the initial-events-end
    /// annotation when there is one).
    pub fn bookmark_object(&self, rv: Position, initial_end: bool, columns: bool) -> Value {
        match self.output {
            Output::Table { version, .. } => {
                let cols = if columns {
                    serde_json::from_slice(&self.columns).unwrap_or(Value::Null)
                } else {
                    Value::Null
                };
                serde_json::json!({
                    "kind": "Table",
                    "apiVersion": version.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "columnDefinitions": cols,
                    "rows": [],
                })
            }
            Output::Partial { version, .. } => {
                let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
                if initial_end {
                    meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
                }
                serde_json::json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": version.api_version(),
                    "metadata": meta,
                })
            }
            Output::Object => Value::Null,
        }
    }

    /// A Table holding one object's row.
    fn table_into(&self, out: &mut Vec<u8>, stored: &[u8], rv: u64, columns: bool, now: i64) {
        let Output::Table { version, include } = self.output else {
            return;
        };
        out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"");
        out.extend_from_slice(version.api_version().as_bytes());
        out.extend_from_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
        out.extend_from_slice(rv.to_string().as_bytes());
        out.extend_from_slice(b"\"},\"columnDefinitions\":");
        if columns {
            out.extend_from_slice(&self.columns);
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"rows\":[");
        self.row_into(out, stored, rv, (version, include), now);
        out.extend_from_slice(b"]}");
    }

    fn row_into(
        &self,
        out: &mut Vec<u8>,
        stored: &[u8],
        rv: u64,
        (version, include): (MetaVersion, Include),
        now: i64,
    ) {
        let obj: Value = serde_json::from_slice(stored).unwrap_or(Value::Null);
        let row = match &self.custom_columns {
            Some(cols) => printers::Row {
                cells: printers::custom_row(cols, &obj, now),
                completed: None,
            },
            None => (self.printer.row)(&obj, now),
        };
        out.extend_from_slice(b"{\"cells\":");
        // Serializing Values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &row.cells);
        if let Some(c) = row.completed {
            out.extend_from_slice(b",\"conditions\":[");
            let cond = serde_json::json!({"type": "Completed", "status": "True", "reason": c.reason, "message": c.message});
            let _ = serde_json::to_writer(&mut *out, &cond);
            out.push(b']');
        }
        out.extend_from_slice(b",\"object\":");
        match include {
            Include::None => out.extend_from_slice(b"null"),
            Include::Metadata => partial_into(out, stored, rv, version),
            Include::Object => render_into_as(out, stored, rv, self.api_version.as_deref()),
        }
        out.push(b'}');
    }
}

/// Appends the PartialObjectMetadata of a stored object: its metadata (resourceVersion
/// spliced) cut out of the stored bytes without a parse.
pub fn partial_into(out: &mut Vec<u8>, stored: &[u8], rv: u64, version: MetaVersion) {
    out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"");
    out.extend_from_slice(version.api_version().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":");
    match metadata_inner(stored) {
        Some(inner) => {
            out.extend_from_slice(b"{\"resourceVersion\":\"");
            out.extend_from_slice(rv.to_string().as_bytes());
            out.push(b'"');
            if !inner.is_empty() {
                out.push(b',');
                out.extend_from_slice(inner);
            }
            out.push(b'}');
        }
        None => {
            let mut meta = match serde_json::from_slice::<Value>(stored) {
                Ok(Value::Object(mut m)) => {
                    set_resource_version(&mut m, rv);
                    m.remove("metadata").unwrap_or(Value::Null)
                }
                _ => Value::Null,
            };
            if !meta.is_object() {
                meta = serde_json::json!({"resourceVersion": rv.to_string()});
            }
            let _ = serde_json::to_writer(&mut *out, &meta);
        }
    }
    out.push(b'}');
}
