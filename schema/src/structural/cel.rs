//! `x-kubernetes-validations`: CEL rules on schema nodes, with the `cel` crate.
//!
//! Each rule runs at its node with `self` bound to the node's value (objects with declared
//! properties expose them under kube's escaped names: `x-y` is `self.x__dash__y`), and
//! `oldSelf` to the correlated old value for transition rules (rules that mention
//! `oldSelf`), which are skipped when there is no old value. Values follow the schema:
//! `integer` is int, `number` double, strings of `format` `byte`, `date`, `date-time` and
//! `duration` are bytes, timestamps and durations.
//!
//! # Bounds
//! The crate has no cost model, so evaluation is bounded by what can be controlled here:
//! - a rule or messageExpression is at most [`CEL_EXPRESSION_BYTES_MAX`] long and its
//!   syntax tree at most [`CEL_EXPRESSION_NODES_MAX`] nodes and [`CEL_EXPRESSION_DEPTH_MAX`]
//!   deep (the crate's parser also stops at 96 levels of nesting);
//! - before a rule runs, its cost is estimated as `nodes × (n + 1)^d`, `d` being how deeply
//!   its comprehensions (`all`, `exists`, `map`, `filter`, ...) nest and `n` the largest
//!   list or map in `self`/`oldSelf` (or string, when the rule splits strings). Over
//!   [`CEL_RULE_COST_MAX`] the rule is not run and kube's "call cost exceeds limit" error
//!   is reported; the estimates of one object's rules add up to at most
//!   [`CEL_TOTAL_COST_MAX`], then kube's "running out of cost budget" error ends
//!   validation.
//!
//! Not bounded: the work of one operation on a long operand (`==` or `in` on a big list,
//! string functions on a long string, `matches` with the crate's own regex limits) is
//! counted as one step, so a rule can take up to the largest operand's size times longer
//! than its estimate; memory of intermediate values is bounded only through that.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program};
use serde_json::Value;

use super::{additional_schema, child, embedded, go_quote, items, props, str_list, type_of};
use crate::validate::Cause;

/// Longest rule or messageExpression, in bytes. kube has no such limit of its own (the CRD's
/// size bounds it); rules in practice are far shorter.
pub const CEL_EXPRESSION_BYTES_MAX: usize = 16 * 1024;
/// Most syntax-tree nodes in one compiled rule or messageExpression (macros expanded).
pub const CEL_EXPRESSION_NODES_MAX: usize = 4_096;
/// Deepest syntax tree of one expression, in levels: the interpreter recurses once per
/// level, so this bounds its stack (a long `a + b + c + ...` chain nests one level a term).
pub const CEL_EXPRESSION_DEPTH_MAX: usize = 128;
/// Largest estimated cost of one rule evaluation, in steps (kube's per-call limit,
/// `celconfig.PerCallLimit`, in its own cost units).
pub const CEL_RULE_COST_MAX: u64 = 1_000_000;
/// Largest estimated cost of all rule evaluations of one object, in steps (kube's
/// `celconfig.RuntimeCELCostBudget`).
pub const CEL_TOTAL_COST_MAX: u64 = 10_000_000;
/// Longest evaluated messageExpression, in bytes (kube's
/// `celconfig.MaxEvaluatedMessageExpressionSizeBytes`).
const MESSAGE_EXPRESSION_BYTES_MAX: usize = 5 * 1024;

const SUPPORTED_REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Identifiers that are not variables: type names and function namespaces.
const KNOWN_IDENTS: [&str; 18] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "optional",
    "strings",
    "math",
    "base64",
    "sets",
];

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // kube's base environment has cel-go's ext.Strings; a failure to register it leaves
        // the standard library, and rules using those functions fail to evaluate.
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
    .clone()
}

/// A compiled expression and what the checks need to know about it.
struct Compiled {
    program: Program,
    nodes: usize,
    comprehension_depth: u32,
    uses_old_self: bool,
    splits_strings: bool,
}

