//! `?labelSelector=` and `?fieldSelector=` strings: parsed, printed back and parsed again
//! (the printed form must parse to the same selector), and matched against labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_schema::selector::{FieldSelector, LabelSelector};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = LabelSelector::parse(s) {
        let printed = sel.to_string();
        let again = LabelSelector::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which does not parse: {e}"));
        assert_eq!(again.to_string(), printed, "{s:?}");
        let labels = serde_json::json!({"app": "web", "tier": "5"});
        let _ = sel.matches(labels.as_object());
    }
    if let Ok(f) = FieldSelector::parse(s) {
        let _ = f.matches(&serde_json::json!({"metadata": {"name": "a", "namespace": "b"}}));
    }
});
