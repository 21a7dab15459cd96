//! Is a CRD version's schema acceptable? The checks kube-apiserver runs on
//! `openAPIV3Schema` at CRD create/update: `ValidateCustomResourceDefinitionOpenAPISchema`
//! (keywords and extensions), `schema.ValidateStructural` (structural invariants and
//! completeness), `defaulting.ValidateDefaults`, then CEL rule compilation.

use serde_json::{Map, Value};

use super::{
    additional_schema, child, embedded, go_quote, int_or_string, items, key, mutate, nullable,
    preserves_unknown, props, str_list, type_of, validation,
};
use crate::validate::Cause;

/// The `type`s a CRD schema may use (kube's `openapiV3Types`, sorted as it lists them).
const OPENAPI_V3_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// Checks a CRD version's `openAPIV3Schema`, reporting problems under `prefix` (e.g.
/// `spec.versions[0].schema.openAPIV3Schema`) with kube-apiserver's messages. Empty means
/// the schema is structural, consistent, has valid pruned defaults and compiling rules.
///
/// Structural errors are sorted by their text, as kube sorts them. CEL rules are compiled
/// only when everything else is valid (kube skips them too, as their errors would not be
/// actionable).
pub fn check_structural(schema: &Value, prefix: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    if nullable(schema) {
        out.push(Cause::forbidden(
            &child(prefix, "nullable"),
            "nullable cannot be true at the root",
        ));
    }
    openapi_schema(schema, prefix, Ctx::root(), &mut out);

    let mut structural = Vec::new();
    invariants(schema, Level::Root, prefix, &mut structural);
    completeness(schema, prefix, &mut structural);
    structural.sort_by_key(|c| format!("{}: {}", c.field, c.message));
    out.extend(structural);

    if out.is_empty() {
        defaults(schema, prefix, true, &mut out);
    }
    if out.is_empty() {
        out.extend(super::cel::check_cel(schema, prefix));
    }
    out
}

#[derive(Clone, Copy)]
struct Ctx<'a> {
    root: bool,
    /// Why defaults are forbidden here, if they are.
    no_defaults: Option<&'static str>,
    inside_meta: bool,
    /// Set below a node whose children cannot be correlated with the old object.
    uncorrelatable: Option<&'a str>,
}

impl Ctx<'_> {
    fn root() -> Ctx<'static> {
        Ctx {
            root: true,
            no_defaults: None,
            inside_meta: false,
            uncorrelatable: None,
        }
    }
}

