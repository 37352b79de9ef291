//! PATCH (RFC 7644 §3.5.2), as Okta and Microsoft Entra send it.
//!
//! Operations are applied in order to a working copy of the resource in request-body
//! form; the result is then normalised and validated like a PUT body. Any failing
//! operation fails the whole request and nothing is stored: a PATCH is atomic.
//!
//! What the two clients rely on, beyond the RFC's examples: operation names in any case
//! (`Replace`); booleans as strings (`"False"`); a path-less `replace` whose value holds
//! dotted or URN-qualified keys (`{"name.givenName": "A"}`); `remove` of `members` with a
//! list of values, which removes only those members; `replace` or `add` on a value-filter
//! path that matches nothing, which adds a value built from the filter's equalities
//! (`emails[type eq "work"].value` creates a work email); and the enterprise `manager`
//! given as a bare id.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{AttrPath, CompareOp, Filter, PatchPath, parse_patch_path};
use crate::resource::attributes_for;
use crate::schema::{self, Attribute, Kind, Mutability, ResourceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// The operations of a PatchOp request body, parsed.
pub struct PatchRequest {
    ops: Vec<(Op, Option<String>, Option<Value>)>,
}

/// RFC 7643 §4.1 User attributes that Portcullis does not keep: a change to them is
/// accepted and has nothing to change.
const UNSTORED_STANDARD: &[&str] = &[
    "password",
    "ims",
    "photos",
    "entitlements",
    "x509Certificates",
];

/// The most operations one PATCH may carry.
const MAX_OPERATIONS: usize = 1000;

impl PatchRequest {
    pub fn parse(body: &Value) -> Result<PatchRequest, ScimError> {
        let Some(object) = body.as_object() else {
            return Err(ScimError::invalid_syntax(
                "a PATCH body is a PatchOp object",
            ));
        };
        let operations = object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
            .map(|(_, v)| v)
            .and_then(Value::as_array)
            .ok_or_else(|| ScimError::invalid_syntax("a PATCH body needs an Operations list"))?;
        if operations.len() > MAX_OPERATIONS {
            return Err(ScimError::too_many(format!(
                "at most {MAX_OPERATIONS} operations per PATCH"
            )));
        }
        let mut ops = Vec::with_capacity(operations.len());
        for op in operations {
            let Some(op) = op.as_object() else {
                return Err(ScimError::invalid_syntax("each operation is an object"));
            };
            let field = |name: &str| {
                op.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            let kind = match field("op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("add") => Op::Add,
                Some("replace") => Op::Replace,
                Some("remove") => Op::Remove,
                other => {
                    return Err(ScimError::invalid_syntax(format!(
                        "operation {:?} is not add, replace or remove",
                        other.unwrap_or("(missing)")
                    )));
                }
            };
            let path = match field("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.trim().to_string()),
                Some(_) => return Err(ScimError::invalid_path("path must be a string")),
            };
            let value = field("value").cloned();
            if kind == Op::Remove && path.is_none() {
                return Err(ScimError::no_target("remove needs a path"));
            }
            if kind != Op::Remove && value.is_none() {
                return Err(ScimError::invalid_value("add and replace need a value"));
            }
            ops.push((kind, path, value));
        }
        Ok(PatchRequest { ops })
    }

    /// Applies every operation to `doc` (a resource in request-body form).
    pub fn apply(
        &self,
        kind: &ResourceKind,
        doc: &mut Map<String, Value>,
    ) -> Result<(), ScimError> {
        for (op, path, value) in &self.ops {
            match path {
                // The path is a schema extension itself: the whole extension object.
                Some(path)
                    if kind
                        .extension
                        .is_some_and(|(urn, _)| path.eq_ignore_ascii_case(urn)) =>
                {
                    let (urn, _) = kind.extension.expect("checked just above");
                    apply_extension(kind, doc, urn, *op, value.as_ref())?;
                }
                Some(path) => {
                    let path = parse_patch_path(path)?;
                    apply_path(kind, doc, *op, &path, value.as_ref())?;
                }
                None => apply_pathless(kind, doc, *op, value.as_ref())?,
            }
        }
        Ok(())
    }
}

/// An operation on a whole extension: remove drops it, add merges into it, replace
/// replaces it.
fn apply_extension(
    kind: &ResourceKind,
    doc: &mut Map<String, Value>,
    urn: &str,
    op: Op,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if op == Op::Replace || op == Op::Remove {
        doc.retain(|k, _| !k.eq_ignore_ascii_case(urn));
    }
    if op == Op::Remove {
        return Ok(());
    }
    let Some(Value::Object(values)) = value else {
        return Err(ScimError::invalid_value(format!(
            "{urn} takes an object of its attributes"
        )));
    };
    apply_extension_values(kind, doc, urn, op, values)
}

/// Applies `op` to each attribute of an extension object.
fn apply_extension_values(
    kind: &ResourceKind,
    doc: &mut Map<String, Value>,
    urn: &str,
    op: Op,
    values: &Map<String, Value>,
) -> Result<(), ScimError> {
    for (sub, sv) in values {
        // A whole extension object may carry its resource's bookkeeping along.
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| sub.eq_ignore_ascii_case(k))
        {
            continue;
        }
        let path = PatchPath {
            attr: AttrPath {
                urn: Some(urn.to_string()),
                name: sub.clone(),
                sub: None,
            },
            filter: None,
            sub_after_filter: None,
        };
        apply_path(kind, doc, op, &path, Some(sv))?;
    }
    Ok(())
}

/// A path-less add or replace: each key of the value object is an attribute, an
/// extension URN, or (Entra) a dotted or URN-qualified path.
fn apply_pathless(
    kind: &ResourceKind,
    doc: &mut Map<String, Value>,
    op: Op,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(Value::Object(values)) = value else {
        return Err(ScimError::invalid_value(
            "without a path, the value must be an object of attributes",
        ));
    };
    for (key, v) in values {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
        {
            continue;
        }
        if let Some((urn, _)) = kind.extension
            && key.eq_ignore_ascii_case(urn)
        {
            let Value::Object(ext_values) = v else {
                return Err(ScimError::invalid_value(format!("{urn} must be an object")));
            };
            apply_extension_values(kind, doc, urn, op, ext_values)?;
            continue;
        }
        let path = parse_patch_path(key)?;
        apply_path(kind, doc, op, &path, Some(v))?;
    }
    Ok(())
}

fn find_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// The map the attribute lives in: the document, or the extension object within it.
fn container<'d>(doc: &'d mut Map<String, Value>, urn: Option<&str>) -> &'d mut Map<String, Value> {
    match urn {
        None => doc,
        Some(urn) => {
            let key = find_key(doc, urn).unwrap_or_else(|| urn.to_string());
            let slot = doc.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot.as_object_mut().expect("made an object just above")
        }
    }
}

