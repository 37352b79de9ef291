//! The configuration reader fed a YAML file: a configuration or errors, never a panic
//! (anchors, aliases and deep nesting included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::{Sources, load};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("portcullis-fuzz-{}.yaml", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = load(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    });
});
