//! Users and groups: what is stored, how a request body becomes it, and how it is shown.
//!
//! Normalisation follows [`crate::schema`]: attribute names match without regard to case
//! and are stored under their declared spelling; `"True"` and `"False"` are booleans;
//! `null`, `[]` and `{}` mean "absent"; read-only attributes, `password`, unknown
//! attributes and unknown schema URNs are ignored (clients send all of these); a value of
//! the wrong type is a 400 `invalidValue`. The extension lives under its URN.

use serde_json::{Map, Value, json};

use crate::error::ScimError;
use crate::filter::{AttrPath, parse_attr_path};
use crate::schema::{self, Attribute, Kind, Mutability, ResourceKind};

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub value: String,
    /// `User` or `Group`.
    pub kind: String,
    pub display: Option<String>,
}

/// A stored user. `attributes` holds every declared attribute that is set, including
/// `userName` and `active`, under their declared names; the extension under its URN.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub external_id: Option<String>,
    pub attributes: Map<String, Value>,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub id: String,
    pub external_id: Option<String>,
    pub attributes: Map<String, Value>,
    pub members: Vec<Member>,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub version: i64,
}

impl UserRecord {
    pub fn user_name(&self) -> &str {
        self.attributes
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Users are active unless the provider says otherwise.
    pub fn active(&self) -> bool {
        self.attributes
            .get("active")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// `(value, type, primary)` of every email.
    pub fn emails(&self) -> Vec<(String, Option<String>, bool)> {
        self.attributes
            .get("emails")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| {
                        Some((
                            e.get("value")?.as_str()?.to_string(),
                            e.get("type").and_then(Value::as_str).map(str::to_string),
                            e.get("primary").and_then(Value::as_bool).unwrap_or(false),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl GroupRecord {
    pub fn display_name(&self) -> &str {
        self.attributes
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A request body after normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub external_id: Option<String>,
    pub attributes: Map<String, Value>,
    /// Group members (groups only).
    pub members: Vec<Member>,
}

fn coerce_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Normalises one value of `attr` (a single value, not a list). `Ok(None)` means absent.
fn normalize_single(attr: &Attribute, value: &Value, at: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    let wrong = || ScimError::invalid_value(format!("{at} must be {}", describe(attr)));
    Ok(Some(match attr.kind {
        Kind::String | Kind::Reference(_) | Kind::DateTime => match value {
            Value::String(s) => Value::String(s.clone()),
            Value::Number(n) => Value::String(n.to_string()),
            _ => return Err(wrong()),
        },
        Kind::Boolean => Value::Bool(coerce_bool(value).ok_or_else(wrong)?),
        Kind::Integer => match value {
            Value::Number(n) if n.is_i64() => value.clone(),
            Value::String(s) => Value::from(s.trim().parse::<i64>().map_err(|_| wrong())?),
            _ => return Err(wrong()),
        },
        Kind::Complex(sub) => {
            let object = match value {
                Value::Object(o) => o.clone(),
                // Entra sends the enterprise manager as a bare id.
                Value::String(s) if attr.name == "manager" => {
                    let mut o = Map::new();
                    o.insert("value".into(), Value::String(s.clone()));
                    o
                }
                _ => return Err(wrong()),
            };
            let mut out = Map::new();
            for (key, v) in &object {
                let Some(sub_attr) = schema::find(sub, key) else {
                    continue;
                };
                if sub_attr.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(n) = normalize_single(sub_attr, v, &format!("{at}.{}", sub_attr.name))?
                {
                    out.insert(sub_attr.name.to_string(), n);
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Object(out)
        }
    }))
}

fn describe(attr: &Attribute) -> &'static str {
    match attr.kind {
        Kind::String | Kind::Reference(_) | Kind::DateTime => "a string",
        Kind::Boolean => "true or false",
        Kind::Integer => "an integer",
        Kind::Complex(_) => "an object",
    }
}

/// Normalises the value of `attr`, single or multi-valued. `Ok(None)` means absent.
pub fn normalize_value(
    attr: &Attribute,
    value: &Value,
    at: &str,
) -> Result<Option<Value>, ScimError> {
    if !attr.multi {
        if value.is_array() {
            return Err(ScimError::invalid_value(format!(
                "{at} takes a single value, not a list"
            )));
        }
        return normalize_single(attr, value, at);
    }
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut out = Vec::new();
    let mut seen_primary = false;
    for item in items {
        if let Some(mut n) = normalize_single(attr, item, at)? {
            // RFC 7643 §2.4: at most one value may be primary.
            if let Some(primary) = n.get("primary").and_then(Value::as_bool)
                && primary
            {
                if seen_primary {
                    n["primary"] = Value::Bool(false);
                }
                seen_primary = true;
            }
            out.push(n);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// The attributes `path` can reach in `kind`: the extension's when its URN is named.
pub fn attributes_for<'k>(
    kind: &'k ResourceKind,
    path: &AttrPath,
) -> Result<(Option<&'static str>, &'k [Attribute]), ScimError> {
    match &path.urn {
        None => Ok((None, kind.attributes)),
        Some(urn) if urn.eq_ignore_ascii_case(kind.schema) => Ok((None, kind.attributes)),
        Some(urn) => match kind.extension {
            Some((ext, attrs)) if urn.eq_ignore_ascii_case(ext) => Ok((Some(ext), attrs)),
            _ => Err(ScimError::invalid_path(format!(
                "{urn} is not a schema of {}",
                kind.name
            ))),
        },
    }
}

fn parse_members(value: &Value) -> Result<Vec<Member>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut members: Vec<Member> = Vec::new();
    for item in items {
        let Value::Object(o) = item else {
            return Err(ScimError::invalid_value(
                "members must be objects with a value",
            ));
        };
        let get = |name: &str| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let Some(value) = get("value").and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }) else {
            return Err(ScimError::invalid_value(
                "every member needs a value (the member's id)",
            ));
        };
        let kind = match get("type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("group") => "Group".to_string(),
            _ => "User".to_string(),
        };
        let display = get("display").and_then(Value::as_str).map(str::to_string);
        if !members.iter().any(|m| m.value == value) {
            members.push(Member {
                value,
                kind,
                display,
            });
        }
    }
    Ok(members)
}

/// Normalises a request body (POST, PUT, or a resource after PATCH).
pub fn normalize(kind: &ResourceKind, body: &Map<String, Value>) -> Result<Normalized, ScimError> {
    let mut attributes = Map::new();
    let mut external_id = None;
    let mut members = Vec::new();
    for (key, value) in body {
        if key.eq_ignore_ascii_case("externalId") {
            external_id = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => return Err(ScimError::invalid_value("externalId must be a string")),
            };
            continue;
        }
        if ["schemas", "id", "meta", "password"]
            .iter()
            .any(|k| key.eq_ignore_ascii_case(k))
        {
            continue;
        }
        if kind.name == "Group" && key.eq_ignore_ascii_case("members") {
            members = parse_members(value)?;
            continue;
        }
        if let Some((urn, ext_attrs)) = kind.extension
            && key.eq_ignore_ascii_case(urn)
        {
            let Value::Object(ext) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_value(format!("{urn} must be an object")));
            };
            let mut out = Map::new();
            for (k, v) in ext {
                let Some(attr) = schema::find(ext_attrs, k) else {
                    continue;
                };
                if attr.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(n) = normalize_value(attr, v, &format!("{urn}:{}", attr.name))? {
                    out.insert(attr.name.to_string(), n);
                }
            }
            if !out.is_empty() {
                attributes.insert(urn.to_string(), Value::Object(out));
            }
            continue;
        }
        let Some(attr) = schema::find(kind.attributes, key) else {
            continue;
        };
        if attr.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(n) = normalize_value(attr, value, attr.name)? {
            attributes.insert(attr.name.to_string(), n);
        }
    }
    for attr in kind.attributes.iter().filter(|a| a.required) {
        let present = attributes
            .get(attr.name)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty());
        if !present {
            return Err(ScimError::invalid_value(format!(
                "{} is required",
                attr.name
            )));
        }
    }
    Ok(Normalized {
        external_id,
        attributes,
        members,
    })
}

/// Which attributes a response carries (`attributes` / `excludedAttributes`).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub include: Vec<AttrPath>,
    pub exclude: Vec<AttrPath>,
}

impl Projection {
    pub fn parse(
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Projection, ScimError> {
        let list = |text: Option<&str>| -> Result<Vec<AttrPath>, ScimError> {
            text.unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    // A bare extension URN names the whole extension.
                    if s.to_ascii_lowercase().starts_with("urn:") && parse_attr_path(s).is_err() {
                        return Ok(AttrPath {
                            urn: None,
                            name: s.to_string(),
                            sub: None,
                        });
                    }
                    parse_attr_path(s).or_else(|_| {
                        Ok(AttrPath {
                            urn: None,
                            name: s.to_string(),
                            sub: None,
                        })
                    })
                })
                .collect()
        };
        Ok(Projection {
            include: list(attributes)?,
            exclude: list(excluded)?,
        })
    }

    /// Whether the projection keeps the top-level attribute `name` (so it is worth loading).
    pub fn wants(&self, name: &str) -> bool {
        let named = |paths: &[AttrPath]| paths.iter().any(|p| p.name.eq_ignore_ascii_case(name));
        !named(&self.exclude) && (self.include.is_empty() || named(&self.include))
    }

    /// Applies the projection to a rendered resource. `id`, `schemas` and `meta` always stay.
    pub fn apply(
        &self,
        kind: &ResourceKind,
        mut resource: Map<String, Value>,
    ) -> Map<String, Value> {
        const ALWAYS: &[&str] = &["id", "schemas", "meta"];
        let resolve =
            |paths: &[AttrPath], resource: &Map<String, Value>| -> Vec<(String, Option<String>)> {
                paths
                    .iter()
                    .map(|p| resolve_key(kind, resource, p))
                    .collect()
            };
        let include = resolve(&self.include, &resource);
        let exclude = resolve(&self.exclude, &resource);
        if !include.is_empty() {
            let mut out = Map::new();
            for key in ALWAYS {
                if let Some(v) = resource.get(*key) {
                    out.insert(key.to_string(), v.clone());
                }
            }
            for (name, sub) in include {
                let Some(value) = resource.get(&name) else {
                    continue;
                };
                match sub {
                    None => {
                        out.insert(name, value.clone());
                    }
                    Some(sub) => {
                        let Some(picked) = pick_sub(value, &sub) else {
                            continue;
                        };
                        match (out.get_mut(&name), picked) {
                            (Some(Value::Object(existing)), Value::Object(p)) => existing.extend(p),
                            (_, picked) => {
                                out.insert(name, picked);
                            }
                        }
                    }
                }
            }
            resource = out;
        }
        for (name, sub) in exclude {
            if ALWAYS.contains(&name.as_str()) {
                continue;
            }
            match sub {
                None => {
                    resource.remove(&name);
                }
                Some(sub) => {
                    if let Some(v) = resource.get_mut(&name) {
                        remove_sub(v, &sub);
                    }
                }
            }
        }
        resource
    }
}

/// The key (and sub-attribute) of `resource` a projection path names: the extension URN
/// itself, an attribute inside the extension, or a core attribute in any letter case.
fn resolve_key(
    kind: &ResourceKind,
    resource: &Map<String, Value>,
    path: &AttrPath,
) -> (String, Option<String>) {
    if let Some((ext, _)) = kind.extension {
        if path.name.eq_ignore_ascii_case(ext) {
            return (ext.to_string(), None);
        }
        if path
            .urn
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(ext))
        {
            return (ext.to_string(), Some(path.name.clone()));
        }
    }
    let name = resource
        .keys()
        .find(|k| k.eq_ignore_ascii_case(&path.name))
        .cloned()
        .unwrap_or_else(|| path.name.clone());
    (name, path.sub.clone())
}

/// The `sub` sub-attribute of a complex value (or of each value of a list).
fn pick_sub(value: &Value, sub: &str) -> Option<Value> {
    let pick = |o: &Map<String, Value>| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(sub))
            .map(|(k, v)| {
                let mut m = Map::new();
                m.insert(k.clone(), v.clone());
                Value::Object(m)
            })
    };
    match value {
        Value::Object(o) => pick(o),
        Value::Array(items) => {
            let picked: Vec<Value> = items
                .iter()
                .filter_map(|i| i.as_object().and_then(pick))
                .collect();
            (!picked.is_empty()).then_some(Value::Array(picked))
        }
        _ => None,
    }
}

