//! Validating a custom object against its structural schema: kube-openapi's value
//! validations (as `apiextensions-apiserver/pkg/apiserver/validation` turns them into
//! field errors), embedded resources' `apiVersion`/`kind`/`metadata`
//! (`schema/objectmeta`), and `x-kubernetes-list-type` uniqueness (`schema/listtype`).
//!
//! Paths are kube-openapi's: `spec.items[2].name`, map keys dotted (`spec.labels.app`).
//! Errors of `allOf`/`anyOf`/`oneOf`/`not` carry the field `<nil>`, as kube reports them
//! (kube-openapi raises them as plain errors, which kube maps to a nil path).

use regex::RegexBuilder;
use serde_json::{Map, Value};

use super::{
    additional_schema, child, embedded, go_float, go_number, go_value, int_or_string, items,
    json_eq, json_type, not_supported_values, nullable, preserves_unknown, props, str_list,
    too_many, type_invalid, type_of,
};
use crate::validate::{
    Cause, go_quote, is_dns1035_label, is_dns1123_label, is_qualified_name, is_valid_label_value,
    is_valid_path_segment_name,
};

/// Largest compiled size of one `pattern` regular expression, in bytes (the regex crate's
/// `size_limit`). A pattern over it is reported as not matching nothing: it is refused as
/// invalid at CRD creation (`check_structural`), and here the value is reported invalid.
pub const PATTERN_REGEX_BYTES_MAX: usize = 1 << 20;

/// Validates a custom object against a CRD version's `openAPIV3Schema`. The root's
/// `apiVersion`, `kind` and `metadata` are left to the caller (kube validates them as
/// `ObjectMeta`/`TypeMeta`); embedded resources' are checked here.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    match obj {
        Value::Object(m) => {
            let mut root = m.clone();
            for k in ["apiVersion", "kind", "metadata"] {
                root.remove(k);
            }
            let root = Value::Object(root);
            let mut stripped = schema.clone();
            if let Some(Value::Object(p)) = stripped.get_mut("properties") {
                for k in ["apiVersion", "kind", "metadata"] {
                    p.remove(k);
                }
            }
            // The root's `required` may name apiVersion/kind/metadata: they exist by now.
            if let Some(Value::Array(req)) = stripped.get_mut("required") {
                req.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
            }
            value(&stripped, &root, "", &mut out);
            embedded_resources(schema, obj, "", true, &mut out);
            list_sets_and_maps(schema, obj, "", &mut out);
        }
        other => value(schema, other, "", &mut out),
    }
    out
}

/// kube-openapi's schema validator on one node: type, format, string/number/array/object
/// keywords, then the junctors.
pub(super) fn value(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if nullable(s) {
            return;
        }
        let t = declared_types(s);
        if !t.is_empty() {
            out.push(type_invalid(
                path,
                &go_quote("null"),
                &format!("{path} in body must be of type {t}: \"null\""),
            ));
            return;
        }
    } else {
        let t = declared_types(s);
        if !t.is_empty() && !type_matches(s, v) {
            let actual = json_type(v);
            out.push(type_invalid(
                path,
                &go_quote(actual),
                &format!("{path} in body must be of type {t}: {}", go_quote(actual)),
            ));
            return;
        }
    }
    match v {
        Value::String(st) => string(s, st, v, path, out),
        Value::Number(n) => number(s, n, v, path, out),
        Value::Array(a) => array(s, a, path, out),
        Value::Object(m) => object(s, m, path, out),
        _ => {}
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.iter().any(|x| json_eq(x, v))
    {
        out.push(not_supported_values(path, v, e));
    }
    junctors(s, v, path, out);
}

/// `integer,string` for int-or-string, else the `type` (empty when unspecified).
fn declared_types(s: &Value) -> String {
    if int_or_string(s) {
        "integer,string".into()
    } else {
        type_of(s).to_string()
    }
}

fn type_matches(s: &Value, v: &Value) -> bool {
    let actual = json_type(v);
    let whole_float = matches!(v, Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0));
    let ok = |t: &str| {
        t == actual
            || (t == "integer" && actual == "number" && whole_float)
            || (t == "number" && actual == "integer")
    };
    if int_or_string(s) {
        ok("integer") || ok("string")
    } else {
        ok(type_of(s))
    }
}

