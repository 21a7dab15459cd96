//! Walks the schema table over a message's bytes and builds the JSON kube-apiserver would
//! have produced from the same bytes: the generic walk, then the handful of apimachinery
//! messages whose JSON is not an object of their fields.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::table::{self, Field, Kind, Message, Scalar};
use super::wire::{Raw, Reader, WireType, flat_fields};
use super::{NESTING_DEPTH_MAX, ProtoError};

type Object = Map<String, Value>;

const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: `metav1.Time` renders it
/// as `null`, so the field is left out.
const GO_ZERO_TIME_UNIX_SECONDS: i64 = -62_135_596_800;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Decodes `buf`, a `msg`, into `out`. Decoding into an existing object merges, as proto2
/// merges a singular message field that appears twice.
pub(super) fn decode_into(
    msg: &'static Message,
    buf: &[u8],
    base: usize,
    depth: usize,
    out: &mut Object,
) -> Result<(), ProtoError> {
    check_depth(depth)?;
    let mut r = Reader::new(buf, base);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match msg.field(tag) {
            Some(field) => decode_field(msg, field, wire, &mut r, depth, out)?,
            // A field this version does not know: kube-apiserver skips it too.
            None => r.skip(wire)?,
        }
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<(), ProtoError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(ProtoError(format!(
            "protobuf: messages nested deeper than {NESTING_DEPTH_MAX}"
        )));
    }
    Ok(())
}

fn decode_field(
    msg: &'static Message,
    field: &'static Field,
    wire: WireType,
    r: &mut Reader<'_>,
    depth: usize,
    out: &mut Object,
) -> Result<(), ProtoError> {
    let ctx = Ctx { msg, field };
    match field.kind {
        Kind::Scalar(s) => {
            let value = scalar(s, wire, r, ctx)?;
            // Go writes every non-pointer string, "" included, and kube's JSON leaves the
            // empty ones out (omitempty); numbers and booleans are kept as written.
            if value.as_str() == Some("") {
                out.remove(field.json);
            } else {
                out.insert(field.json.to_owned(), value);
            }
        }
        Kind::Repeated(s) => {
            let items = array_at(out, field.json, ctx)?;
            let packable = !matches!(s, Scalar::String | Scalar::Bytes);
            if packable && wire == WireType::Len {
                let (bytes, at) = r.len_delimited()?;
                let element_wire = if s == Scalar::Double {
                    WireType::Fixed64
                } else {
                    WireType::Varint
                };
                let mut packed = Reader::new(bytes, at);
                while !packed.is_empty() {
                    items.push(scalar(s, element_wire, &mut packed, ctx)?);
                }
            } else {
                items.push(scalar(s, wire, r, ctx)?);
            }
        }
        Kind::Message(name) => {
            let (bytes, at) = len_delimited(wire, r, ctx)?;
            let m = lookup(name)?;
            if is_plain_object(m) {
                let obj = object_at(out, field.json, ctx)?;
                decode_into(m, bytes, at, depth + 1, obj)?;
            } else {
                match render(m, bytes, at, depth + 1)? {
                    Some(v) => out.insert(field.json.to_owned(), v),
                    None => out.remove(field.json),
                };
            }
        }
        Kind::RepeatedMessage(name) => {
            let (bytes, at) = len_delimited(wire, r, ctx)?;
            let value = render(lookup(name)?, bytes, at, depth + 1)?;
            let items = array_at(out, field.json, ctx)?;
            items.extend(value);
        }
        Kind::Inline(name) => {
            let (bytes, at) = len_delimited(wire, r, ctx)?;
            decode_into(lookup(name)?, bytes, at, depth + 1, out)?;
        }
        Kind::StringMap | Kind::BytesMap | Kind::MessageMap(_) => {
            let (bytes, at) = len_delimited(wire, r, ctx)?;
            if let Some((key, value)) = map_entry(field.kind, bytes, at, depth + 1, ctx)? {
                object_at(out, field.json, ctx)?.insert(key, value);
            }
        }
    }
    Ok(())
}