/// Compiles `source` with `self` and `oldSelf` the only variables. The error is the text
/// after `compilation failed: `.
fn compile(source: &str) -> Result<Compiled, String> {
    if source.len() > CEL_EXPRESSION_BYTES_MAX {
        return Err(format!(
            "expression is {} bytes long, more than the {CEL_EXPRESSION_BYTES_MAX} allowed",
            source.len()
        ));
    }
    let program = env().compile(source).map_err(|e| e.to_string())?;
    let shape = shape(&program, source)?;
    Ok(Compiled {
        program,
        nodes: shape.nodes,
        comprehension_depth: shape.comprehension_depth,
        uses_old_self: shape.uses_old_self,
        splits_strings: shape.splits_strings,
    })
}

struct Shape {
    nodes: usize,
    comprehension_depth: u32,
    uses_old_self: bool,
    splits_strings: bool,
}

/// Walks the syntax tree without recursion: counts nodes, measures depth and comprehension
/// nesting, and finds undeclared references (cel-go's type checker's first complaint).
fn shape(program: &Program, source: &str) -> Result<Shape, String> {
    let mut s = Shape {
        nodes: 0,
        comprehension_depth: 0,
        uses_old_self: false,
        splits_strings: false,
    };
    // (node, depth, comprehension depth, bound comprehension variables)
    let mut stack: Vec<(&cel::IdedExpr, usize, u32, Arc<Vec<String>>)> =
        vec![(program.expression(), 1, 0, Arc::new(Vec::new()))];
    while let Some((e, depth, cd, bound)) = stack.pop() {
        s.nodes += 1;
        if s.nodes > CEL_EXPRESSION_NODES_MAX {
            return Err(format!(
                "expression has more than {CEL_EXPRESSION_NODES_MAX} nodes"
            ));
        }
        if depth > CEL_EXPRESSION_DEPTH_MAX {
            return Err(format!(
                "expression nests more than {CEL_EXPRESSION_DEPTH_MAX} levels deep"
            ));
        }
        s.comprehension_depth = s.comprehension_depth.max(cd);
        let d = depth + 1;
        match &e.expr {
            Expr::Ident(name) => {
                if name == "oldSelf" {
                    s.uses_old_self = true;
                } else if name != "self"
                    && !bound.iter().any(|b| b == name)
                    && !KNOWN_IDENTS.contains(&name.as_str())
                {
                    let (line, col) = position(program, e.id, source);
                    return Err(format!(
                        "ERROR: <input>:{line}:{col}: undeclared reference to '{name}' (in container '')"
                    ));
                }
            }
            Expr::Call(c) => {
                if c.func_name == "split" {
                    s.splits_strings = true;
                }
                if let Some(t) = &c.target {
                    stack.push((t, d, cd, bound.clone()));
                }
                for a in &c.args {
                    stack.push((a, d, cd, bound.clone()));
                }
            }
            Expr::Comprehension(c) => {
                let mut inner = (*bound).clone();
                inner.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    inner.push(v2.clone());
                }
                inner.push(c.accu_var.clone());
                let inner = Arc::new(inner);
                stack.push((&c.iter_range, d, cd, bound.clone()));
                stack.push((&c.accu_init, d, cd, bound.clone()));
                stack.push((&c.loop_cond, d, cd + 1, inner.clone()));
                stack.push((&c.loop_step, d, cd + 1, inner.clone()));
                stack.push((&c.result, d, cd, inner));
            }
            Expr::List(l) => {
                for x in &l.elements {
                    stack.push((x, d, cd, bound.clone()));
                }
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        stack.push((&me.key, d, cd, bound.clone()));
                        stack.push((&me.value, d, cd, bound.clone()));
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        stack.push((&f.value, d, cd, bound.clone()));
                    }
                }
            }
            Expr::Select(sel) => stack.push((&sel.operand, d, cd, bound.clone())),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    Ok(s)
}

/// 1-based line and column of a node, as cel-go prints them.
fn position(program: &Program, id: u64, source: &str) -> (usize, usize) {
    let offset = program
        .source_info()
        .offset_for(id)
        .map(|(start, _)| start as usize)
        .unwrap_or(0);
    let before: String = source.chars().take(offset).collect();
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// One `x-kubernetes-validations` entry.
struct Rule<'a> {
    raw: &'a Value,
    rule: &'a str,
    message: &'a str,
    message_expression: &'a str,
    reason: Option<&'a str>,
    field_path: &'a str,
}