fn apply_path(
    kind: &ResourceKind,
    doc: &mut Map<String, Value>,
    op: Op,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = path.attr.name.as_str();
    if path.attr.urn.is_none()
        && ["id", "meta", "schemas"]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k))
    {
        return Err(ScimError::mutability(format!("{name} cannot be changed")));
    }
    if path.attr.urn.is_none() && name.eq_ignore_ascii_case("externalId") {
        match op {
            Op::Remove => {
                doc.retain(|k, _| !k.eq_ignore_ascii_case("externalId"));
            }
            _ => {
                doc.insert("externalId".into(), value.cloned().unwrap_or(Value::Null));
            }
        }
        return Ok(());
    }
    let (urn, attrs) = attributes_for(kind, &path.attr)?;
    let Some(attr) = schema::find(attrs, name) else {
        // A standard attribute Portcullis does not store: nothing to change, as with a
        // POST. Any other name is a mistake the client must hear about (RFC 7644
        // §3.5.2: an invalid path is `invalidPath`), not a change silently dropped.
        if urn.is_none()
            && UNSTORED_STANDARD
                .iter()
                .any(|k| name.eq_ignore_ascii_case(k))
        {
            tracing::debug!(
                attribute = name,
                "PATCH of a standard attribute that is not stored; ignored"
            );
            return Ok(());
        }
        return Err(ScimError::invalid_path(format!(
            "{name} is not an attribute of {}",
            kind.name
        )));
    };
    if attr.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!("{} is read-only", attr.name)));
    }
    let target = container(doc, urn);
    let key = find_key(target, attr.name).unwrap_or_else(|| attr.name.to_string());
    let sub_name = path.attr.sub.as_deref();

    match (&path.filter, sub_name) {
        (None, None) => whole_attribute(target, &key, attr, op, value),
        (None, Some(sub)) => {
            let Kind::Complex(subs) = attr.kind else {
                return Err(ScimError::invalid_path(format!(
                    "{} has no sub-attributes",
                    attr.name
                )));
            };
            let sub_key = schema::find(subs, sub).map(|a| a.name).unwrap_or(sub);
            if attr.multi {
                // `emails.value`: every value's sub-attribute.
                if let Some(Value::Array(items)) = target.get_mut(&key) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        set_or_remove(item, sub_key, op, value);
                    }
                }
                return Ok(());
            }
            let slot = target
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let object = slot.as_object_mut().expect("made an object just above");
            set_or_remove(object, sub_key, op, value);
            if object.is_empty() {
                target.remove(&key);
            }
            Ok(())
        }
        (Some(filter), _) => {
            let Kind::Complex(subs) = attr.kind else {
                return Err(ScimError::invalid_path(format!(
                    "{} cannot be filtered",
                    attr.name
                )));
            };
            if !attr.multi {
                return Err(ScimError::invalid_path(format!(
                    "{} is not multi-valued",
                    attr.name
                )));
            }
            filtered(
                target,
                &key,
                subs,
                filter,
                path.sub_after_filter.as_deref(),
                op,
                value,
            )
        }
    }
}

