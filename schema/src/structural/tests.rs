//! One table per function; each row is a kube-documented behaviour with kube's message.
//! Expected causes are written `[Reason] field: message`; a trailing `...` matches a prefix
//! (used where the text comes from a library whose words differ from Go's), `a...b` a
//! prefix and a suffix.

use serde_json::{Value, json};

use super::*;

const P: &str = "spec.versions[0].schema.openAPIV3Schema";

fn render(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("[{}] {}: {}", c.reason, c.field, c.message))
        .collect()
}

fn assert_causes<S: AsRef<str> + std::fmt::Debug>(case: &str, got: &[Cause], want: &[S]) {
    let got = render(got);
    let matches = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| match w.as_ref().split_once("...") {
                Some((pre, post)) => g.starts_with(pre) && g.ends_with(post),
                None => g == w.as_ref(),
            });
    assert!(matches, "case {case:?}:\n got: {got:#?}\nwant: {want:#?}");
}

/// A root schema whose `spec` is the given schema.
fn with_spec(spec: Value) -> Value {
    json!({"type": "object", "properties": {"spec": spec}})
}

#[test]
fn check_structural_reports_what_kube_apiserver_rejects() {
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "a structural schema passes",
            with_spec(json!({"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1, "minimum": 0},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": true,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"}}}}
            },
            "x-kubernetes-validations": [{"rule": "self.replicas >= 0"}]})),
            vec![],
        ),
        (
            "a specified field needs a type",
            with_spec(json!({"properties": {"a": {"type": "string"}}})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].type: Required value: must not be empty for specified object fields"
            )],
        ),
        (
            "array items need a type",
            with_spec(json!({"type": "array", "items": {}})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].items.type: Required value: must not be empty for specified array items"
            )],
        ),
        (
            "an array needs items",
            with_spec(json!({"type": "array"})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].items: Required value: must be specified"
            )],
        ),
        (
            "the root must be an object",
            json!({"type": "string"}),
            vec![format!(
                "[FieldValueInvalid] {P}.type: Invalid value: \"string\": must be object at the root"
            )],
        ),
        (
            "properties and additionalProperties exclude each other",
            with_spec(
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                              "additionalProperties": {"type": "string"}}),
            ),
            vec![format!(
                "[FieldValueForbidden] {P}.properties[spec].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
            )],
        ),
        (
            "description under anyOf is not structural",
            with_spec(json!({"type": "string", "anyOf": [{"description": "x", "minLength": 1}]})),
            vec![format!(
                "[FieldValueForbidden] {P}.properties[spec].anyOf[0].description: Forbidden: must be empty to be structural"
            )],
        ),
        (
            "type and nullable under allOf/oneOf are not structural",
            with_spec(json!({"type": "string", "allOf": [{"type": "string"}],
                              "oneOf": [{"nullable": true}]})),
            vec![
                format!(
                    "[FieldValueForbidden] {P}.properties[spec].allOf[0].type: Forbidden: must be empty to be structural"
                ),
                format!(
                    "[FieldValueForbidden] {P}.properties[spec].oneOf[0].nullable: Forbidden: must be false to be structural"
                ),
            ],
        ),
        (
            "a junctor at the root may only mention specified fields",
            json!({"type": "object", "properties": {"a": {"type": "string"}},
                   "allOf": [{"properties": {"b": {"minLength": 1}}}]}),
            vec![format!(
                "[FieldValueRequired] {P}.properties[b]: Required value: because it is defined in {P}.allOf[0].properties[b]"
            )],
        ),
        (
            "an embedded resource must be an object",
            with_spec(json!({"x-kubernetes-embedded-resource": true,
                              "x-kubernetes-preserve-unknown-fields": true})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].type: Required value: must be object if x-kubernetes-embedded-resource is true"
            )],
        ),
        (
            "an embedded resource needs properties or preserve-unknown-fields",
            with_spec(json!({"type": "object", "x-kubernetes-embedded-resource": true})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"
            )],
        ),
        (
            "root metadata may only restrict name and generateName",
            json!({"type": "object", "properties": {"metadata": {"type": "object",
                   "properties": {"labels": {"type": "object"}}}}}),
            vec![format!(
                "[FieldValueForbidden] {P}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
            )],
        ),
        (
            "uniqueItems is refused",
            with_spec(json!({"type": "array", "uniqueItems": true, "items": {"type": "string"}})),
            vec![format!(
                "[FieldValueForbidden] {P}.properties[spec].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"
            )],
        ),
        (
            "a list-type map needs keys",
            with_spec(json!({"type": "array", "x-kubernetes-list-type": "map",
                              "items": {"type": "object", "properties": {"a": {"type": "string"}}}})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"
            )],
        ),
        (
            "list-map keys must be required or defaulted",
            with_spec(json!({"type": "array", "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["a"],
                              "items": {"type": "object", "properties": {"a": {"type": "string"}}}})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].items.properties[a].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"
            )],
        ),
        (
            "an unknown list type",
            with_spec(
                json!({"type": "array", "x-kubernetes-list-type": "bag", "items": {"type": "string"}}),
            ),
            vec![format!(
                "[FieldValueNotSupported] {P}.properties[spec].x-kubernetes-list-type: Unsupported value: \"bag\": supported values: \"atomic\", \"set\", \"map\""
            )],
        ),
        (
            "a pattern must compile",
            with_spec(json!({"type": "string", "pattern": "["})),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].pattern: Invalid value: \"[\": must be a valid regular expression, but isn't: ..."
            )],
        ),
        (
            "a default must validate",
            with_spec(
                json!({"type": "object", "properties": {"replicas": {"type": "integer", "default": "x"}}}),
            ),
            vec![format!(
                "[FieldValueTypeInvalid] {P}.properties[spec].properties[replicas].default: Invalid value: \"string\":  in body must be of type integer: \"string\""
            )],
        ),
        (
            "a default must be pruned",
            with_spec(
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                              "default": {"a": "x", "b": "y"}}),
            ),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].default: Invalid value: map[string]interface {{}}{{\"a\":\"x\", \"b\":\"y\"}}: must not have unknown fields"
            )],
        ),
        (
            "no defaults in top-level metadata",
            json!({"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}}),
            vec![format!(
                "[FieldValueForbidden] {P}.properties[metadata].default: Forbidden: must not be set in top-level metadata"
            )],
        ),
        (
            "a rule must compile",
            with_spec(
                json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a =="}]}),
            ),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:\"self.a ==\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}}: compilation failed: ERROR: <input>:1:..."
            )],
        ),
        (
            "a rule may only use self and oldSelf",
            with_spec(
                json!({"type": "object", "x-kubernetes-validations": [{"rule": "foo == 1"}]}),
            ),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:\"foo == 1\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}}: compilation failed: ERROR: <input>:1:1: undeclared reference to 'foo' (in container '')"
            )],
        ),
        (
            "comprehension variables are declared",
            with_spec(json!({"type": "array", "items": {"type": "string"},
                              "x-kubernetes-validations": [{"rule": "self.all(x, self.exists(y, x == y))"}]})),
            vec![],
        ),
        (
            "oldSelf is refused where old items cannot be correlated",
            with_spec(json!({"type": "array", "items": {"type": "string",
                              "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}})),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within {P}.properties[spec]"
            )],
        ),
        (
            "a rule's reason must be a supported one",
            with_spec(
                json!({"type": "object", "x-kubernetes-validations": [{"rule": "true", "reason": "Bogus"}]}),
            ),
            vec![format!(
                "[FieldValueNotSupported] {P}.properties[spec].x-kubernetes-validations[0].reason: Unsupported value: \"Bogus\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""
            )],
        ),
        (
            "a rule's fieldPath must name a field",
            with_spec(
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                              "x-kubernetes-validations": [{"rule": "true", "fieldPath": ".nope"}]}),
            ),
            vec![format!(
                "[FieldValueInvalid] {P}.properties[spec].x-kubernetes-validations[0].fieldPath: Invalid value: \".nope\": fieldPath must be a valid path"
            )],
        ),
        (
            "a rule must not be empty",
            with_spec(json!({"type": "object", "x-kubernetes-validations": [{"rule": " "}]})),
            vec![format!(
                "[FieldValueRequired] {P}.properties[spec].x-kubernetes-validations[0].rule: Required value: rule is not specified"
            )],
        ),
    ];
    for (name, schema, want) in cases {
        assert_causes(name, &check_structural(&schema, P), &want);
    }
}