fn remove_sub(value: &mut Value, sub: &str) {
    match value {
        Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
        Value::Array(items) => {
            for i in items {
                remove_sub(i, sub);
            }
        }
        _ => {}
    }
}

fn meta(
    kind: &ResourceKind,
    base: &str,
    id: &str,
    created: u64,
    modified: u64,
    version: i64,
) -> Value {
    json!({
        "resourceType": kind.name,
        "created": portcullis_core::time::rfc3339_ms(created),
        "lastModified": portcullis_core::time::rfc3339_ms(modified),
        "location": format!("{base}{}/{id}", kind.endpoint),
        "version": format!("W/\"{version}\""),
    })
}

/// A user as SCIM returns it. `groups` are `(id, display name)` of its groups.
pub fn render_user(
    user: &UserRecord,
    groups: &[(String, String)],
    base: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut schemas = vec![json!(schema::USER_SCHEMA)];
    if user.attributes.contains_key(schema::ENTERPRISE_SCHEMA) {
        schemas.push(json!(schema::ENTERPRISE_SCHEMA));
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), json!(user.id));
    if let Some(e) = &user.external_id {
        out.insert("externalId".into(), json!(e));
    }
    for (k, v) in &user.attributes {
        out.insert(k.clone(), v.clone());
    }
    if !groups.is_empty() {
        out.insert(
            "groups".into(),
            Value::Array(
                groups
                    .iter()
                    .map(|(id, name)| {
                        json!({"value": id, "$ref": format!("{base}/Groups/{id}"), "display": name, "type": "direct"})
                    })
                    .collect(),
            ),
        );
    }
    out.insert(
        "meta".into(),
        meta(
            &schema::USER,
            base,
            &user.id,
            user.created_ms,
            user.modified_ms,
            user.version,
        ),
    );
    out
}

