//! Label and field selectors: parsing with apimachinery's grammar and error messages,
//! matching against objects as JSON, and the canonical string forms.
//!
//! The label selector parser is a transcription of `k8s.io/apimachinery/pkg/labels`'
//! lexer and recursive-descent parser, so that the same inputs are accepted, the same are
//! refused, and the refusals read the same (`unable to parse requirement: ...`,
//! `found '...', expected: ...`). The field selector follows `pkg/fields`.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;
use crate::validate::{go_quote, go_string_slice, is_qualified_name, is_valid_label_value};

/// A selector that cannot be parsed or a field that cannot be selected on; the message is
/// meant for a 400 `BadRequest`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// How a label requirement compares a label with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `k=v`
    Equals,
    /// `k==v`
    DoubleEquals,
    /// `k!=v` (also true when the label is absent)
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)` (also true when the label is absent)
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>5` (integers only)
    GreaterThan,
    /// `k<5` (integers only)
    LessThan,
}

/// One term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating it like apimachinery's `NewRequirement`.
    ///
    /// # Errors
    /// An invalid key or value, or a value count the operator does not allow.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errs: Vec<String> = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {}: {}",
                go_quote(key),
                key_errs.join("; ")
            ));
        }
        let bad_values = |detail: &str| {
            format!(
                "values: Invalid value: {}: {detail}",
                go_string_slice(&values)
            )
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(bad_values(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(bad_values(
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(bad_values(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(bad_values(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                            go_quote(v)
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = is_valid_label_value(v);
            if !value_errs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {}: {}",
                    go_quote(v),
                    value_errs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            return Err(SelectorError(aggregate(errs)));
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let present = labels.is_some_and(|m| m.contains_key(&self.key));
        let value = labels
            .and_then(|m| m.get(&self.key))
            .and_then(Value::as_str);
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !present || !value.is_some_and(listed),
            Operator::Exists => present,
            Operator::DoesNotExist => !present,
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// apimachinery's `Requirement.String()`: `!k`, `k`, `k=v`, `k in (a,b)` (values sorted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let joined = values.join(",");
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            write!(f, "({joined})")
        } else {
            f.write_str(&joined)
        }
    }
}

/// A label selector: requirements that must all hold. The empty selector matches
/// everything; the "nothing" selector (from a null `metav1.LabelSelector`) matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stable), as apimachinery keeps them.
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object.
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the string form (`?labelSelector=`): `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k`, `!k`, `k>5`, `k<5`, joined by commas; blanks between tokens
    /// are ignored; the empty string selects everything.
    ///
    /// # Errors
    /// Bad syntax, keys or values, worded like apimachinery's parser.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse().map_err(SelectorError)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels`, `matchExpressions`) like
    /// apimachinery's `LabelSelectorAsSelector`: null selects nothing, `{}` everything.
    ///
    /// # Errors
    /// A malformed selector, an unknown operator, or an invalid key or value.
    pub fn from_label_selector_json(v: &Value) -> Result<Self, SelectorError> {
        let map = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(map) => map,
            other => {
                return Err(SelectorError(format!(
                    "a label selector must be an object, not {other}"
                )));
            }
        };
        let mut requirements = Vec::new();
        match map.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        return Err(SelectorError(format!(
                            "matchLabels[{k}] must be a string, not {v}"
                        )));
                    };
                    requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
                }
            }
            Some(other) => {
                return Err(SelectorError(format!(
                    "matchLabels must be an object, not {other}"
                )));
            }
        }
        match map.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for expr in exprs {
                    requirements.push(expression_requirement(expr)?);
                }
            }
            Some(other) => {
                return Err(SelectorError(format!(
                    "matchExpressions must be a list, not {other}"
                )));
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The selector `k1=v1,k2=v2` for a plain label map (a replicationcontroller's or a
    /// service's `spec.selector`), like apimachinery's `SelectorFromSet`: not validated.
    ///
    /// # Errors
    /// A value that is not a string.
    pub fn from_set(set: &Map<String, Value>) -> Result<Self, SelectorError> {
        let mut requirements = Vec::with_capacity(set.len());
        for (k, v) in set {
            let Some(v) = v.as_str() else {
                return Err(SelectorError(format!(
                    "selector value for {k} must be a string, not {v}"
                )));
            };
            requirements.push(Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.to_string()],
            });
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The selector found at a [`ScaleInfo::label_selector`](crate::registry::ScaleInfo)
    /// pointer, whatever its shape: a `metav1.LabelSelector` (apps), a plain label map
    /// (replicationcontrollers) or an already serialized string (custom resources). A map
    /// whose values are all strings is taken as a label map: `matchLabels` holds an object
    /// and `matchExpressions` a list, so the two shapes cannot be confused.
    ///
    /// # Errors
    /// As [`LabelSelector::parse`] or [`LabelSelector::from_label_selector_json`].
    pub fn from_scale_selector(v: &Value) -> Result<Self, SelectorError> {
        match v {
            Value::String(s) => Self::parse(s),
            Value::Object(map) if map.values().all(Value::is_string) => Self::from_set(map),
            other => Self::from_label_selector_json(other),
        }
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector selects everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether the selector selects nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    /// apimachinery's `Selector.String()`: requirements joined by `,`, sorted by key; the
    /// empty and the "nothing" selectors both print as "".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions` entry.
fn expression_requirement(expr: &Value) -> Result<Requirement, SelectorError> {
    let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
    let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
    let operator = match operator {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(SelectorError(format!(
                "{} is not a valid label selector operator",
                go_quote(other)
            )));
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                let Some(v) = v.as_str() else {
                    return Err(SelectorError(format!(
                        "matchExpressions values must be strings, not {v}"
                    )));
                };
                out.push(v.to_string());
            }
            out
        }
        Some(other) => {
            return Err(SelectorError(format!(
                "matchExpressions values must be a list, not {other}"
            )));
        }
    };
    Requirement::new(key, operator, values)
}

/// apimachinery's `utilerrors.NewAggregate(...).Error()`: one message alone, several in
/// brackets; duplicates dropped.
fn aggregate(mut errs: Vec<String>) -> String {
    let mut seen = BTreeSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    match errs.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", errs.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------
// Label selector lexer and parser (apimachinery `labels/selector.go`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens; always ends with `EndOfString`.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        // Like apimachinery's lexer, a NUL byte reads as the end of the input.
        if pos >= b.len() || b[pos] == 0 {
            out.push((Token::EndOfString, String::new()));
            return out;
        }
        let start = pos;
        if is_special_symbol(b[pos]) {
            // Longest run of symbols that is still a token: "!=" but "=(" is "=" then "(".
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special_symbol(b[pos]) {
                match keyword(&b[start..=pos]) {
                    Some(tok) => last = Some((tok, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            // Every single symbol is a token, so `last` is set after the first byte.
            let (tok, end) = last.unwrap_or((Token::Identifier, pos));
            pos = end;
            out.push((tok, s[start..end].to_string()));
        } else {
            while pos < b.len()
                && b[pos] != 0
                && !is_whitespace(b[pos])
                && !is_special_symbol(b[pos])
            {
                pos += 1;
            }
            let word = &s[start..pos];
            let tok = keyword(word.as_bytes()).unwrap_or(Token::Identifier);
            out.push((tok, word.to_string()));
        }
    }
}

/// Whether `in`/`notin` are read as keywords (after a key) or as plain identifiers
/// (everywhere a key or value may stand).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        Parser {
            items: lex(s),
            position: 0,
        }
    }

    fn item(&self, context: Context) -> (Token, &str) {
        let last = self.items.len().saturating_sub(1);
        let (tok, lit) = match self.items.get(self.position.min(last)) {
            Some((tok, lit)) => (*tok, lit.as_str()),
            None => (Token::EndOfString, ""),
        };
        let tok = match tok {
            Token::In | Token::NotIn if context == Context::Values => Token::Identifier,
            other => other,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        let (tok, lit) = self.item(context);
        (tok, lit.to_string())
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let out = self.lookahead(context);
        if self.position + 1 < self.items.len() {
            self.position += 1;
        }
        out
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, lit) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{lit}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        if let Some(op) = unary {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.0);
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values).map_err(|e| e.0)
    }

    /// The key, and `Exists`/`DoesNotExist` when the requirement ends after it.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = is_qualified_name(&lit);
        if !errs.is_empty() {
            // apimachinery validates the key against a nil field path, which prints "<nil>".
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(&lit),
                errs.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// `( v1, v2 )`: a set, so sorted and without duplicates; `()` is the set `{""}`.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values.into_iter().collect())
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.insert(lit);
                    let (next, lit) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{lit}', expected: ',' or ')'")),
                    }
                }
                // A comma with nothing before it, or before ')' or another comma, stands
                // for the empty value: "(,a)", "(a,)", "(a,,b)".
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; nothing means "".
    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Field selectors (apimachinery `fields/selector.go`).