/// Where a field is, for error messages.
#[derive(Clone, Copy)]
struct Ctx {
    msg: &'static Message,
    field: &'static Field,
}

impl Ctx {
    fn err(self, what: &str) -> ProtoError {
        let name = self.msg.name.rsplit('.').next().unwrap_or(self.msg.name);
        ProtoError(format!(
            "protobuf: {name}.{} (field {}): {what}",
            self.field.json, self.field.tag
        ))
    }
}

fn lookup(name: &str) -> Result<&'static Message, ProtoError> {
    table::message(name).ok_or_else(|| ProtoError(format!("protobuf schema has no message {name}")))
}

fn is_plain_object(m: &Message) -> bool {
    !m.items_only
        && !matches!(
            m.name,
            TIME | MICRO_TIME | DURATION | FIELDS_V1 | QUANTITY | INT_OR_STRING | RAW_EXTENSION
        )
}

fn object_at<'m>(out: &'m mut Object, key: &str, ctx: Ctx) -> Result<&'m mut Object, ProtoError> {
    let slot = out.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().ok_or_else(|| ctx.err("not an object"))
}

fn array_at<'m>(
    out: &'m mut Object,
    key: &str,
    ctx: Ctx,
) -> Result<&'m mut Vec<Value>, ProtoError> {
    let slot = out.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().ok_or_else(|| ctx.err("not an array"))
}

fn len_delimited<'a>(
    wire: WireType,
    r: &mut Reader<'a>,
    ctx: Ctx,
) -> Result<(&'a [u8], usize), ProtoError> {
    if wire != WireType::Len {
        return Err(ctx.err(&format!("wire type {wire:?}, expected length-delimited")));
    }
    r.len_delimited()
}

fn scalar(s: Scalar, wire: WireType, r: &mut Reader<'_>, ctx: Ctx) -> Result<Value, ProtoError> {
    let want = match s {
        Scalar::String | Scalar::Bytes => WireType::Len,
        Scalar::Int32 | Scalar::Int64 | Scalar::Bool => WireType::Varint,
        Scalar::Double => WireType::Fixed64,
    };
    if wire != want {
        return Err(ctx.err(&format!("wire type {wire:?}, expected {want:?}")));
    }
    Ok(match s {
        // Go does not validate UTF-8 here; its JSON encoder replaces bad bytes with U+FFFD.
        Scalar::String => Value::String(String::from_utf8_lossy(r.len_delimited()?.0).into_owned()),
        Scalar::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited()?.0))
        }
        // int32 is sign-extended to 64 bits on the wire; Go keeps the low 32.
        Scalar::Int32 => Value::from(r.varint()? as i32),
        Scalar::Int64 => Value::from(r.varint()? as i64),
        Scalar::Bool => Value::Bool(r.varint()? != 0),
        Scalar::Double => {
            let f = f64::from_bits(r.fixed64()?);
            Value::Number(Number::from_f64(f).ok_or_else(|| ctx.err("double is not finite"))?)
        }
    })
}

/// One `map<string, V>` entry (key = 1, value = 2; either may be absent and then has its
/// zero value).
fn map_entry(
    kind: Kind,
    bytes: &[u8],
    at: usize,
    depth: usize,
    ctx: Ctx,
) -> Result<Option<(String, Value)>, ProtoError> {
    check_depth(depth)?;
    let mut key = String::new();
    let mut value: Option<(&[u8], usize)> = None;
    let mut r = Reader::new(bytes, at);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => key = String::from_utf8_lossy(len_delimited(wire, &mut r, ctx)?.0).into_owned(),
            2 => value = Some(len_delimited(wire, &mut r, ctx)?),
            _ => r.skip(wire)?,
        }
    }
    let (value_bytes, value_at) = value.unwrap_or((&[], at));
    let value = match kind {
        Kind::BytesMap => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(value_bytes))
        }
        Kind::MessageMap(name) => match render(lookup(name)?, value_bytes, value_at, depth + 1)? {
            Some(v) => v,
            None => return Ok(None),
        },
        _ => Value::String(String::from_utf8_lossy(value_bytes).into_owned()),
    };
    Ok(Some((key, value)))
}