fn rules(s: &Value) -> Vec<Rule<'_>> {
    let Some(list) = s.get("x-kubernetes-validations").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
            Rule {
                raw: r,
                rule: text("rule"),
                message: text("message"),
                message_expression: text("messageExpression"),
                reason: r.get("reason").and_then(Value::as_str),
                field_path: text("fieldPath"),
            }
        })
        .collect()
}

/// A rule as Go's `%#v` prints kube's internal `apiextensions.ValidationRule` (the bad value
/// of a compilation error). A set `reason` or `optionalOldSelf` prints as its value here;
/// kube prints the pointer's address.
fn rule_struct(r: &Rule<'_>) -> String {
    let reason = match r.reason {
        Some(x) => format!("(*apiextensions.FieldValueErrorReason)({})", go_quote(x)),
        None => "(*apiextensions.FieldValueErrorReason)(nil)".into(),
    };
    let optional = match r.raw.get("optionalOldSelf").and_then(Value::as_bool) {
        Some(b) => format!("(*bool)({b})"),
        None => "(*bool)(nil)".into(),
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{reason}, FieldPath:{}, OptionalOldSelf:{optional}}}",
        go_quote(r.rule),
        go_quote(r.message),
        go_quote(r.message_expression),
        go_quote(r.field_path)
    )
}

fn has_newlines(s: &str) -> bool {
    s.contains(['\n', '\r'])
}