fn object_schema() -> Value {
    json!({"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["replicas"], "properties": {
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "multipleOf": 0.5, "maximum": 1_000_000.0, "exclusiveMaximum": true},
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-zé]+$"},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "port": {"x-kubernetes-int-or-string": true},
            "id": {"type": "string", "format": "uuid"},
            "when": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"},
                     "x-kubernetes-list-type": "set"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "labels": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string"}},
            "opt": {"type": "string", "nullable": true},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "x-kubernetes-preserve-unknown-fields": true},
            "choice": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                       "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
        }}
    }})
}

#[test]
fn validate_reports_kube_openapi_errors_with_kubes_paths_and_messages() {
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "a valid object",
            json!({"replicas": 3, "port": "http", "when": "2024-01-01T00:00:00Z",
                                   "ip": "10.0.0.1", "id": "123e4567-e89b-12d3-a456-426614174000",
                                   "opt": null, "ratio": 1.5, "name": "ééé"}),
            vec![],
        ),
        (
            "a required field",
            json!({}),
            vec!["[FieldValueRequired] spec.replicas: Required value"],
        ),
        (
            "a wrong type",
            json!({"replicas": "three"}),
            vec![
                "[FieldValueTypeInvalid] spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            ],
        ),
        (
            "a whole float is an integer",
            json!({"replicas": 3.0}),
            vec![],
        ),
        (
            "null where not nullable",
            json!({"replicas": 1, "name": null}),
            vec![
                "[FieldValueTypeInvalid] spec.name: Invalid value: \"null\": spec.name in body must be of type string: \"null\"",
            ],
        ),
        (
            "maximum",
            json!({"replicas": 11}),
            vec![
                "[FieldValueInvalid] spec.replicas: Invalid value: 11: spec.replicas in body must be less than or equal to 10",
            ],
        ),
        (
            "minimum",
            json!({"replicas": 0}),
            vec![
                "[FieldValueInvalid] spec.replicas: Invalid value: 0: spec.replicas in body must be greater than or equal to 1",
            ],
        ),
        (
            "multipleOf and exclusiveMaximum print floats as Go does",
            json!({"replicas": 1, "ratio": 1_000_000.0}),
            vec![
                "[FieldValueInvalid] spec.ratio: Invalid value: 1e+06: spec.ratio in body must be less than 1e+06",
            ],
        ),
        (
            "multipleOf",
            json!({"replicas": 1, "ratio": 0.3}),
            vec![
                "[FieldValueInvalid] spec.ratio: Invalid value: 0.3: spec.ratio in body should be a multiple of 0.5",
            ],
        ),
        (
            "minLength and pattern",
            json!({"replicas": 1, "name": ""}),
            vec![
                "[FieldValueInvalid] spec.name: Invalid value: \"\": spec.name in body should be at least 1 chars long",
                "[FieldValueInvalid] spec.name: Invalid value: \"\": spec.name in body should match '^[a-zé]+$'",
            ],
        ),
        (
            "maxLength counts runes",
            json!({"replicas": 1, "name": "éééééé"}),
            vec!["[FieldValueTooLong] spec.name: Too long: may not be more than 5 bytes"],
        ),
        (
            "enum",
            json!({"replicas": 1, "mode": "c"}),
            vec![
                "[FieldValueNotSupported] spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            ],
        ),
        (
            "int-or-string",
            json!({"replicas": 1, "port": true}),
            vec![
                "[FieldValueTypeInvalid] spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            ],
        ),
        (
            "formats",
            json!({"replicas": 1, "id": "nope", "ip": "1.2.3", "when": "yesterday"}),
            vec![
                "[FieldValueTypeInvalid] spec.id: Invalid value: \"nope\": spec.id in body must be of type uuid: \"nope\"",
                "[FieldValueTypeInvalid] spec.ip: Invalid value: \"1.2.3\": spec.ip in body must be of type ipv4: \"1.2.3\"",
                "[FieldValueTypeInvalid] spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            ],
        ),
        (
            "maxItems",
            json!({"replicas": 1, "tags": ["a", "b", "c"]}),
            vec!["[FieldValueTooMany] spec.tags: Too many: 3: must have at most 2 items"],
        ),
        (
            "minItems",
            json!({"replicas": 1, "tags": []}),
            vec![
                "[FieldValueInvalid] spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
            ],
        ),
        (
            "a set's duplicate",
            json!({"replicas": 1, "tags": ["a", "a"]}),
            vec!["[FieldValueDuplicate] spec.tags[1]: Duplicate value: \"a\""],
        ),
        (
            "a map list's duplicate key",
            json!({"replicas": 1, "ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}),
            vec![
                "[FieldValueDuplicate] spec.ports[1]: Duplicate value: map[string]interface {}{\"name\":\"a\"}",
            ],
        ),
        (
            "an item's required field",
            json!({"replicas": 1, "ports": [{"port": 1}]}),
            vec!["[FieldValueRequired] spec.ports[0].name: Required value"],
        ),
        (
            "additionalProperties and maxProperties",
            json!({"replicas": 1, "labels": {"a": 1, "b": "x", "c": "y"}}),
            vec![
                "[FieldValueTooMany] spec.labels: Too many: 3: must have at most 2 items",
                "[FieldValueTypeInvalid] spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
            ],
        ),
        (
            "an embedded resource needs apiVersion and kind",
            json!({"replicas": 1, "template": {}}),
            vec![
                "[FieldValueRequired] spec.template.apiVersion: Required value",
                "[FieldValueRequired] spec.template.kind: Required value",
            ],
        ),
        (
            "an embedded resource's kind",
            json!({"replicas": 1, "template": {"apiVersion": "v1", "kind": "my kind"}}),
            vec![
                "[FieldValueInvalid] spec.template.kind: Invalid value: \"my kind\": may have mixed case, but should otherwise match: a DNS-1035 label must consist of...",
            ],
        ),
        (
            "oneOf with none valid",
            json!({"replicas": 1, "choice": {}}),
            vec![
                "[FieldValueInvalid] <nil>: Invalid value: \"\": \"spec.choice\" must validate one and only one schema (oneOf). Found none valid",
                "[FieldValueRequired] spec.choice.a: Required value",
            ],
        ),
        (
            "oneOf with two valid",
            json!({"replicas": 1, "choice": {"a": "x", "b": "y"}}),
            vec![
                "[FieldValueInvalid] <nil>: Invalid value: \"\": \"spec.choice\" must validate one and only one schema (oneOf). Found 2 valid alternatives",
            ],
        ),
    ];
    let schema = object_schema();
    for (name, spec, want) in cases {
        let obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": 5, "spec": spec});
        assert_causes(name, &validate(&schema, &obj), &want);
    }
}

#[test]
fn default_fills_absent_and_non_nullable_null_fields_recursively() {
    let schema = with_spec(json!({"type": "object", "properties": {
        "replicas": {"type": "integer", "default": 1},
        "opt": {"type": "string", "nullable": true, "default": "x"},
        "list": {"type": "array", "items": {"type": "object",
                 "properties": {"p": {"type": "integer", "default": 80}}}},
        "m": {"type": "object", "additionalProperties": {"type": "object",
              "properties": {"x": {"type": "string", "default": "d"}}}},
        "nested": {"type": "object", "default": {}, "properties": {"inner": {"type": "string", "default": "i"}}},
        "plain": {"type": "string"}
    }}));
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "absent fields take their defaults, inside defaults too",
            json!({"spec": {}}),
            json!({"spec": {"replicas": 1, "opt": "x", "nested": {"inner": "i"}}}),
        ),
        (
            "null takes the default unless nullable",
            json!({"spec": {"replicas": null, "opt": null}}),
            json!({"spec": {"replicas": 1, "opt": null, "nested": {"inner": "i"}}}),
        ),
        (
            "array items are defaulted",
            json!({"spec": {"list": [{}, {"p": 8}]}}),
            json!({"spec": {"replicas": 1, "opt": "x", "nested": {"inner": "i"}, "list": [{"p": 80}, {"p": 8}]}}),
        ),
        (
            "additionalProperties values are defaulted",
            json!({"spec": {"m": {"k": {}}}}),
            json!({"spec": {"replicas": 1, "opt": "x", "nested": {"inner": "i"}, "m": {"k": {"x": "d"}}}}),
        ),
        (
            "a null without default or nullable is dropped",
            json!({"spec": {"plain": null}}),
            json!({"spec": {"replicas": 1, "opt": "x", "nested": {"inner": "i"}}}),
        ),
        (
            "a parent without default stays absent",
            json!({}),
            json!({}),
        ),
    ];
    for (name, mut obj, want) in cases {
        default(&schema, &mut obj);
        assert_eq!(obj, want, "case {name:?}");
    }
}

#[test]
fn prune_drops_unknown_fields_and_names_them() {
    let schema = with_spec(json!({"type": "object", "properties": {
        "a": {"type": "string"},
        "l": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                 "properties": {"known": {"type": "object", "properties": {"k": {"type": "string"}}}}},
        "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}},
        "emb": {"type": "object", "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object"}}}
    }}));
    let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
        (
            "unknown fields go; the root's type meta and metadata stay",
            json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "junk": 1}, "spec": {"a": "1", "b": 2}, "status": {}}),
            json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "junk": 1}, "spec": {"a": "1"}}),
            vec!["spec.b", "status"],
        ),
        (
            "inside array items",
            json!({"spec": {"l": [{"x": "1", "y": 2}]}}),
            json!({"spec": {"l": [{"x": "1"}]}}),
            vec!["spec.l[0].y"],
        ),
        (
            "preserve-unknown-fields keeps unknowns, known fields are still pruned",
            json!({"spec": {"free": {"anything": 1, "known": {"k": "v", "z": 1}}}}),
            json!({"spec": {"free": {"anything": 1, "known": {"k": "v"}}}}),
            vec!["spec.free.known.z"],
        ),
        (
            "inside additionalProperties",
            json!({"spec": {"m": {"key": {"v": "1", "w": 2}}}}),
            json!({"spec": {"m": {"key": {"v": "1"}}}}),
            vec!["spec.m.key.w"],
        ),
        (
            "an embedded resource keeps its type meta",
            json!({"spec": {"emb": {"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}, "spec": {}, "other": 1}}}),
            json!({"spec": {"emb": {"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}, "spec": {}}}}),
            vec!["spec.emb.other"],
        ),
        (
            "a root apiVersion that is not a string is dropped silently",
            json!({"apiVersion": 5, "spec": {}}),
            json!({"spec": {}}),
            vec![],
        ),
    ];
    for (name, mut obj, want, want_paths) in cases {
        let paths = prune(&schema, &mut obj);
        assert_eq!(obj, want, "case {name:?}");
        assert_eq!(paths, want_paths, "case {name:?}");
    }
}

/// (name, schema, new spec, old spec, expected causes)
type CelCase = (&'static str, Value, Value, Option<Value>, Vec<&'static str>);

#[test]
fn validate_cel_evaluates_rules_with_kubes_messages_reasons_and_paths() {
    let rule = |r: Value| {
        with_spec(
            json!({"type": "object", "x-kubernetes-validations": [r], "properties": {
                "replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
                "name": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "name is immutable"}]},
                "items": {"type": "array", "items": {"type": "string"}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}},
                         "x-kubernetes-validations": [{"rule": "self.n > 0"}]}},
                "x-y": {"type": "integer"},
                "when": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": true, "x-kubernetes-validations": [{"rule": "self != 'bad'"}]}
            }}),
        )
    };
    let many: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let cases: Vec<CelCase> = vec![
        (
            "a passing rule",
            rule(json!({"rule": "self.minReplicas <= self.replicas"})),
            json!({"minReplicas": 1, "replicas": 3}),
            None,
            vec![],
        ),
        (
            "a failing rule without message",
            rule(json!({"rule": "self.minReplicas <= self.replicas"})),
            json!({"minReplicas": 5, "replicas": 3}),
            None,
            vec![
                "[FieldValueInvalid] spec: Invalid value: \"object\": failed rule: self.minReplicas <= self.replicas",
            ],
        ),
        (
            "message",
            rule(json!({"rule": "self.replicas > 3", "message": "replicas too low"})),
            json!({"replicas": 3}),
            None,
            vec!["[FieldValueInvalid] spec: Invalid value: \"object\": replicas too low"],
        ),
        (
            "messageExpression",
            rule(json!({"rule": "self.replicas > 3", "message": "m",
                                            "messageExpression": "'replicas is ' + string(self.replicas)"})),
            json!({"replicas": 3}),
            None,
            vec!["[FieldValueInvalid] spec: Invalid value: \"object\": replicas is 3"],
        ),
        (
            "reason and fieldPath",
            rule(
                json!({"rule": "self.replicas > 3", "reason": "FieldValueForbidden",
                                              "fieldPath": ".replicas", "message": "too few"}),
            ),
            json!({"replicas": 3}),
            None,
            vec!["[FieldValueForbidden] spec.replicas: Forbidden: too few"],
        ),
        (
            "reason Required",
            rule(json!({"rule": "has(self.name)", "reason": "FieldValueRequired"})),
            json!({}),
            None,
            vec!["[FieldValueRequired] spec: Required value: failed rule: has(self.name)"],
        ),
        (
            "reason Duplicate",
            rule(json!({"rule": "false", "reason": "FieldValueDuplicate"})),
            json!({}),
            None,
            vec!["[FieldValueDuplicate] spec: Duplicate value: \"object\""],
        ),
        (
            "macros and size",
            rule(
                json!({"rule": "self.items.all(x, size(x) <= 3) && self.items.exists(x, x == 'b') && self.items.map(x, x + '!').filter(y, y == 'a!').size() == 1"}),
            ),
            json!({"items": ["a", "b"]}),
            None,
            vec![],
        ),
        (
            "string functions",
            rule(
                json!({"rule": "self.name.startsWith('web') && self.name.lowerAscii() == self.name && self.name.matches('^[a-z]+$')"}),
            ),
            json!({"name": "Web"}),
            None,
            vec![
                "[FieldValueInvalid] spec: Invalid value: \"object\": failed rule: self.name.startsWith('web') && self.name.lowerAscii() == self.name && self.name.matches('^[a-z]+$')",
            ],
        ),
        (
            "a transition rule fails against the old object",
            rule(
                json!({"rule": "self.replicas >= oldSelf.replicas", "message": "cannot scale down"}),
            ),
            json!({"replicas": 3}),
            Some(json!({"replicas": 5})),
            vec!["[FieldValueInvalid] spec: Invalid value: \"object\": cannot scale down"],
        ),
        (
            "a transition rule is skipped on create",
            rule(json!({"rule": "self.replicas >= oldSelf.replicas"})),
            json!({"replicas": 3}),
            None,
            vec![],
        ),
        (
            "immutability on a field",
            rule(json!({"rule": "true"})),
            json!({"name": "b"}),
            Some(json!({"name": "a"})),
            vec!["[FieldValueInvalid] spec.name: Invalid value: \"string\": name is immutable"],
        ),
        (
            "item rules report the item's path",
            rule(json!({"rule": "true"})),
            json!({"list": [{"n": 1}, {"n": 0}]}),
            None,
            vec![
                "[FieldValueInvalid] spec.list[1]: Invalid value: \"object\": failed rule: self.n > 0",
            ],
        ),
        (
            "escaped property names",
            rule(json!({"rule": "self.x__dash__y == 1"})),
            json!({"x-y": 1}),
            None,
            vec![],
        ),
        (
            "timestamps from date-time strings",
            rule(json!({"rule": "self.when < timestamp('2030-01-01T00:00:00Z')"})),
            json!({"when": "2024-05-01T10:00:00Z"}),
            None,
            vec![],
        ),
        (
            "int-or-string rules see the type as empty",
            rule(json!({"rule": "true"})),
            json!({"port": "bad"}),
            None,
            vec!["[FieldValueInvalid] spec.port: Invalid value: \"\": failed rule: self != 'bad'"],
        ),
        (
            "an evaluation error",
            rule(json!({"rule": "self.missing == 1"})),
            json!({}),
            None,
            vec![
                "[FieldValueInvalid] spec: Invalid value: \"object\": ... evaluating rule: self.missing == 1",
            ],
        ),
        (
            "an expensive rule is not run",
            rule(
                json!({"rule": "self.items.all(a, self.items.all(b, self.items.all(c, a != b || b == c)))"}),
            ),
            json!({"items": many}),
            None,
            vec![
                "[FieldValueInvalid] spec: Invalid value: \"object\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.items.all(a, self.items.all(b, self.items.all(c, a != b || b == c)))",
            ],
        ),
    ];
    for (name, schema, spec, old_spec, want) in cases {
        let obj = json!({"apiVersion": "x/v1", "kind": "X", "spec": spec});
        let old = old_spec.map(|o| json!({"apiVersion": "x/v1", "kind": "X", "spec": o}));
        assert_causes(name, &validate_cel(&schema, &obj, old.as_ref()), &want);
    }
}

#[test]
fn go_float_prints_floats_as_gos_percent_v() {
    let cases = [
        (10.0, "10"),
        (1.5, "1.5"),
        (0.3, "0.3"),
        (100_000.0, "100000"),
        (1_000_000.0, "1e+06"),
        (1_234_567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
    ];
    for (f, want) in cases {
        assert_eq!(super::go_float(f), want, "{f}");
    }
}