/// A message's JSON value; `None` when kube would render nothing (a zero Time, an empty
/// RawExtension).
fn render(
    m: &'static Message,
    bytes: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<Value>, ProtoError> {
    check_depth(depth)?;
    match m.name {
        TIME => time(bytes, at, false),
        MICRO_TIME => time(bytes, at, true),
        DURATION => {
            let [ns] = flat_fields::<1>(bytes, at)?;
            Ok(Some(Value::String(go_duration(varint_of(ns, m)? as i64))))
        }
        QUANTITY => {
            // A Quantity message without its string is Go's zero Quantity, "0".
            let [s] = flat_fields::<1>(bytes, at)?;
            Ok(Some(Value::String(
                string_of(s, m)?.unwrap_or_else(|| "0".to_owned()),
            )))
        }
        INT_OR_STRING => int_or_string(bytes, at).map(Some),
        RAW_EXTENSION | FIELDS_V1 => {
            let [raw] = flat_fields::<1>(bytes, at)?;
            match raw {
                Some(Raw::Bytes(json, _)) if !json.is_empty() => serde_json::from_slice(json)
                    .map(Some)
                    .map_err(|e| ProtoError(format!("protobuf: {} is not JSON: {e}", short(m)))),
                None | Some(Raw::Bytes(..)) => Ok(None),
                Some(_) => Err(ProtoError(format!(
                    "protobuf: {} raw has the wrong wire type",
                    short(m)
                ))),
            }
        }
        _ if m.items_only => {
            let mut tmp = Map::new();
            decode_into(m, bytes, at, depth, &mut tmp)?;
            let items = m.fields.first().and_then(|f| tmp.remove(f.json));
            Ok(Some(items.unwrap_or_else(|| Value::Array(Vec::new()))))
        }
        _ => {
            let mut obj = Map::new();
            decode_into(m, bytes, at, depth, &mut obj)?;
            Ok(Some(Value::Object(obj)))
        }
    }
}

fn short(m: &Message) -> &str {
    m.name.rsplit('.').next().unwrap_or(m.name)
}

fn varint_of(raw: Option<Raw<'_>>, m: &Message) -> Result<u64, ProtoError> {
    match raw {
        None => Ok(0),
        Some(Raw::Varint(v)) => Ok(v),
        Some(_) => Err(ProtoError(format!(
            "protobuf: {} has a field of the wrong wire type",
            short(m)
        ))),
    }
}

fn string_of(raw: Option<Raw<'_>>, m: &Message) -> Result<Option<String>, ProtoError> {
    match raw {
        None => Ok(None),
        Some(Raw::Bytes(b, _)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        Some(_) => Err(ProtoError(format!(
            "protobuf: {} has a field of the wrong wire type",
            short(m)
        ))),
    }
}

/// `{1 type int64 (0 = int, 1 = string), 2 intVal int32, 3 strVal string}` → number or string.
fn int_or_string(bytes: &[u8], at: usize) -> Result<Value, ProtoError> {
    let m = lookup(INT_OR_STRING)?;
    let [ty, int_val, str_val] = flat_fields::<3>(bytes, at)?;
    match varint_of(ty, m)? as i64 {
        0 => Ok(Value::from(varint_of(int_val, m)? as i32)),
        1 => Ok(Value::String(string_of(str_val, m)?.unwrap_or_default())),
        other => Err(ProtoError(format!(
            "protobuf: IntOrString has impossible type {other}"
        ))),
    }
}

/// `{1 seconds int64, 2 nanos int32}` → RFC 3339 in UTC: whole seconds for `Time`,
/// microseconds for `MicroTime`. An empty message, or Go's zero time, is no value.
fn time(bytes: &[u8], at: usize, micro: bool) -> Result<Option<Value>, ProtoError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let m = lookup(if micro { MICRO_TIME } else { TIME })?;
    let [seconds, nanos] = flat_fields::<2>(bytes, at)?;
    let seconds = varint_of(seconds, m)? as i64;
    let nanos = i64::from(varint_of(nanos, m)? as i32);
    // time.Unix normalizes nanoseconds outside [0, 1e9) into the seconds.
    let seconds = seconds
        .checked_add(nanos.div_euclid(NANOS_PER_SECOND))
        .ok_or_else(|| ProtoError("protobuf: time out of range".to_owned()))?;
    let nanos = nanos.rem_euclid(NANOS_PER_SECOND);
    if seconds == GO_ZERO_TIME_UNIX_SECONDS && nanos == 0 {
        return Ok(None);
    }
    let micros = micro.then_some(nanos / 1_000);
    rfc3339_utc(seconds, micros).map(|s| Some(Value::String(s)))
}

/// `2024-01-02T03:04:05Z`, or `2024-01-02T03:04:05.123456Z` with microseconds.
pub(super) fn rfc3339_utc(unix_seconds: i64, micros: Option<i64>) -> Result<String, ProtoError> {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(ProtoError(format!(
            "protobuf: time in year {year} cannot be written as RFC 3339"
        )));
    }
    let (h, m, s) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    Ok(match micros {
        None => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        Some(us) => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{us:06}Z"),
    })
}