/// `ValidateCustomResourceDefinitionOpenAPISchema` and `specStandardValidatorV3.validate`.
fn openapi_schema(s: &Value, path: &str, ctx: Ctx<'_>, out: &mut Vec<Cause>) {
    let Some(m) = s.as_object() else { return };
    standard(m, path, ctx, out);

    if m.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        out.push(Cause::forbidden(
            &child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(ap) = m.get("additionalProperties") {
        let has_props = props(s).is_some_and(|p| !p.is_empty());
        if has_props && (ap == &Value::Bool(false) || ap.is_object()) {
            out.push(Cause::forbidden(
                &child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        if ap.is_object() {
            let mut sub = ctx;
            sub.root = false;
            if ctx.inside_meta {
                sub.no_defaults = Some("inside additionalProperties applying to object metadata");
            }
            openapi_schema(ap, &child(path, "additionalProperties"), sub, out);
        }
    }
    if let Some(ps) = props(s) {
        let atomic_map = m.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
        for (name, p) in sorted(ps) {
            let mut sub = ctx;
            sub.root = false;
            if atomic_map && sub.uncorrelatable.is_none() {
                sub.uncorrelatable = Some(path);
            }
            if (ctx.root || embedded(s))
                && matches!(name.as_str(), "metadata" | "kind" | "apiVersion")
            {
                sub.inside_meta = true;
                if ctx.root {
                    sub.no_defaults = Some(match name.as_str() {
                        "metadata" => "in top-level metadata",
                        "kind" => "in top-level kind",
                        _ => "in top-level apiVersion",
                    });
                }
            }
            openapi_schema(p, &key(&child(path, "properties"), name), sub, out);
        }
    }
    let mut nested = ctx;
    nested.root = false;
    if let Some(not) = m.get("not") {
        openapi_schema(not, &child(path, "not"), nested, out);
    }
    for junctor in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = m.get(junctor).and_then(Value::as_array) {
            for (i, sub) in list.iter().enumerate() {
                openapi_schema(
                    sub,
                    &key(&child(path, junctor), &i.to_string()),
                    nested,
                    out,
                );
            }
        }
    }
    if let Some(item) = items(s) {
        let mut sub = nested;
        if m.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map")
            && sub.uncorrelatable.is_none()
        {
            sub.uncorrelatable = Some(path);
        }
        openapi_schema(item, &child(path, "items"), sub, out);
    }
    extensions(m, s, path, out);
    super::cel::check_rule_fields(s, path, out);
}

/// `specStandardValidatorV3.validate`: keywords a CRD schema may not use.
fn standard(m: &Map<String, Value>, path: &str, ctx: Ctx<'_>, out: &mut Vec<Cause>) {
    let t = m.get("type").and_then(Value::as_str).unwrap_or("");
    if !t.is_empty() && !OPENAPI_V3_TYPES.contains(&t) {
        out.push(Cause::not_supported(
            &child(path, "type"),
            t,
            &OPENAPI_V3_TYPES,
        ));
    }
    if m.contains_key("default")
        && let Some(reason) = ctx.no_defaults
    {
        out.push(Cause::forbidden(
            &child(path, "default"),
            &format!("must not be set {reason}"),
        ));
    }
    let forbidden: [(&str, &str); 6] = [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ];
    for (k, msg) in forbidden {
        let present = match m.get(k) {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Object(o)) => !o.is_empty() || k == "additionalItems" || k == "$ref",
            Some(Value::Null) | None => false,
            Some(_) => true,
        };
        if present {
            out.push(Cause::forbidden(&child(path, k), msg));
        }
    }
    if t == "null" {
        out.push(Cause::forbidden(
            &child(path, "type"),
            "type cannot be set to null, use nullable as an alternative",
        ));
    }
    if m.get("items").is_some_and(Value::is_array) {
        out.push(Cause::forbidden(
            &child(path, "items"),
            "items must be a schema object and not an array",
        ));
    }
    if ctx.inside_meta && m.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
        out.push(Cause::forbidden(
            &child(path, "x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        ));
    }
}

/// The `x-kubernetes-*` extension rules of `ValidateCustomResourceDefinitionOpenAPISchema`
/// and `validateMapListKeysMapSet`.
fn extensions(m: &Map<String, Value>, s: &Value, path: &str, out: &mut Vec<Cause>) {
    let t = type_of(s);
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(Cause::invalid(
            &child(path, "x-kubernetes-preserve-unknown-fields"),
            "false",
            "must be true or undefined",
        ));
    }
    let map_type = m.get("x-kubernetes-map-type").and_then(Value::as_str);
    if let Some(mt) = map_type {
        if t != "object" {
            required_or_invalid(
                path,
                t,
                "must be object if x-kubernetes-map-type is specified",
                out,
            );
        }
        if mt != "atomic" && mt != "granular" {
            out.push(Cause::not_supported(
                &child(path, "x-kubernetes-map-type"),
                mt,
                &["atomic", "granular"],
            ));
        }
    }
    let list_type = m.get("x-kubernetes-list-type").and_then(Value::as_str);
    let item = items(s);
    if let Some(lt) = list_type {
        if t != "array" {
            required_or_invalid(
                path,
                t,
                "must be array if x-kubernetes-list-type is specified",
                out,
            );
        } else if lt == "set"
            && let Some(is) = item
        {
            // requireAtomicSetType: set items must be atomic.
            match type_of(is) {
                "array" => {
                    if let Some(ilt) = is.get("x-kubernetes-list-type").and_then(Value::as_str)
                        && ilt != "atomic"
                    {
                        out.push(Cause::invalid(
                            &child(&child(path, "items"), "x-kubernetes-list-type"),
                            &go_quote(ilt),
                            "must be atomic as item of a list with x-kubernetes-list-type=set",
                        ));
                    }
                }
                "object"
                    if is.get("x-kubernetes-map-type").and_then(Value::as_str)
                        != Some("atomic") =>
                {
                    out.push(Cause::invalid(
                        &child(&child(path, "items"), "x-kubernetes-map-type"),
                        "null",
                        "must be atomic as item of a list with x-kubernetes-list-type=set",
                    ));
                }
                _ => {}
            }
        }
        if !matches!(lt, "atomic" | "set" | "map") {
            out.push(Cause::not_supported(
                &child(path, "x-kubernetes-list-type"),
                lt,
                &["atomic", "set", "map"],
            ));
        }
    }
    let map_keys = str_list(s, "x-kubernetes-list-map-keys");
    let keys_rendered = crate::validate::go_string_slice(&map_keys);
    if !map_keys.is_empty() {
        match list_type {
            None => out.push(Cause::required(
                &child(path, "x-kubernetes-list-type"),
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            Some("map") => {}
            Some(lt) => out.push(Cause::invalid(
                &child(path, "x-kubernetes-list-type"),
                &go_quote(lt),
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
        }
    }
    if list_type == Some("map") {
        if map_keys.is_empty() {
            out.push(Cause::required(
                &child(path, "x-kubernetes-list-map-keys"),
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
        match item {
            None => out.push(Cause::required(
                &child(path, "items"),
                "must have a schema if x-kubernetes-list-type is map",
            )),
            Some(is) if type_of(is) != "object" => out.push(Cause::invalid(
                &child(&child(path, "items"), "type"),
                &go_quote(type_of(is)),
                "must be object if parent array's x-kubernetes-list-type is map",
            )),
            Some(is) => {
                let mut seen = std::collections::HashSet::new();
                for k in &map_keys {
                    match props(is).and_then(|p| p.get(k)) {
                        Some(ks) => {
                            if matches!(type_of(ks), "array" | "object") {
                                out.push(Cause::invalid(
                                    &child(
                                        &key(&child(&child(path, "items"), "properties"), k),
                                        "type",
                                    ),
                                    &go_quote(type_of(is)),
                                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                ));
                            }
                        }
                        None => out.push(Cause::invalid(
                            &child(path, "x-kubernetes-list-map-keys"),
                            &keys_rendered,
                            "entries must all be names of item properties",
                        )),
                    }
                    if !seen.insert(k.as_str()) {
                        out.push(Cause::invalid(
                            &child(path, "x-kubernetes-list-map-keys"),
                            &keys_rendered,
                            "must not contain duplicate entries",
                        ));
                    }
                }
            }
        }
    }
    // validateMapListKeysMapSet
    if let (Some(lt @ ("set" | "map")), Some(is)) = (list_type, item) {
        if nullable(is) {
            out.push(Cause::forbidden(
                &child(&child(path, "items"), "nullable"),
                &format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
            ));
        }
        if lt == "map" {
            let required = str_list(is, "required");
            for k in &map_keys {
                let Some(ks) = props(is).and_then(|p| p.get(k)) else {
                    continue;
                };
                let kp = key(&child(&child(path, "items"), "properties"), k);
                if !required.contains(k) && ks.get("default").is_none() {
                    out.push(Cause::required(
                        &child(&kp, "default"),
                        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                    ));
                }
                if nullable(ks) {
                    out.push(Cause::forbidden(
                        &child(&kp, "nullable"),
                        "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                    ));
                }
            }
        }
    }
}

fn required_or_invalid(path: &str, t: &str, detail: &str, out: &mut Vec<Cause>) {
    if t.is_empty() {
        out.push(Cause::required(&child(path, "type"), detail));
    } else {
        out.push(Cause::invalid(&child(path, "type"), &go_quote(t), detail));
    }
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<(&String, &Value)> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

// ---- structural invariants (schema/validation.go, schema/complete.go) ---------------------

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Item,
    Field,
}

/// `validateStructuralInvariants`.
fn invariants(s: &Value, lvl: Level, path: &str, out: &mut Vec<Cause>) {
    let t = type_of(s);
    if t == "array" && items(s).is_none() {
        out.push(Cause::required(&child(path, "items"), "must be specified"));
    }
    if let Some(item) = items(s) {
        invariants(item, Level::Item, &child(path, "items"), out);
    }
    if let Some(ps) = props(s) {
        for (k, p) in sorted(ps) {
            invariants(p, Level::Field, &key(&child(path, "properties"), k), out);
        }
    }
    if s.get("additionalProperties").is_some_and(|a| !a.is_null()) {
        if lvl == Level::Root {
            out.push(Cause::forbidden(
                &child(path, "additionalProperties"),
                "must not be used at the root",
            ));
        }
        if let Some(ap) = additional_schema(s) {
            invariants(ap, Level::Field, &child(path, "additionalProperties"), out);
        }
    }
    // validateExtensions
    if int_or_string(s) && preserves_unknown(s) {
        out.push(Cause::invalid(
            &child(path, "x-kubernetes-preserve-unknown-fields"),
            "true",
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if int_or_string(s) && embedded(s) {
        out.push(Cause::invalid(
            &child(path, "x-kubernetes-embedded-resource"),
            "true",
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    value_validation(
        s,
        int_or_string_any_of(s),
        int_or_string_all_of(s),
        path,
        out,
    );

    let check_metadata = lvl == Level::Root || embedded(s);
    if embedded(s) && t != "object" {
        required_or_invalid(
            path,
            t,
            "must be object if x-kubernetes-embedded-resource is true",
            out,
        );
    } else if t.is_empty() && !int_or_string(s) && !preserves_unknown(s) {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(Cause::required(&child(path, "type"), detail));
    }
    if embedded(s) && s.get("additionalProperties").is_some() {
        out.push(Cause::forbidden(
            &child(path, "additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !t.is_empty() && t != "object" {
        out.push(Cause::invalid(
            &child(path, "type"),
            &go_quote(t),
            "must be object at the root",
        ));
    }
    if check_metadata && let Some(ps) = props(s) {
        for name in ["kind", "apiVersion"] {
            if let Some(p) = ps.get(name)
                && type_of(p) != "string"
            {
                out.push(Cause::invalid(
                    &child(&key(&child(path, "properties"), name), "type"),
                    &go_quote(type_of(p)),
                    "must be string",
                ));
            }
        }
    }
    if let Some(meta) = props(s).and_then(|p| p.get("metadata")) {
        let mp = key(&child(path, "properties"), "metadata");
        if check_metadata && type_of(meta) != "object" {
            out.push(Cause::invalid(
                &child(&mp, "type"),
                &go_quote(type_of(meta)),
                "must be object",
            ));
        }
        if lvl == Level::Root && !metadata_only_names(meta) {
            out.push(Cause::forbidden(
                &mp,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    if embedded(s) && !preserves_unknown(s) && props(s).is_none_or(Map::is_empty) {
        out.push(Cause::required(
            &child(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// The root `metadata` schema may only say `type: object` and restrict `name` and
/// `generateName` (whose schemas are not looked into, as in kube).
fn metadata_only_names(meta: &Value) -> bool {
    let Some(m) = meta.as_object() else {
        return true;
    };
    m.iter().all(|(k, v)| match k.as_str() {
        "type" | "default" => true,
        "properties" => v
            .as_object()
            .is_some_and(|p| p.keys().all(|n| n == "name" || n == "generateName")),
        _ => false,
    })
}

fn is_int_or_string_pair(list: Option<&Value>) -> bool {
    let Some(a) = list.and_then(Value::as_array) else {
        return false;
    };
    a.len() == 2
        && a[0]
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.get("type") == Some(&"integer".into()))
        && a[1]
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.get("type") == Some(&"string".into()))
}

fn int_or_string_any_of(s: &Value) -> bool {
    is_int_or_string_pair(s.get("anyOf"))
}

fn int_or_string_all_of(s: &Value) -> bool {
    s.get("allOf")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .is_some_and(|first| is_int_or_string_pair(first.get("anyOf")))
}

/// `validateValueValidation`: the junctors of a structural node, and `pattern`.
fn value_validation(
    s: &Value,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    path: &str,
    out: &mut Vec<Cause>,
) {
    if !skip_any_of && let Some(a) = s.get("anyOf").and_then(Value::as_array) {
        for (i, sub) in a.iter().enumerate() {
            nested(sub, false, &key(&child(path, "anyOf"), &i.to_string()), out);
        }
    }
    if let Some(a) = s.get("allOf").and_then(Value::as_array) {
        for (i, sub) in a.iter().enumerate() {
            nested(
                sub,
                skip_first_all_of_any_of && i == 0,
                &key(&child(path, "allOf"), &i.to_string()),
                out,
            );
        }
    }
    if let Some(a) = s.get("oneOf").and_then(Value::as_array) {
        for (i, sub) in a.iter().enumerate() {
            nested(sub, false, &key(&child(path, "oneOf"), &i.to_string()), out);
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        nested(not, false, &child(path, "not"), out);
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && !p.is_empty()
        && let Err(e) = regex::RegexBuilder::new(p)
            .size_limit(validation::PATTERN_REGEX_BYTES_MAX)
            .build()
    {
        let detail = e.to_string().replace('\n', " ");
        out.push(Cause::invalid(
            &child(path, "pattern"),
            &go_quote(p),
            &format!("must be a valid regular expression, but isn't: {detail}"),
        ));
    }
}

/// `validateNestedValueValidation`: what may not appear under a junctor.
fn nested(v: &Value, skip_any_of: bool, path: &str, out: &mut Vec<Cause>) {
    let Some(m) = v.as_object() else { return };
    value_validation(v, skip_any_of, false, path, out);
    if let Some(item) = items(v) {
        nested(item, false, &child(path, "items"), out);
    }
    if let Some(ps) = props(v) {
        for (k, p) in sorted(ps) {
            nested(p, false, &key(&child(path, "properties"), k), out);
        }
    }
    let present = |k: &str| match m.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let rules: [(&str, &str); 13] = [
        ("type", "must be empty to be structural"),
        ("additionalProperties", "must be undefined to be structural"),
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        ("externalDocs", "must be undefined to be structural"),
        (
            "x-kubernetes-preserve-unknown-fields",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-embedded-resource",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-int-or-string",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        ),
        (
            "x-kubernetes-list-type",
            "must be undefined to be structural",
        ),
        (
            "x-kubernetes-map-type",
            "must be undefined to be structural",
        ),
    ];
    for (k, msg) in rules {
        let here = if k == "default" {
            m.contains_key(k)
        } else {
            present(k)
        };
        if here {
            out.push(Cause::forbidden(&child(path, k), msg));
        }
    }
    if present("x-kubernetes-validations") {
        out.push(Cause::forbidden(
            &child(path, "x-kubernetes-validations"),
            "must be empty to be structural",
        ));
    }
    if props(v).is_some_and(|p| p.contains_key("metadata")) {
        out.push(Cause::forbidden(
            &key(&child(path, "properties"), "metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// `validateStructuralCompleteness`: every field or items a junctor at the root mentions
/// must be specified by the structural schema too. (kube checks the root's junctors only.)
fn completeness(s: &Value, path: &str, out: &mut Vec<Cause>) {
    junctor_completeness(s, Some(s), path, path, out);
}

fn junctor_completeness(
    v: &Value,
    s: Option<&Value>,
    s_path: &str,
    v_path: &str,
    out: &mut Vec<Cause>,
) {
    if let Some(not) = v.get("not").filter(|n| n.is_object()) {
        nested_completeness(not, s, s_path, &child(v_path, "not"), out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(a) = v.get(junctor).and_then(Value::as_array) {
            for (i, sub) in a.iter().enumerate() {
                nested_completeness(
                    sub,
                    s,
                    s_path,
                    &key(&child(v_path, junctor), &i.to_string()),
                    out,
                );
            }
        }
    }
}

fn nested_completeness(
    v: &Value,
    s: Option<&Value>,
    s_path: &str,
    v_path: &str,
    out: &mut Vec<Cause>,
) {
    let Some(s) = s else {
        out.push(Cause::required(
            s_path,
            &format!("because it is defined in {v_path}"),
        ));
        return;
    };
    junctor_completeness(v, Some(s), s_path, v_path, out);
    if let Some(vi) = items(v) {
        nested_completeness(
            vi,
            items(s),
            &child(s_path, "items"),
            &child(v_path, "items"),
            out,
        );
    }
    if let Some(vp) = props(v) {
        for (k, vf) in sorted(vp) {
            let sp = key(&child(s_path, "properties"), k);
            let vpk = key(&child(v_path, "properties"), k);
            match props(s).and_then(|p| p.get(k)) {
                Some(sf) => nested_completeness(vf, Some(sf), &sp, &vpk, out),
                None => out.push(Cause::required(
                    &sp,
                    &format!("because it is defined in {vpk}"),
                )),
            }
        }
    }
}

// ---- defaults (schema/defaulting/validation.go) ---------------------------------------------

/// `ValidateDefaults`: every `default` must survive pruning and validate against its own
/// node's schema. Metadata defaults (forbidden at the root; inside embedded resources
/// checked against ObjectMeta in kube) are only pruned and validated here.
fn defaults(s: &Value, path: &str, resource_root: bool, out: &mut Vec<Cause>) {
    if let Some(d) = s.get("default") {
        let dp = child(path, "default");
        let mut pruned = d.clone();
        let mut node = s.clone();
        if embedded(s) || resource_root {
            // Pruning an embedded object keeps its type meta, as kube's does.
            mutate::prune(&node, &mut pruned);
        } else {
            prune_value(&node, &mut pruned);
        }
        if &pruned != d {
            out.push(Cause::invalid(
                &dp,
                &super::go_value(d),
                "must not have unknown fields",
            ));
        }
        if let Value::Object(m) = &mut node {
            m.remove("default");
        }
        for mut c in validation::errors_at(&node, d, "") {
            c.field = if c.field.is_empty() {
                dp.clone()
            } else if c.field == "<nil>" {
                c.field
            } else {
                child(&dp, &c.field)
            };
            out.push(c);
        }
    }
    if let Some(item) = items(s) {
        defaults(item, &child(path, "items"), false, out);
    }
    if let Some(ps) = props(s) {
        for (k, p) in sorted(ps) {
            defaults(p, &key(&child(path, "properties"), k), false, out);
        }
    }
}

/// Prunes a default value that is not a resource: no type meta is kept.
fn prune_value(s: &Value, v: &mut Value) {
    let wrapper = serde_json::json!({
        "type": "object",
        "properties": {"v": s},
    });
    let mut holder = serde_json::json!({ "v": v.take() });
    mutate::prune(&wrapper, &mut holder);
    *v = holder.get_mut("v").map(Value::take).unwrap_or(Value::Null);
}