pub fn render_group(group: &GroupRecord, base: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([schema::GROUP_SCHEMA]));
    out.insert("id".into(), json!(group.id));
    if let Some(e) = &group.external_id {
        out.insert("externalId".into(), json!(e));
    }
    for (k, v) in &group.attributes {
        out.insert(k.clone(), v.clone());
    }
    if !group.members.is_empty() {
        out.insert(
            "members".into(),
            Value::Array(
                group
                    .members
                    .iter()
                    .map(|m| {
                        let endpoint = if m.kind == "Group" { "Groups" } else { "Users" };
                        let mut v = Map::new();
                        v.insert("value".into(), Value::String(m.value.clone()));
                        v.insert(
                            "$ref".into(),
                            Value::String(format!("{base}/{endpoint}/{}", m.value)),
                        );
                        v.insert("type".into(), Value::String(m.kind.clone()));
                        if let Some(d) = &m.display {
                            v.insert("display".into(), Value::String(d.clone()));
                        }
                        Value::Object(v)
                    })
                    .collect(),
            ),
        );
    }
    out.insert(
        "meta".into(),
        meta(
            &schema::GROUP,
            base,
            &group.id,
            group.created_ms,
            group.modified_ms,
            group.version,
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn an_okta_create_body_normalises() {
        let body = obj(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:okta:custom"],
            "USERNAME": "alice@example.com",
            "name": {"givenName": "Alice", "familyName": "Smith", "unknown": 1},
            "emails": [{"primary": true, "value": "alice@example.com", "type": "work"}],
            "displayName": "Alice Smith",
            "locale": "en-US",
            "externalId": "00u1",
            "groups": [],
            "roles": [],
            "password": "hunter2",
            "active": "True",
            "nickName": null,
            "meta": {"resourceType": "User"},
        }));
        let n = normalize(&schema::USER, &body).unwrap();
        assert_eq!(n.external_id.as_deref(), Some("00u1"));
        assert_eq!(n.attributes["userName"], "alice@example.com");
        assert_eq!(n.attributes["active"], true);
        assert_eq!(
            n.attributes["name"],
            json!({"givenName": "Alice", "familyName": "Smith"})
        );
        for absent in ["password", "groups", "roles", "nickName", "meta", "schemas"] {
            assert!(!n.attributes.contains_key(absent), "{absent} kept");
        }
    }

    #[test]
    fn wrong_types_and_missing_required_attributes_are_invalid_values() {
        for body in [
            json!({"userName": 42.5, "active": "maybe"}),
            json!({"userName": "x", "active": "maybe"}),
            json!({"userName": "x", "emails": "not-an-object-list"}),
            json!({"userName": "x", "name": "Alice"}),
            json!({"displayName": "no user name"}),
            json!({"userName": "   "}),
        ] {
            let err = normalize(&schema::USER, &obj(body.clone())).unwrap_err();
            assert_eq!(err.scim_type, Some("invalidValue"), "{body}");
        }
    }

    #[test]
    fn the_enterprise_extension_and_a_plain_string_manager_are_stored() {
        let body = obj(json!({
            "userName": "b",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Sales", "manager": "mgr-id", "employeeNumber": 701
            }
        }));
        let n = normalize(&schema::USER, &body).unwrap();
        let ext = &n.attributes[schema::ENTERPRISE_SCHEMA];
        assert_eq!(ext["manager"], json!({"value": "mgr-id"}));
        assert_eq!(ext["employeeNumber"], "701");
    }

    #[test]
    fn group_members_deduplicate_and_need_values() {
        let body = obj(
            json!({"displayName": "Ops", "members": [{"value": "u1"}, {"value": "u1", "display": "x"}, {"value": "g2", "type": "Group"}]}),
        );
        let n = normalize(&schema::GROUP, &body).unwrap();
        assert_eq!(n.members.len(), 2);
        assert_eq!(n.members[1].kind, "Group");
        assert!(
            normalize(
                &schema::GROUP,
                &obj(json!({"displayName": "x", "members": [{"display": "no value"}]}))
            )
            .is_err()
        );
    }

    #[test]
    fn projection_keeps_always_returned_attributes() {
        let user = UserRecord {
            id: "1".into(),
            external_id: Some("e".into()),
            attributes: obj(
                json!({"userName": "u", "displayName": "U", "name": {"givenName": "G", "familyName": "F"}}),
            ),
            created_ms: 0,
            modified_ms: 0,
            version: 1,
        };
        let full = render_user(&user, &[], "/scim");
        let p = Projection::parse(Some("name.givenName,USERNAME"), None).unwrap();
        let out = p.apply(&schema::USER, full.clone());
        assert_eq!(out["name"], json!({"givenName": "G"}));
        assert_eq!(out["userName"], "u");
        assert!(
            out.contains_key("id") && out.contains_key("meta") && !out.contains_key("displayName")
        );
        let p = Projection::parse(None, Some("displayName,id")).unwrap();
        let out = p.apply(&schema::USER, full);
        assert!(!out.contains_key("displayName") && out.contains_key("id"));
    }
}
