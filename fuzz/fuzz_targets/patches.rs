//! Patches as a PATCH request brings them: the input is split into an original object and a
//! patch (both JSON), then applied as a JSON patch, a merge patch and a strategic merge
//! patch. Errors are fine; panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(cut) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (Ok(original), Ok(patch)) = (
        serde_json::from_slice::<Value>(&data[..cut]),
        serde_json::from_slice::<Value>(&data[cut + 1..]),
    ) else {
        return;
    };
    if let Ok(p) = serde_json::from_value::<json_patch::Patch>(patch.clone()) {
        // The server's own apply (one operation at a time; see its doc comment).
        let mut doc = original.clone();
        let _ = logbook_api::handlers::apply_json_patch(&mut doc, &p);
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    let _ = logbook_schema::patch::strategic_merge(&original, &patch);
});