fn set_or_remove(object: &mut Map<String, Value>, key: &str, op: Op, value: Option<&Value>) {
    let existing = find_key(object, key).unwrap_or_else(|| key.to_string());
    match op {
        Op::Remove => {
            object.remove(&existing);
        }
        _ => {
            object.remove(&existing);
            object.insert(key.to_string(), value.cloned().unwrap_or(Value::Null));
        }
    }
}

fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        single => vec![single.clone()],
    }
}

fn whole_attribute(
    target: &mut Map<String, Value>,
    key: &str,
    attr: &Attribute,
    op: Op,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match op {
        Op::Remove => {
            match (attr.multi, value) {
                // Entra: remove only the listed values (by their `value`).
                (true, Some(listed)) if !listed.is_null() => {
                    let remove: Vec<Value> = as_list(listed);
                    if let Some(Value::Array(items)) = target.get_mut(key) {
                        items.retain(|item| !remove.iter().any(|r| same_value(item, r)));
                        if items.is_empty() {
                            target.remove(key);
                        }
                    }
                }
                _ => {
                    target.remove(key);
                }
            }
            Ok(())
        }
        Op::Add if attr.multi => {
            let mut items = match target.remove(key) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for v in as_list(value.unwrap_or(&Value::Null)) {
                if !items.iter().any(|i| same_value(i, &v)) {
                    items.push(v);
                }
            }
            target.insert(key.to_string(), Value::Array(items));
            Ok(())
        }
        Op::Replace if attr.multi => {
            target.insert(key.to_string(), value.cloned().unwrap_or(Value::Null));
            Ok(())
        }
        _ => {
            // Single-valued. A complex value merges into what is there (RFC 7644
            // §3.5.2.3: sub-attributes not given are left unchanged).
            match (
                matches!(attr.kind, Kind::Complex(_)),
                target.get_mut(key),
                value,
            ) {
                (true, Some(Value::Object(existing)), Some(Value::Object(given))) => {
                    for (k, v) in given {
                        let existing_key = find_key(existing, k).unwrap_or_else(|| k.clone());
                        existing.remove(&existing_key);
                        existing.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    target.insert(key.to_string(), value.cloned().unwrap_or(Value::Null));
                }
            }
            Ok(())
        }
    }
}

/// Two values of a multi-valued attribute are the same value when their `value`
/// sub-attributes are equal (or, without one, when they are equal).
fn same_value(a: &Value, b: &Value) -> bool {
    let v = |x: &Value| {
        x.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .map(|(_, v)| v.clone())
        })
    };
    match (v(a), v(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn filtered(
    target: &mut Map<String, Value>,
    key: &str,
    subs: &[Attribute],
    filter: &Filter,
    sub: Option<&str>,
    op: Op,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let mut items = match target.remove(key) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let mut matched = false;
    let sub_key = sub.map(|s| schema::find(subs, s).map(|a| a.name).unwrap_or(s));
    match op {
        Op::Remove => {
            if let Some(sub_key) = sub_key {
                for item in items.iter_mut().filter(|i| matches(filter, i, subs)) {
                    if let Some(o) = item.as_object_mut() {
                        let k = find_key(o, sub_key).unwrap_or_else(|| sub_key.to_string());
                        o.remove(&k);
                    }
                }
            } else {
                items.retain(|i| !matches(filter, i, subs));
            }
        }
        Op::Add | Op::Replace => {
            for item in items.iter_mut() {
                if !matches(filter, item, subs) {
                    continue;
                }
                matched = true;
                match (sub_key, item.as_object_mut()) {
                    (Some(sub_key), Some(o)) => set_or_remove(o, sub_key, op, value),
                    (None, Some(o)) => {
                        if let Some(Value::Object(given)) = value {
                            for (k, v) in given {
                                set_or_remove(o, k, op, Some(v));
                            }
                        } else {
                            return Err(ScimError::invalid_value(
                                "the value for a filtered path must be an object",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            if !matched {
                // Nothing matched: add a value made of the filter's equalities and the
                // given value (Entra's `emails[type eq "work"].value`).
                let mut new_item = equalities(filter);
                match (sub_key, value) {
                    (Some(sub_key), Some(v)) => {
                        new_item.insert(sub_key.to_string(), v.clone());
                    }
                    (None, Some(Value::Object(given))) => {
                        for (k, v) in given {
                            new_item.insert(k.clone(), v.clone());
                        }
                    }
                    _ => {
                        return Err(ScimError::no_target(
                            "the filter matches no value to change",
                        ));
                    }
                }
                items.push(Value::Object(new_item));
            }
        }
    }
    if !items.is_empty() {
        target.insert(key.to_string(), Value::Array(items));
    }
    Ok(())
}

/// The `attr eq value` conditions of an `and`-only filter, as an object.
fn equalities(filter: &Filter) -> Map<String, Value> {
    let mut out = Map::new();
    fn walk(f: &Filter, out: &mut Map<String, Value>) {
        match f {
            Filter::Compare(path, CompareOp::Eq, v) if !v.is_null() => {
                out.insert(path.name.clone(), v.clone());
            }
            Filter::And(a, b) => {
                walk(a, out);
                walk(b, out);
            }
            _ => {}
        }
    }
    walk(filter, &mut out);
    out
}

/// Whether one value (an object) of a multi-valued attribute matches a value filter.
pub fn matches(filter: &Filter, item: &Value, subs: &[Attribute]) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, item, subs) && matches(b, item, subs),
        Filter::Or(a, b) => matches(a, item, subs) || matches(b, item, subs),
        Filter::Not(a) => !matches(a, item, subs),
        Filter::ValuePath(..) => false,
        Filter::Present(path) => field(item, &path.name)
            .is_some_and(|v| !v.is_null() && v != &Value::String(String::new())),
        Filter::Compare(path, op, expected) => {
            let case_exact = schema::find(subs, &path.name).is_some_and(|a| a.case_exact);
            compare(field(item, &path.name), *op, expected, case_exact)
        }
    }
}

fn field<'v>(item: &'v Value, name: &str) -> Option<&'v Value> {
    item.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Compares a stored value with a filter value (RFC 7644 §3.4.2.2).
pub fn compare(actual: Option<&Value>, op: CompareOp, expected: &Value, case_exact: bool) -> bool {
    let Some(actual) = actual.filter(|v| !v.is_null()) else {
        return match op {
            CompareOp::Eq => expected.is_null(),
            CompareOp::Ne => !expected.is_null(),
            _ => false,
        };
    };
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if case_exact {
                (a.clone(), e.clone())
            } else {
                (a.to_lowercase(), e.to_lowercase())
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => a > e,
                CompareOp::Lt => a < e,
                CompareOp::Ge => a >= e,
                CompareOp::Le => a <= e,
            }
        }
        (Value::Bool(a), e) => {
            let e = match e {
                Value::Bool(b) => Some(*b),
                Value::String(s) => s.parse::<bool>().ok().or_else(|| {
                    if s.eq_ignore_ascii_case("true") {
                        Some(true)
                    } else if s.eq_ignore_ascii_case("false") {
                        Some(false)
                    } else {
                        None
                    }
                }),
                _ => None,
            };
            match (op, e) {
                (CompareOp::Eq, Some(e)) => *a == e,
                (CompareOp::Ne, Some(e)) => *a != e,
                _ => false,
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Gt => a > e,
                CompareOp::Lt => a < e,
                CompareOp::Ge => a >= e,
                CompareOp::Le => a <= e,
                _ => false,
            }
        }
        _ => matches!(op, CompareOp::Ne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::normalize;
    use serde_json::json;

    fn user_doc() -> Map<String, Value> {
        json!({
            "userName": "alice@example.com",
            "externalId": "00u1",
            "active": true,
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn patch(doc: &mut Map<String, Value>, ops: Value) -> Result<(), ScimError> {
        let body = json!({"schemas": [schema::PATCH_OP], "Operations": ops});
        PatchRequest::parse(&body)?.apply(&schema::USER, doc)
    }

    #[test]
    fn okta_deactivates_with_a_pathless_replace_and_string_booleans() {
        let mut doc = user_doc();
        patch(
            &mut doc,
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .unwrap();
        assert_eq!(doc["active"], false);
        let mut doc = user_doc();
        patch(
            &mut doc,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(
            normalize(&schema::USER, &doc).unwrap().attributes["active"],
            false
        );
    }

    #[test]
    fn entra_dotted_and_urn_keys_in_a_pathless_replace() {
        let mut doc = user_doc();
        patch(
            &mut doc,
            json!([{"op": "Replace", "value": {
                "name.givenName": "Alicia",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "mgr-1",
                "displayName": "Alicia Smith"
            }}]),
        )
        .unwrap();
        let n = normalize(&schema::USER, &doc).unwrap();
        assert_eq!(n.attributes["name"]["givenName"], "Alicia");
        assert_eq!(
            n.attributes["name"]["familyName"], "Smith",
            "sibling sub-attribute kept"
        );
        assert_eq!(
            n.attributes[schema::ENTERPRISE_SCHEMA]["department"],
            "Sales"
        );
        assert_eq!(
            n.attributes[schema::ENTERPRISE_SCHEMA]["manager"],
            json!({"value": "mgr-1"})
        );
    }

    #[test]
    fn a_replace_on_an_unmatched_filter_adds_the_value() {
        let mut doc = user_doc();
        patch(
            &mut doc,
            json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "alice@new.example.com"},
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
                {"op": "replace", "path": "addresses[type eq \"work\"].locality", "value": "Oslo"}
            ]),
        )
        .unwrap();
        let n = normalize(&schema::USER, &doc).unwrap();
        assert_eq!(
            n.attributes["emails"],
            json!([{"value": "alice@new.example.com", "type": "work", "primary": true}])
        );
        assert_eq!(
            n.attributes["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555 0100"}])
        );
        assert_eq!(
            n.attributes["addresses"],
            json!([{"type": "work", "locality": "Oslo"}])
        );
    }

    #[test]
    fn remove_with_a_filter_and_sub_attributes() {
        let mut doc = user_doc();
        patch(
            &mut doc,
            json!([
                {"op": "remove", "path": "name.familyName"},
                {"op": "remove", "path": "emails[type eq \"WORK\"]"}
            ]),
        )
        .unwrap();
        assert_eq!(doc["name"], json!({"givenName": "Alice"}));
        assert!(
            !doc.contains_key("emails"),
            "type comparison is case-insensitive"
        );
    }

    #[test]
    fn a_failing_operation_is_reported_and_read_only_paths_refused() {
        let mut doc = user_doc();
        let err = patch(
            &mut doc,
            json!([{"op": "replace", "path": "id", "value": "x"}]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
        let err = patch(&mut doc, json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(err.scim_type, Some("noTarget"));
        let err = patch(&mut doc, json!([{"op": "frobnicate", "path": "x"}])).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidSyntax"));
        let err = patch(
            &mut doc,
            json!([{"op": "add", "path": "emails[type eq", "value": 1}]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("invalidPath"));
        let err = patch(
            &mut doc,
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
    }

    #[test]
    fn group_membership_changes_in_both_dialects() {
        let mut doc = json!({"displayName": "Ops", "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}]})
            .as_object()
            .cloned()
            .unwrap();
        let apply = |doc: &mut Map<String, Value>, ops: Value| {
            PatchRequest::parse(&json!({"Operations": ops}))
                .unwrap()
                .apply(&schema::GROUP, doc)
                .unwrap()
        };
        // Okta: add, and remove by filter.
        apply(
            &mut doc,
            json!([{"op": "add", "path": "members", "value": [{"value": "u4", "display": "d"}]}]),
        );
        apply(
            &mut doc,
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
        );
        // Entra: remove with a value list removes only those.
        apply(
            &mut doc,
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u2"}]}]),
        );
        let n = normalize(&schema::GROUP, &doc).unwrap();
        let ids: Vec<&str> = n.members.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(ids, vec!["u3", "u4"]);
        // Okta rename: a path-less replace whose value carries the id.
        apply(
            &mut doc,
            json!([{"op": "replace", "value": {"id": "g1", "displayName": "Operations"}}]),
        );
        assert_eq!(doc["displayName"], "Operations");
        // A remove of members without a value empties the group.
        apply(&mut doc, json!([{"op": "remove", "path": "members"}]));
        assert!(normalize(&schema::GROUP, &doc).unwrap().members.is_empty());
    }
}
