//! The return-path (`rd`) validator: any input either is refused or becomes a same-origin
//! path or an absolute URL on an allowed host. A value that validates must never leave
//! the allowed hosts, whatever a browser makes of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy::return_to::{ReturnRules, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let rules = ReturnRules {
        allowed_hosts: vec!["app.example.com".into(), ".example.org".into()],
    };
    let Some(valid) = validate(raw, &rules) else {
        return;
    };
    if valid.starts_with('/') {
        // A path: never protocol-relative, also not in the spelling a browser reads as
        // `//` (a backslash is a slash to it); a backslash further on stays in the path.
        assert!(!valid.starts_with("//") && !valid.starts_with("/\\"), "{valid:?}");
        // No control character (browsers drop tabs and newlines, which could hide a `//`).
        assert!(!valid.chars().any(char::is_control), "{valid:?}");
        let joined = url::Url::parse("https://portcullis.test/")
            .unwrap()
            .join(&valid)
            .unwrap();
        assert_eq!(joined.host_str(), Some("portcullis.test"), "{valid:?} leaves the origin");
    } else {
        let url = url::Url::parse(&valid).unwrap_or_else(|e| panic!("{valid:?}: {e}"));
        assert!(matches!(url.scheme(), "http" | "https"), "{valid:?}");
        let host = url.host_str().unwrap_or("");
        assert!(
            host == "app.example.com" || host == "example.org" || host.ends_with(".example.org"),
            "{valid:?} goes to {host}"
        );
    }
});