/// The per-rule field checks kube makes in `ValidateCustomResourceDefinitionOpenAPISchema`
/// (schema errors, reported whether or not the rules compile).
pub(super) fn check_rule_fields(s: &Value, path: &str, out: &mut Vec<Cause>) {
    for (i, r) in rules(s).iter().enumerate() {
        let rp = format!("{}[{i}]", child(path, "x-kubernetes-validations"));
        let rule = r.rule.trim();
        let msg = r.message.trim();
        if rule.is_empty() {
            out.push(Cause::required(
                &child(&rp, "rule"),
                "rule is not specified",
            ));
        } else if !r.message.is_empty() && msg.is_empty() {
            out.push(Cause::invalid(
                &child(&rp, "message"),
                &go_quote(r.message),
                "message must be non-empty if specified",
            ));
        } else if has_newlines(msg) {
            out.push(Cause::invalid(
                &child(&rp, "message"),
                &go_quote(r.message),
                "message must not contain line breaks",
            ));
        } else if has_newlines(rule) && msg.is_empty() {
            out.push(Cause::required(
                &child(&rp, "message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        if !r.message_expression.is_empty() && r.message_expression.trim().is_empty() {
            out.push(Cause::required(
                &child(&rp, "messageExpression"),
                "messageExpression must be non-empty if specified",
            ));
        }
        if let Some(reason) = r.reason
            && !SUPPORTED_REASONS.contains(&reason)
        {
            out.push(Cause::not_supported(
                &child(&rp, "reason"),
                reason,
                &SUPPORTED_REASONS,
            ));
        }
        if !r.field_path.is_empty() {
            let fp = child(&rp, "fieldPath");
            if r.field_path.trim().is_empty() {
                out.push(Cause::invalid(
                    &fp,
                    &go_quote(r.field_path),
                    "fieldPath must be non-empty if specified",
                ));
            }
            if has_newlines(r.field_path) {
                out.push(Cause::invalid(
                    &fp,
                    &go_quote(r.field_path),
                    "fieldPath must not contain line breaks",
                ));
            }
            if field_path(r.field_path, s).is_err() {
                out.push(Cause::invalid(
                    &fp,
                    &go_quote(r.field_path),
                    "fieldPath must be a valid path",
                ));
            }
        }
    }
}

/// Compiles every rule and messageExpression of the schema (CRD creation), reporting
/// compilation failures, `oldSelf` where old values cannot be correlated, and
/// `optionalOldSelf` without `oldSelf`, under `prefix`.
pub fn check_cel(schema: &Value, prefix: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    check_node(schema, prefix, None, &mut out);
    out
}

fn check_node(s: &Value, path: &str, uncorrelatable: Option<&str>, out: &mut Vec<Cause>) {
    for (i, r) in rules(s).iter().enumerate() {
        let rp = format!("{}[{i}]", child(path, "x-kubernetes-validations"));
        if r.rule.trim().is_empty() {
            continue;
        }
        match compile(r.rule) {
            Err(e) => out.push(Cause::invalid(
                &child(&rp, "rule"),
                &rule_struct(r),
                &format!("compilation failed: {e}"),
            )),
            Ok(c) => {
                if c.uses_old_self {
                    if let Some(u) = uncorrelatable {
                        out.push(Cause::invalid(
                            &child(&rp, "rule"),
                            &go_quote(r.rule),
                            &format!(
                                "oldSelf cannot be used on the uncorrelatable portion of the schema within {u}"
                            ),
                        ));
                    }
                } else if let Some(b) = r.raw.get("optionalOldSelf").and_then(Value::as_bool) {
                    out.push(Cause::invalid(
                        &child(&rp, "optionalOldSelf"),
                        &b.to_string(),
                        "may not be set if oldSelf is not used in rule",
                    ));
                }
            }
        }
        if !r.message_expression.trim().is_empty()
            && let Err(e) = compile(r.message_expression)
        {
            out.push(Cause::invalid(
                &child(&rp, "messageExpression"),
                &rule_struct(r),
                &format!("messageExpression compilation failed: {e}"),
            ));
        }
    }
    let atomic_map = s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
    if let Some(ps) = props(s) {
        let mut keys: Vec<&String> = ps.keys().collect();
        keys.sort();
        for k in keys {
            let sub = if atomic_map && uncorrelatable.is_none() {
                Some(path)
            } else {
                uncorrelatable
            };
            check_node(
                &ps[k.as_str()],
                &super::key(&child(path, "properties"), k),
                sub,
                out,
            );
        }
    }
    if let Some(ap) = additional_schema(s) {
        let sub = if atomic_map && uncorrelatable.is_none() {
            Some(path)
        } else {
            uncorrelatable
        };
        check_node(ap, &child(path, "additionalProperties"), sub, out);
    }
    if let Some(item) = items(s) {
        let sub = if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map")
            && uncorrelatable.is_none()
        {
            Some(path)
        } else {
            uncorrelatable
        };
        check_node(item, &child(path, "items"), sub, out);
    }
}

// ---- field paths ----------------------------------------------------------------------------

/// Parses a rule's `fieldPath` (`.spec.x`, `.m['a.b']`) against the node's schema into
/// apimachinery path segments (`spec.x`, `m[a.b]`), as kube's `ValidFieldPath`.
fn field_path(fp: &str, schema: &Value) -> Result<String, String> {
    let mut s = schema;
    let mut out = String::new();
    let mut rest = fp;
    while !rest.is_empty() {
        let (name, next) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (r[..end].to_string(), &r[end..])
        } else if let Some(r) = rest.strip_prefix("['") {
            let mut name = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('\'' | '\\'))) => name.push(e),
                        Some((_, 'n')) => name.push('\n'),
                        Some((_, 't')) => name.push('\t'),
                        _ => return Err("invalid escape".into()),
                    },
                    '\'' => {
                        end = Some(i);
                        break;
                    }
                    c => name.push(c),
                }
            }
            let end = end.ok_or("unexpected end of JSON path")?;
            let after = r[end + 1..].strip_prefix(']').ok_or("expected ]")?;
            (name, after)
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        if name.is_empty() {
            return Err("unexpected end of JSON path".into());
        }
        if let Some(p) = props(s) {
            s = p.get(&name).ok_or("does not refer to a valid field")?;
            out = child(&out, &name);
        } else if let Some(ap) = additional_schema(s) {
            s = ap;
            out = format!("{out}[{name}]");
        } else {
            return Err("does not refer to a valid field".into());
        }
        rest = next;
    }
    Ok(out)
}

