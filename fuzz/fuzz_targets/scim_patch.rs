//! SCIM PATCH request bodies as the provider sends them (JSON): parsed or refused, and
//! what parses is applied to a provisioned user and to a group (the PATCH engine: paths
//! with filters, extension objects, path-less values), then read back as a resource
//! would be. Refused or applied, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_scim::patch::PatchRequest;
use portcullis_scim::resource::normalize;
use portcullis_scim::schema::{GROUP, USER};
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(patch) = PatchRequest::parse(&body) else {
        return;
    };
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": "ada@example.com", "active": true, "displayName": "Ada",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": "ada@example.com", "type": "work", "primary": true},
                   {"value": "ada@home.example", "type": "home"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"},
    });
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "admins", "members": [{"value": "u1"}, {"value": "u2"}],
    });
    for (kind, doc) in [(&USER, user), (&GROUP, group)] {
        let Value::Object(mut doc) = doc else {
            unreachable!("a literal object")
        };
        if patch.apply(kind, &mut doc).is_ok() {
            let _ = normalize(kind, &doc);
        }
    }
});