/// How a field requirement compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOperator {
    /// `f=v` or `f==v`
    Equals,
    /// `f!=v`
    NotEquals,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    /// Unescaped.
    pub value: String,
}

/// A field selector: terms that must all hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `?fieldSelector=`: `f=v`, `f==v`, `f!=v` joined by commas. In values, `\,`,
    /// `\=` and `\\` stand for `,`, `=` and `\`; an unescaped `=` or a lone `\` is an
    /// error. Field names are taken verbatim; check them with
    /// [`FieldSelector::check_fields`].
    ///
    /// # Errors
    /// A term without an operator or a badly escaped value.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut requirements = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Refuses fields `info` cannot be selected on; `metadata.name` and
    /// `metadata.namespace` always can.
    ///
    /// # Errors
    /// `field label not supported: <field>` for the first unknown field.
    pub fn check_fields(&self, info: &ResourceInfo) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !info.supports_field(&r.field))
        {
            Some(r) => Err(SelectorError(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Whether the object (as JSON) satisfies every term. See [`field_value`] for how a
    /// field is read.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let have = field_value(obj, &r.field);
            match r.operator {
                FieldOperator::Equals => have == r.value,
                FieldOperator::NotEquals => have != r.value,
            }
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value of the first `=`/`==` term on `field`, if any: lets a caller read one
    /// object (`metadata.name=x`) or one namespace instead of scanning.
    pub fn requirement_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }
}

impl fmt::Display for FieldSelector {
    /// apimachinery's `Selector.String()`: `f=v,g!=w` with values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

/// The string value of a selectable field in an object, as kube-apiserver's per-kind field
/// sets compute it: the dotted path read from the JSON, strings as they are, booleans as
/// `true`/`false`, numbers in decimal, anything missing or not a scalar as "".
///
/// Where kube reads a Go field that JSON omits when zero or names differently, the same
/// answer is given here: `source` is `source.component` (events), `status.successful` is
/// `status.succeeded` (jobs), and `spec.hostNetwork`, `spec.unschedulable` default to
/// `false`, `status.replicas` and `status.successful` to `0`.
pub fn field_value(obj: &Value, field: &str) -> String {
    let (path, default) = match field {
        "source" => ("source.component", ""),
        "status.successful" => ("status.succeeded", "0"),
        "spec.hostNetwork" | "spec.unschedulable" => (field, "false"),
        "status.replicas" => (field, "0"),
        _ => (field, ""),
    };
    let mut at = obj;
    for step in path.split('.') {
        match at.get(step) {
            Some(next) => at = next,
            None => return default.to_string(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => default.to_string(),
    }
}

/// Splits on commas not preceded by a backslash escape.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; the field name has no escapes.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::Equals),
        ("=", FieldOperator::Equals),
    ];
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in OPERATORS {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            other => panic!("test labels must be an object, got {other}"),
        }
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parse_error(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} should be refused, parsed as {sel}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn label_selector_grammar_accepts_every_operator_and_prints_canonically() {
        // (input, canonical form)
        let cases = [
            ("", ""),
            ("   ", ""),
            ("x=a", "x=a"),
            ("x==a", "x==a"),
            ("x!=a", "x!=a"),
            ("x in (b,a)", "x in (a,b)"),
            ("x notin (a)", "x notin (a)"),
            ("x", "x"),
            ("!x", "!x"),
            ("x>5", "x>5"),
            ("x<5", "x<5"),
            ("x=", "x="),
            ("x in ()", "x in ()"),
            ("x in (a,,b)", "x in (,a,b)"),
            ("x in (a,a)", "x in (a)"),
            (" x = a , y in ( b , c ) ", "x=a,y in (b,c)"),
            ("\tx=a,\ty\t,\n!z", "x=a,y,!z"),
            ("z=1,a=2", "a=2,z=1"),
            ("example.com/app=web", "example.com/app=web"),
            (
                "app.kubernetes.io/name in (nginx)",
                "app.kubernetes.io/name in (nginx)",
            ),
            // "in" and "notin" are keys and values where a key or value may stand.
            ("in=notin", "in=notin"),
            ("x in (in,notin)", "x in (in,notin)"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parse(input).to_string(), canonical, "input {input:?}");
        }
    }

    #[test]
    fn label_selector_grammar_refuses_bad_syntax_like_apimachinery() {
        let cases = [
            (
                ",",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            ("x=a,", "found '', expected: identifier after ','"),
            ("x=a b", "found 'b', expected: ',' or 'end of string'"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            (
                "x y",
                "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "x in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "x in a",
                "unable to parse requirement: found 'a' expected: '('",
            ),
            (
                "x in (a",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "x in",
                "unable to parse requirement: found '' expected: '('",
            ),
            (
                "x=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "x>a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(parse_error(input), message, "input {input:?}");
        }
    }

    #[test]
    fn label_selector_operator_before_comma_means_empty_value() {
        // apimachinery reads "x=,y" as x="" and y exists.
        assert_eq!(parse("x=,y").to_string(), "x=,y");
        assert_eq!(parse("x==,y").to_string(), "x==,y");
    }

    #[test]
    fn label_selector_refuses_invalid_keys_and_values() {
        assert_eq!(
            parse_error("-x=a"),
            "unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            parse_error("x=-a"),
            "unable to parse requirement: values[0][x]: Invalid value: \"-a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = "a".repeat(64);
        assert!(parse_error(&format!("x={long}")).contains("must be no more than 63 characters"));
        assert!(parse_error("a/b/c=d").contains("a qualified name must consist of"));
        // Label values start with an alphanumeric, so a negative bound cannot be written.
        assert!(parse_error("x<-5").contains("a valid label must be"));
    }

    #[test]
    fn label_selector_with_notin_excludes_listed_values() {
        let sel = parse("tier notin (cache,db)");
        assert!(!sel.matches(Some(&labels(json!({"tier": "db"})))));
        assert!(!sel.matches(Some(&labels(json!({"tier": "cache"})))));
        assert!(sel.matches(Some(&labels(json!({"tier": "web"})))));
        assert!(
            sel.matches(Some(&labels(json!({})))),
            "absent label is not listed"
        );
        assert!(sel.matches(None));
    }

    #[test]
    fn label_selector_operators_match_like_kubernetes() {
        let web = labels(json!({"app": "web", "replicas": "7", "flag": ""}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (db)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("flag=", true),
            ("replicas>5", true),
            ("replicas>7", false),
            ("replicas<10", true),
            ("replicas<7", false),
            ("app>1", false),
            ("missing<1", false),
            ("app=web,replicas>5", true),
            ("app=web,replicas>8", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            assert_eq!(
                parse(selector).matches(Some(&web)),
                expected,
                "selector {selector:?}"
            );
        }
    }

    #[test]
    fn empty_label_selector_matches_everything_and_nothing_matches_nothing() {
        assert!(LabelSelector::everything().is_empty());
        assert!(LabelSelector::everything().matches(None));
        assert!(!LabelSelector::nothing().is_empty());
        assert!(!LabelSelector::nothing().matches(Some(&labels(json!({"a": "b"})))));
        assert!(!parse("a").is_empty());
    }

    #[test]
    fn metav1_label_selector_converts_and_prints_like_apimachinery() {
        let sel = LabelSelector::from_label_selector_json(&json!({
            "matchLabels": {"app": "nginx"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]}
            ]
        }))
        .expect("valid selector");
        assert_eq!(
            sel.to_string(),
            "app=nginx,env,!legacy,tier in (a,b),zone notin (x)"
        );
        assert!(sel.matches(Some(&labels(
            json!({"app": "nginx", "tier": "a", "env": "prod"})
        ))));
        assert!(!sel.matches(Some(&labels(json!({"app": "nginx", "tier": "a"})))));
    }

    #[test]
    fn metav1_label_selector_null_selects_nothing_and_empty_selects_everything() {
        let null = LabelSelector::from_label_selector_json(&Value::Null).expect("null is valid");
        assert!(null.is_nothing());
        assert!(!null.matches(None));
        let empty = LabelSelector::from_label_selector_json(&json!({})).expect("{} is valid");
        assert!(empty.is_empty());
        assert!(empty.matches(None));
        let empty_lists = LabelSelector::from_label_selector_json(
            &json!({"matchLabels": {}, "matchExpressions": []}),
        )
        .expect("empty lists are valid");
        assert!(empty_lists.is_empty());
    }

    #[test]
    fn metav1_label_selector_refuses_bad_operators_and_value_counts() {
        let err = |v: Value| {
            LabelSelector::from_label_selector_json(&v)
                .expect_err("should be refused")
                .0
        };
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Equals"}]})),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
        assert!(
            err(json!({"matchLabels": {"bad key": "x"}}))
                .starts_with("key: Invalid value: \"bad key\"")
        );
        assert!(err(json!({"matchLabels": {"a": 1}})).contains("must be a string"));
    }

    #[test]
    fn scale_selector_reads_label_maps_selectors_and_strings() {
        let rc = LabelSelector::from_scale_selector(&json!({"b": "2", "a": "1"})).expect("map");
        assert_eq!(rc.to_string(), "a=1,b=2");
        let apps = LabelSelector::from_scale_selector(&json!({"matchLabels": {"app": "web"}}))
            .expect("metav1 selector");
        assert_eq!(apps.to_string(), "app=web");
        let crd = LabelSelector::from_scale_selector(&json!("app in (x,y)")).expect("string");
        assert_eq!(crd.to_string(), "app in (x,y)");
    }

    #[test]
    fn field_selector_parses_operators_and_exposes_equality_values() {
        let sel = FieldSelector::parse("metadata.name=web,spec.nodeName==n1,status.phase!=Failed")
            .expect("valid");
        assert_eq!(sel.requirement_value("metadata.name"), Some("web"));
        assert_eq!(sel.requirement_value("spec.nodeName"), Some("n1"));
        assert_eq!(
            sel.requirement_value("status.phase"),
            None,
            "!= is not a narrowing"
        );
        assert_eq!(sel.requirement_value("metadata.namespace"), None);
        assert_eq!(
            sel.to_string(),
            "metadata.name=web,spec.nodeName=n1,status.phase!=Failed"
        );
        assert!(FieldSelector::parse("").expect("empty").is_empty());
        assert_eq!(
            FieldSelector::parse("a=b,,c=d")
                .expect("empty terms skipped")
                .requirements()
                .len(),
            2
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=")
                .expect("empty value")
                .requirement_value("spec.nodeName"),
            Some("")
        );
    }

    #[test]
    fn field_selector_unescapes_commas_equals_and_backslashes() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,metadata.namespace=ns")
            .expect("valid escapes");
        assert_eq!(sel.requirement_value("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(sel.requirement_value("metadata.namespace"), Some("ns"));
        assert_eq!(
            sel.to_string(),
            r"metadata.name=a\,b\=c\\d,metadata.namespace=ns"
        );
    }

    #[test]
    fn field_selector_refuses_bad_terms_and_escapes() {
        let err = |s: &str| FieldSelector::parse(s).expect_err("should be refused").0;
        assert_eq!(
            err("foo"),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        assert_eq!(
            err("a=b,foo"),
            "invalid selector: 'a=b,foo'; can't understand 'foo'"
        );
        assert_eq!(
            err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err("a=b\\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: ="
        );
    }

    #[test]
    fn field_selector_rejects_fields_the_resource_cannot_select_on() {
        let registry = Registry::builtin();
        let pods = registry.get("", "v1", "pods").expect("pods");
        let configmaps = registry.get("", "v1", "configmaps").expect("configmaps");
        let ok = FieldSelector::parse("spec.nodeName=n1,metadata.name=a,metadata.namespace=b")
            .expect("valid");
        assert!(ok.check_fields(pods).is_ok());
        let err = ok
            .check_fields(configmaps)
            .expect_err("configmaps have no spec.nodeName");
        assert_eq!(err.0, "field label not supported: spec.nodeName");
        let unknown = FieldSelector::parse("spec.foo=x").expect("valid syntax");
        assert_eq!(
            unknown.check_fields(pods).expect_err("unknown field").0,
            "field label not supported: spec.foo"
        );
    }

    #[test]
    fn field_selector_reads_values_from_object_json() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "prod"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running"}
        });
        let cases = [
            ("metadata.name=web-1", true),
            ("metadata.namespace=prod", true),
            ("metadata.namespace!=prod", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=n2", false),
            ("spec.nodeName!=", true),
            ("spec.hostNetwork=false", true),
            ("spec.hostNetwork!=true", true),
            ("status.podIP=", true),
            ("", true),
        ];
        for (selector, expected) in cases {
            let sel = FieldSelector::parse(selector).expect("valid selector");
            assert_eq!(sel.matches(&pod), expected, "selector {selector:?}");
        }
        let unscheduled = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .expect("valid")
                .matches(&unscheduled)
        );
    }

    #[test]
    fn field_values_follow_kubernetes_field_sets() {
        let event = json!({"source": {"component": "kubelet", "host": "n1"}, "type": "Normal"});
        assert_eq!(field_value(&event, "source"), "kubelet");
        assert_eq!(field_value(&event, "type"), "Normal");
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert_eq!(field_value(&node, "spec.unschedulable"), "true");
        assert_eq!(
            field_value(&node, "metadata.namespace"),
            "",
            "cluster-scoped"
        );
        assert_eq!(
            field_value(&json!({"spec": {}}), "spec.unschedulable"),
            "false"
        );
        assert_eq!(
            field_value(&json!({"status": {"succeeded": 3}}), "status.successful"),
            "3"
        );
        assert_eq!(
            field_value(&json!({"status": {}}), "status.successful"),
            "0"
        );
        assert_eq!(
            field_value(&json!({"status": {"replicas": 2}}), "status.replicas"),
            "2"
        );
        assert_eq!(field_value(&json!({}), "status.replicas"), "0");
        assert_eq!(field_value(&json!({"spec": {"x": {"y": 1}}}), "spec.x"), "");
    }
}