// ---- evaluation -----------------------------------------------------------------------------

/// Evaluates every `x-kubernetes-validations` rule of `schema` against `obj` (and `old`, the
/// stored object on update, for transition rules), returning kube's causes: the rule's
/// `message` or evaluated `messageExpression` (else `failed rule: <rule>`), its `reason`
/// (FieldValueInvalid unless set) and `fieldPath` appended to the node's path.
pub fn validate_cel(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut ev = Evaluator {
        budget: CEL_TOTAL_COST_MAX,
        out: Vec::new(),
        compiled: HashMap::new(),
    };
    let _ = ev.node(schema, obj, old, "", true);
    ev.out
}

struct Evaluator {
    budget: u64,
    out: Vec<Cause>,
    compiled: HashMap<String, Option<Arc<Compiled>>>,
}

/// Evaluation stopped: the budget ran out.
struct Stop;

impl Evaluator {
    fn compiled(&mut self, src: &str) -> Option<Arc<Compiled>> {
        self.compiled
            .entry(src.to_string())
            .or_insert_with(|| compile(src).ok().map(Arc::new))
            .clone()
    }

    fn node(
        &mut self,
        s: &Value,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        root: bool,
    ) -> Result<(), Stop> {
        if v.is_null() {
            return Ok(());
        }
        let old = old.filter(|o| !o.is_null());
        self.rules(s, v, old, path, root)?;
        match v {
            Value::Object(m) => {
                let correlatable =
                    s.get("x-kubernetes-map-type").and_then(Value::as_str) != Some("atomic");
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let x = &m[k.as_str()];
                    let ox = if correlatable {
                        old.and_then(|o| o.get(k.as_str()))
                    } else {
                        None
                    };
                    if let Some(ps) = props(s).and_then(|p| p.get(k.as_str())) {
                        if root && k == "metadata" {
                            continue;
                        }
                        self.node(ps, x, ox, &child(path, k), false)?;
                    } else if let Some(ap) = additional_schema(s) {
                        self.node(ap, x, ox, &super::key(path, k), false)?;
                    }
                }
            }
            Value::Array(a) => {
                if let Some(item) = items(s) {
                    let map_keys = (s.get("x-kubernetes-list-type").and_then(Value::as_str)
                        == Some("map"))
                    .then(|| str_list(s, "x-kubernetes-list-map-keys"));
                    for (i, x) in a.iter().enumerate() {
                        let ox = map_keys.as_ref().and_then(|keys| {
                            old.and_then(Value::as_array).and_then(|oa| {
                                oa.iter()
                                    .find(|o| keys.iter().all(|k| o.get(k) == x.get(k)))
                            })
                        });
                        self.node(item, x, ox, &format!("{path}[{i}]"), false)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn rules(
        &mut self,
        s: &Value,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        root: bool,
    ) -> Result<(), Stop> {
        let rs = rules(s);
        if rs.is_empty() {
            return Ok(());
        }
        let t = type_of(s);
        let type_value = go_quote(t);
        let self_val = to_cel(v, Some(s), root || embedded(s));
        let old_val = old.map(|o| to_cel(o, Some(s), root || embedded(s)));
        let size = largest(v).max(old.map(largest).unwrap_or(0));
        let longest = longest_string(v).max(old.map(longest_string).unwrap_or(0));
        for r in &rs {
            if r.rule.trim().is_empty() {
                continue;
            }
            let Some(c) = self.compiled(r.rule) else {
                self.out.push(Cause::invalid(
                    path,
                    &type_value,
                    &format!(
                        "rule compile error: {}",
                        compile(r.rule).err().unwrap_or_default()
                    ),
                ));
                continue;
            };
            if c.uses_old_self && old_val.is_none() {
                continue;
            }
            let n = if c.splits_strings {
                size.max(longest)
            } else {
                size
            } as u64;
            let cost = estimate(c.nodes, n, c.comprehension_depth);
            let rule_text = rule_error_string(r);
            if cost > CEL_RULE_COST_MAX {
                self.out.push(Cause::invalid(
                    path,
                    &type_value,
                    &format!(
                        "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {rule_text}"
                    ),
                ));
                return Err(Stop);
            }
            if cost > self.budget {
                self.out.push(Cause::invalid(
                    path,
                    &type_value,
                    "validation failed due to running out of cost budget, no further validation rules will be run",
                ));
                return Err(Stop);
            }
            self.budget -= cost;
            let mut ctx = Context::with_env(env());
            ctx.add_variable_from_value("self", self_val.clone());
            if let Some(o) = &old_val {
                ctx.add_variable_from_value("oldSelf", o.clone());
            }
            let result = c.program.execute(&ctx);
            let ok = match result {
                Ok(cel::Value::Bool(true)) => true,
                Ok(_) => false,
                Err(e) => {
                    let e = e.to_string();
                    let detail = if e.contains("no matching overload")
                        || e.starts_with("found no matching")
                    {
                        format!(
                            "'no such overload: {e}': call arguments did not match a supported operator, function or macro signature for rule: {rule_text}"
                        )
                    } else {
                        format!("{e} evaluating rule: {rule_text}")
                    };
                    self.out.push(Cause::invalid(path, &type_value, &detail));
                    continue;
                }
            };
            if ok {
                continue;
            }
            let mut at = path.to_string();
            if !r.field_path.is_empty()
                && let Ok(fp) = field_path(r.field_path, s)
            {
                at = if fp.starts_with('[') {
                    format!("{at}{fp}")
                } else {
                    child(&at, &fp)
                };
            }
            let mut detail = None;
            if !r.message_expression.trim().is_empty()
                && let Some(m) = self.compiled(r.message_expression)
            {
                let mcost = estimate(m.nodes, size as u64, m.comprehension_depth);
                if mcost > self.budget {
                    self.out.push(Cause::invalid(
                        &at,
                        &type_value,
                        "messageExpression evaluation failed due to running out of cost budget, no further validation rules will be run",
                    ));
                    return Err(Stop);
                }
                self.budget -= mcost;
                if let Ok(cel::Value::String(msg)) = m.program.execute(&ctx) {
                    let msg = msg.trim();
                    if !msg.is_empty()
                        && msg.len() <= MESSAGE_EXPRESSION_BYTES_MAX
                        && !msg.contains('\n')
                    {
                        detail = Some(msg.to_string());
                    }
                }
            }
            let detail = detail.unwrap_or_else(|| {
                if r.message.is_empty() {
                    format!("failed rule: {rule_text}")
                } else {
                    r.message.trim().to_string()
                }
            });
            self.out.push(match r.reason {
                Some("FieldValueForbidden") => Cause::forbidden(&at, &detail),
                Some("FieldValueRequired") => Cause::required(&at, &detail),
                Some("FieldValueDuplicate") => Cause::duplicate_rendered(&at, &type_value),
                _ => Cause::invalid(&at, &type_value, &detail),
            });
        }
        Ok(())
    }
}

fn rule_error_string(r: &Rule<'_>) -> String {
    if r.message.is_empty() {
        r.rule.trim().to_string()
    } else {
        r.message.trim().to_string()
    }
}

/// `nodes × (n + 1)^depth`, saturating.
fn estimate(nodes: usize, n: u64, depth: u32) -> u64 {
    (nodes as u64).saturating_mul((n + 1).saturating_pow(depth))
}

/// The largest list or map in a value, in elements (iteratively: values can be deep).
fn largest(v: &Value) -> usize {
    let mut best = 0;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        match x {
            Value::Array(a) => {
                best = best.max(a.len());
                stack.extend(a.iter());
            }
            Value::Object(m) => {
                best = best.max(m.len());
                stack.extend(m.values());
            }
            _ => {}
        }
    }
    best
}

fn longest_string(v: &Value) -> usize {
    let mut best = 0;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        match x {
            Value::String(s) => best = best.max(s.len()),
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    best
}

// ---- JSON → CEL ------------------------------------------------------------------------------

/// kube's escaping of property names into CEL identifiers (`model.Escape`); `None` for a
/// name CEL cannot reach.
fn escape(name: &str) -> Option<String> {
    const RESERVED: [&str; 21] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            _ => return None,
        }
    }
    Some(out)
}

/// A JSON value as the CEL value kube binds for it (`UnstructuredToVal`), typed by the
/// schema where there is one. `resource` marks an object whose `metadata` only exposes
/// `name` and `generateName`.
fn to_cel(v: &Value, s: Option<&Value>, resource: bool) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let t = s.map(type_of).unwrap_or("");
            match (t, n.as_i64()) {
                ("number", _) => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
                (_, Some(i)) => cel::Value::Int(i),
                ("integer", None) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                    cel::Value::Int(n.as_f64().unwrap_or(0.0) as i64)
                }
                _ => match n.as_u64() {
                    Some(u) => cel::Value::UInt(u),
                    None => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
                },
            }
        }
        Value::String(st) => {
            string_to_cel(st, s.and_then(|s| s.get("format")).and_then(Value::as_str))
        }
        Value::Array(a) => {
            let item = s.and_then(items);
            cel::Value::List(Arc::new(a.iter().map(|x| to_cel(x, item, false)).collect()))
        }
        Value::Object(m) => {
            let declared = s.and_then(props);
            let mut out: HashMap<Key, cel::Value> = HashMap::with_capacity(m.len());
            for (k, x) in m {
                if resource && k == "metadata" {
                    let mut meta = HashMap::new();
                    for f in ["name", "generateName"] {
                        if let Some(Value::String(val)) = x.get(f) {
                            meta.insert(
                                Key::String(Arc::new(f.to_string())),
                                cel::Value::String(Arc::new(val.clone())),
                            );
                        }
                    }
                    out.insert(
                        Key::String(Arc::new(k.clone())),
                        cel::Value::Map(CelMap {
                            map: Arc::new(meta),
                        }),
                    );
                    continue;
                }
                if let Some(ps) = declared {
                    match ps.get(k) {
                        Some(p) => {
                            if let Some(name) = escape(k) {
                                out.insert(
                                    Key::String(Arc::new(name)),
                                    to_cel(x, Some(p), embedded(p)),
                                );
                            }
                        }
                        None if resource && (k == "apiVersion" || k == "kind") => {
                            out.insert(Key::String(Arc::new(k.clone())), to_cel(x, None, false));
                        }
                        None => {}
                    }
                } else {
                    let sub = s.and_then(additional_schema);
                    out.insert(
                        Key::String(Arc::new(k.clone())),
                        to_cel(x, sub, sub.is_some_and(embedded)),
                    );
                }
            }
            cel::Value::Map(CelMap { map: Arc::new(out) })
        }
    }
}

