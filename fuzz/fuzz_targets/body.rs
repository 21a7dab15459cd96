//! A request body in every format the API decodes (the first byte picks the content type:
//! JSON, YAML or Kubernetes protobuf), then the typed check of the kind it claims. Any
//! input must end in an object or a `Status` error: never a panic, never a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = match pick % 3 {
        0 => "application/json",
        1 => "application/yaml",
        _ => "application/vnd.kubernetes.protobuf",
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    let body = bytes::Bytes::copy_from_slice(body);
    if let Ok(obj) = logbook_api::handlers::parse_body(&headers, &body, "fuzz") {
        let reg = logbook_schema::registry::Registry::builtin();
        let v = serde_json::Value::Object(obj);
        let api_version = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("v1");
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("Pod");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if let Some(info) = reg.by_kind(group, version, kind)
            && let Some(check) = info.check
        {
            let _ = check(&v);
        }
    }
});