fn string(s: &Value, st: &str, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(f) = s.get("format").and_then(Value::as_str)
        && !format_ok(f, st)
    {
        out.push(type_invalid(
            path,
            &go_quote(st),
            &format!("{path} in body must be of type {f}: {}", go_quote(st)),
        ));
    }
    let runes = st.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && runes > max
    {
        out.push(Cause::too_long(path, max as usize));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && runes < min
    {
        out.push(Cause::invalid(
            path,
            &go_value(v),
            &format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && !pattern_matches(p, st)
    {
        out.push(Cause::invalid(
            path,
            &go_value(v),
            &format!("{path} in body should match '{p}'"),
        ));
    }
}

/// Whether `s` matches `pattern` (unanchored, as Go's `regexp.MatchString`). A pattern that
/// does not compile within [`PATTERN_REGEX_BYTES_MAX`] matches nothing.
pub(super) fn pattern_matches(pattern: &str, s: &str) -> bool {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_REGEX_BYTES_MAX)
        .build()
        .is_ok_and(|r| r.is_match(s))
}

fn number(s: &Value, n: &serde_json::Number, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let x = n.as_f64().unwrap_or(0.0);
    let bad = go_number(n);
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
        && m != 0.0
    {
        let q = x / m;
        if q.fract() != 0.0 {
            out.push(Cause::invalid(
                path,
                &bad,
                &format!("{path} in body should be a multiple of {}", go_float(m)),
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = s
            .get("exclusiveMaximum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if exclusive && x >= max {
            out.push(Cause::invalid(
                path,
                &bad,
                &format!("{path} in body must be less than {}", go_float(max)),
            ));
        } else if !exclusive && x > max {
            out.push(Cause::invalid(
                path,
                &bad,
                &format!(
                    "{path} in body must be less than or equal to {}",
                    go_float(max)
                ),
            ));
        }
    }
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = s
            .get("exclusiveMinimum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if exclusive && x <= min {
            out.push(Cause::invalid(
                path,
                &bad,
                &format!("{path} in body must be greater than {}", go_float(min)),
            ));
        } else if !exclusive && x < min {
            out.push(Cause::invalid(
                path,
                &bad,
                &format!(
                    "{path} in body must be greater than or equal to {}",
                    go_float(min)
                ),
            ));
        }
    }
    let _ = v;
}

fn array(s: &Value, a: &[Value], path: &str, out: &mut Vec<Cause>) {
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && a.len() as u64 > max
    {
        out.push(too_many(path, a.len(), max));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && (a.len() as u64) < min
    {
        out.push(Cause::invalid(
            path,
            &a.len().to_string(),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if s.get("uniqueItems").and_then(Value::as_bool) == Some(true)
        && a.iter()
            .enumerate()
            .any(|(i, x)| a[..i].iter().any(|y| json_eq(x, y)))
    {
        out.push(Cause::invalid(
            path,
            &go_quote(""),
            &format!("{path} in body shouldn't contain duplicates"),
        ));
    }
    if let Some(item) = items(s) {
        for (i, x) in a.iter().enumerate() {
            value(item, x, &format!("{path}[{i}]"), out);
        }
    }
}

fn object(s: &Value, m: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && m.len() as u64 > max
    {
        out.push(too_many(path, m.len(), max));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && (m.len() as u64) < min
    {
        out.push(Cause::invalid(
            path,
            &m.len().to_string(),
            &format!("{path} in body should have at least {min} properties"),
        ));
    }
    for r in str_list(s, "required") {
        if !m.contains_key(&r) {
            out.push(Cause::required(&child(path, &r), ""));
        }
    }
    let properties = props(s);
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        let x = &m[k.as_str()];
        let p = child(path, k);
        if let Some(ps) = properties.and_then(|ps| ps.get(k.as_str())) {
            value(ps, x, &p, out);
        } else if let Some(ap) = additional_schema(s) {
            value(ap, x, &p, out);
        } else if s.get("additionalProperties") == Some(&Value::Bool(false))
            && !preserves_unknown(s)
        {
            out.push(Cause::invalid(
                &p,
                &go_quote(""),
                &format!("{p} in body is a forbidden property"),
            ));
        }
    }
}

fn composite(detail: String) -> Cause {
    Cause::invalid("<nil>", &go_quote(""), &detail)
}

fn junctors(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let run = |sub: &Value| {
        let mut errs = Vec::new();
        value(sub, v, path, &mut errs);
        errs
    };
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut valid = 0;
        for sub in all {
            let errs = run(sub);
            if errs.is_empty() {
                valid += 1;
            }
            out.extend(errs);
        }
        if valid != all.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            out.push(composite(format!(
                "{} must validate all the schemas (allOf){none}",
                go_quote(path)
            )));
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
    {
        let results: Vec<Vec<Cause>> = any.iter().map(run).collect();
        if !results.iter().any(Vec::is_empty) {
            out.push(composite(format!(
                "{} must validate at least one schema (anyOf)",
                go_quote(path)
            )));
            // kube-openapi keeps the errors of the alternative that came closest.
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                out.extend(best);
            }
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
    {
        let results: Vec<Vec<Cause>> = one.iter().map(run).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid == 0 {
            out.push(composite(format!(
                "{} must validate one and only one schema (oneOf). Found none valid",
                go_quote(path)
            )));
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                out.extend(best);
            }
        } else if valid > 1 {
            out.push(composite(format!(
                "{} must validate one and only one schema (oneOf). Found {valid} valid alternatives",
                go_quote(path)
            )));
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object())
        && run(not).is_empty()
    {
        out.push(composite(format!(
            "{} must not validate the schema (not)",
            go_quote(path)
        )));
    }
}

// ---- formats ----------------------------------------------------------------------------

/// kube-openapi's string formats (`strfmt.Default`); unknown formats are not checked, as in
/// kube. Numeric formats (`int32`, `int64`, `float`, `double`) are not range-checked by
/// kube-openapi either.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "byte" => base64_ok(s),
        "date" => date_ok(s),
        "date-time" | "datetime" => date_time_ok(s),
        "uuid" => uuid_ok(s, None),
        "uuid3" => uuid_ok(s, Some('3')),
        "uuid4" => uuid_ok(s, Some('4')),
        "uuid5" => uuid_ok(s, Some('5')),
        "hostname" => hostname_ok(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => cidr_ok(s),
        "mac" => mac_ok(s),
        "uri" => uri_ok(s),
        "email" => email_ok(s),
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        "duration" => duration_ok(s),
        _ => true,
    }
}

fn base64_ok(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// RFC 3339 `full-date`.
fn date_ok(s: &str) -> bool {
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return false;
    };
    matches!(
        (digits(y, 4), digits(m, 2), digits(d, 2)),
        (Some(_), Some(1..=12), Some(1..=31))
    )
}

/// RFC 3339 date-time (`T` or `t` or a space between, `Z` or an offset, fraction optional).
fn date_time_ok(s: &str) -> bool {
    if s.len() < 20 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return false;
    }
    let (date, rest) = s.split_at(10);
    if !date_ok(date) || !matches!(&rest[..1], "T" | "t" | " ") {
        return false;
    }
    let time = &rest[1..];
    let (clock, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => return false,
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut it = hms.split(':');
    let ok_clock = matches!(
        (
            it.next().and_then(|h| digits(h, 2)),
            it.next().and_then(|m| digits(m, 2)),
            it.next().and_then(|x| digits(x, 2)),
            it.next()
        ),
        (Some(0..=23), Some(0..=59), Some(0..=60), None)
    ) && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit());
    let ok_zone = matches!(zone, "Z" | "z")
        || (zone.len() == 6
            && zone[1..].split_once(':').is_some_and(|(h, m)| {
                matches!((digits(h, 2), digits(m, 2)), (Some(0..=23), Some(0..=59)))
            }));
    ok_clock && ok_zone
}

fn uuid_ok(s: &str, version: Option<char>) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && version.is_none_or(|v| groups[2].starts_with(v))
}

/// kube-openapi's hostname: RFC 1123 labels of letters, digits and hyphens, at most 255.
fn hostname_ok(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn cidr_ok(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Some(bits) =
        (!bits.is_empty() && bits.len() <= 3 && bits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| bits.parse::<u32>().ok())
            .flatten()
    else {
        return false;
    };
    if let Ok(_v4) = ip.parse::<std::net::Ipv4Addr>() {
        bits <= 32
    } else {
        ip.parse::<std::net::Ipv6Addr>().is_ok() && bits <= 128
    }
}

/// Go's `net.ParseMAC`: 6, 8 or 20 bytes as `aa:bb`, `aa-bb` or `aabb.ccdd` groups.
fn mac_ok(s: &str) -> bool {
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let g: Vec<&str> = s.split(sep).collect();
        if matches!(g.len(), 6 | 8 | 20) && g.iter().all(|x| hex(x, 2)) {
            return true;
        }
    }
    let g: Vec<&str> = s.split('.').collect();
    matches!(g.len(), 3 | 4 | 10) && g.iter().all(|x| hex(x, 4))
}

/// Go's `url.ParseRequestURI`: an absolute URI (`scheme:...`) or an absolute path.
fn uri_ok(s: &str) -> bool {
    if s.starts_with('/') {
        return !s.contains(char::is_whitespace);
    }
    match s.split_once(':') {
        Some((scheme, rest)) => {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !rest.is_empty()
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// A simplified `net/mail.ParseAddress`: `local@domain`, optionally `Name <local@domain>`.
fn email_ok(s: &str) -> bool {
    let addr = match (s.find('<'), s.strip_suffix('>')) {
        (Some(i), Some(inner)) => &inner[i + 1..],
        _ => s,
    };
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !addr.contains(char::is_whitespace)
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

/// strfmt's duration: Go's `time.ParseDuration`, plus `d` and `w` units.
fn duration_ok(s: &str) -> bool {
    super::cel::parse_go_duration(s, true).is_some()
}

// ---- embedded resources -------------------------------------------------------------------

/// `objectmeta.Validate`: every `x-kubernetes-embedded-resource` object needs `apiVersion`
/// and `kind`, and its `metadata` is checked like a resource's (name, namespace, labels,
/// annotations). The root is skipped (the API layer validates it).
fn embedded_resources(s: &Value, v: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    match v {
        Value::Object(m) => {
            if embedded(s) && !root {
                embedded_resource(m, path, out);
            }
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let x = &m[k.as_str()];
                if let Some(ps) = props(s).and_then(|p| p.get(k.as_str())) {
                    embedded_resources(ps, x, &child(path, k), false, out);
                } else if let Some(ap) = additional_schema(s) {
                    embedded_resources(ap, x, &super::key(path, k), false, out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(item) = items(s) {
                for (i, x) in a.iter().enumerate() {
                    embedded_resources(item, x, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn embedded_resource(m: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    let api_version = child(path, "apiVersion");
    let kind = child(path, "kind");
    match m.get("apiVersion") {
        None => out.push(Cause::required(&api_version, "")),
        Some(Value::String(a)) if a.is_empty() => out.push(Cause::required(&api_version, "")),
        Some(Value::String(a)) => {
            if a.matches('/').count() > 1 {
                out.push(Cause::invalid(
                    &api_version,
                    &go_quote(a),
                    &format!("unexpected GroupVersion string: {a}"),
                ));
            }
        }
        Some(other) => out.push(Cause::invalid(
            &api_version,
            &go_value(other),
            "must be a string",
        )),
    }
    match m.get("kind") {
        None => out.push(Cause::required(&kind, "")),
        Some(Value::String(k)) if k.is_empty() => out.push(Cause::required(&kind, "")),
        Some(Value::String(k)) => {
            let errs = is_dns1035_label(&k.to_lowercase());
            if !errs.is_empty() {
                out.push(Cause::invalid(
                    &kind,
                    &go_quote(k),
                    &format!(
                        "may have mixed case, but should otherwise match: {}",
                        errs.join(",")
                    ),
                ));
            }
        }
        Some(other) => out.push(Cause::invalid(&kind, &go_value(other), "must be a string")),
    }
    if let Some(meta) = m.get("metadata") {
        embedded_metadata(meta, &child(path, "metadata"), out);
    }
}

/// The parts of `ValidateObjectMeta` that apply to an embedded object's metadata: name
/// (a path segment), namespace (a DNS-1123 label), label keys and values, annotation keys.
fn embedded_metadata(meta: &Value, path: &str, out: &mut Vec<Cause>) {
    let Value::Object(m) = meta else {
        out.push(Cause::invalid(
            path,
            &go_value(meta),
            "expected a map for metadata",
        ));
        return;
    };
    if let Some(Value::String(name)) = m.get("name") {
        for e in is_valid_path_segment_name(name) {
            out.push(Cause::invalid(&child(path, "name"), &go_quote(name), &e));
        }
    }
    if let Some(Value::String(ns)) = m.get("namespace")
        && !ns.is_empty()
    {
        for e in is_dns1123_label(ns) {
            out.push(Cause::invalid(&child(path, "namespace"), &go_quote(ns), &e));
        }
    }
    if let Some(Value::Object(labels)) = m.get("labels") {
        let lp = child(path, "labels");
        for (k, v) in labels {
            for e in is_qualified_name(k) {
                out.push(Cause::invalid(&lp, &go_quote(k), &e));
            }
            if let Some(v) = v.as_str() {
                for e in is_valid_label_value(v) {
                    out.push(Cause::invalid(&super::key(&lp, k), &go_quote(v), &e));
                }
            }
        }
    }
    if let Some(Value::Object(ann)) = m.get("annotations") {
        let ap = child(path, "annotations");
        for k in ann.keys() {
            for e in is_qualified_name(&k.to_lowercase()) {
                out.push(Cause::invalid(&ap, &go_quote(k), &e));
            }
        }
    }
}

// ---- list types ---------------------------------------------------------------------------

/// `listtype.ValidateListSetsAndMaps`: duplicates in `set` lists and duplicate keys in `map`
/// lists, reported at the second occurrence of each value.
fn list_sets_and_maps(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let x = &m[k.as_str()];
                if let Some(ap) = additional_schema(s) {
                    list_sets_and_maps(ap, x, &super::key(path, k), out);
                }
                if let Some(ps) = props(s).and_then(|p| p.get(k.as_str())) {
                    list_sets_and_maps(ps, x, &child(path, k), out);
                }
            }
        }
        Value::Array(a) => {
            match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    for i in first_duplicates(a) {
                        out.push(Cause::duplicate_rendered(
                            &format!("{path}[{i}]"),
                            &go_value(&a[i]),
                        ));
                    }
                }
                Some("map") => list_map(s, a, path, out),
                _ => {}
            }
            if let Some(item) = items(s) {
                for (i, x) in a.iter().enumerate() {
                    list_sets_and_maps(item, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Indices of the second appearance of each value that appears more than once.
fn first_duplicates(a: &[Value]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let n = seen.entry(canonical(x)).or_insert(0);
        *n += 1;
        if *n == 2 {
            out.push(i);
        }
    }
    out
}

/// A value's identity for duplicate detection (serde_json sorts object keys).
fn canonical(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(0.0)),
        },
        other => other.to_string(),
    }
}

fn list_map(s: &Value, a: &[Value], path: &str, out: &mut Vec<Cause>) {
    for (i, x) in a.iter().enumerate() {
        if !x.is_null() && !x.is_object() {
            out.push(Cause::invalid(
                &format!("{path}[{i}]"),
                &go_value(x),
                "must be an object for an array of list-type map",
            ));
            return;
        }
    }
    let key_fields = str_list(s, "x-kubernetes-list-map-keys");
    let keys: Vec<Value> = a
        .iter()
        .map(|x| {
            let mut k = Map::new();
            for f in &key_fields {
                if let Some(kv) = x.get(f) {
                    k.insert(f.clone(), kv.clone());
                }
            }
            Value::Object(k)
        })
        .collect();
    for i in first_duplicates(&keys) {
        out.push(Cause::duplicate_rendered(
            &format!("{path}[{i}]"),
            &go_value(&keys[i]),
        ));
    }
}

/// Whether `v` is a valid value of `s` (used for defaults and enum values at CRD creation).
pub(super) fn errors_at(s: &Value, v: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    value(s, v, path, &mut out);
    list_sets_and_maps(s, v, path, &mut out);
    out
}