fn string_to_cel(st: &str, format: Option<&str>) -> cel::Value {
    let plain = || cel::Value::String(Arc::new(st.to_string()));
    match format {
        Some("byte") => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(st) {
                Ok(b) => cel::Value::Bytes(Arc::new(b)),
                Err(_) => plain(),
            }
        }
        Some("date-time") => chrono::DateTime::parse_from_rfc3339(st)
            .map(cel::Value::Timestamp)
            .unwrap_or_else(|_| plain()),
        Some("date") => chrono::NaiveDate::parse_from_str(st, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|dt| cel::Value::Timestamp(dt.and_utc().fixed_offset()))
            .unwrap_or_else(plain),
        Some("duration") => parse_go_duration(st, false)
            .and_then(|ns| i64::try_from(ns).ok())
            .map(|ns| cel::Value::Duration(chrono::Duration::nanoseconds(ns)))
            .unwrap_or_else(plain),
        _ => plain(),
    }
}

/// Go's `time.ParseDuration` (`1h30m`, `-1.5s`, `300ms`), in nanoseconds; with
/// `days_weeks`, strfmt's `d` and `w` units too.
pub(super) fn parse_go_duration(s: &str, days_weeks: bool) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" if days_weeks => 86_400e9,
            "w" if days_weeks => 604_800e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * unit;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let ns = total as i128;
    Some(if neg { -ns } else { ns })
}