/// (year, month, day) of a day counted from 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`: "1h0m0s", "30s", "1.5s", "1.5ms", "0s".
pub(super) fn go_duration(nanos: i64) -> String {
    fn frac(v: u64, digits: usize) -> String {
        if v == 0 {
            return String::new();
        }
        let s = format!("{v:0digits$}");
        format!(".{}", s.trim_end_matches('0'))
    }
    let u = nanos.unsigned_abs();
    let sign = if nanos < 0 { "-" } else { "" };
    if u == 0 {
        return "0s".to_owned();
    }
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}{}µs", u / 1_000, frac(u % 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}{}ms", u / 1_000_000, frac(u % 1_000_000, 6));
    }
    let secs = u / 1_000_000_000;
    let mut out = sign.to_owned();
    if secs >= 3600 {
        out.push_str(&format!("{}h", secs / 3600));
    }
    if secs >= 60 {
        out.push_str(&format!("{}m", secs / 60 % 60));
    }
    out.push_str(&format!("{}{}s", secs % 60, frac(u % 1_000_000_000, 9)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (30_000_000_000, "30s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-3_600_000_000_000, "-1h0m0s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(*ns), *want, "{ns}ns");
        }
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        let cases: &[(i64, Option<i64>, &str)] = &[
            (0, None, "1970-01-01T00:00:00Z"),
            (1_704_164_645, None, "2024-01-02T03:04:05Z"),
            (1_704_164_645, Some(123_456), "2024-01-02T03:04:05.123456Z"),
            (951_782_400, None, "2000-02-29T00:00:00Z"),
            (-1, None, "1969-12-31T23:59:59Z"),
            (GO_ZERO_TIME_UNIX_SECONDS, None, "0001-01-01T00:00:00Z"),
            (253_402_300_799, None, "9999-12-31T23:59:59Z"),
        ];
        for (secs, micros, want) in cases {
            assert_eq!(
                rfc3339_utc(*secs, *micros).ok().as_deref(),
                Some(*want),
                "{secs}"
            );
        }
        assert!(rfc3339_utc(253_402_300_800, None).is_err());
        assert!(rfc3339_utc(i64::MIN, None).is_err());
        assert!(rfc3339_utc(i64::MAX, None).is_err());
    }
}
