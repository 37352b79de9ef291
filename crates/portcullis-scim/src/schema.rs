//! The one description of what Portcullis stores for SCIM resources (RFC 7643).
//!
//! Everything is derived from these tables: what `/Schemas` declares, how request bodies
//! are validated and normalised, which comparisons ignore case, what is read-only or
//! never returned. An attribute appears here only if it is stored and comes back as it
//! was sent, so a client (or a conformance checker) that reads `/Schemas` can rely on
//! every attribute it finds.

use serde_json::{Value, json};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Integer,
    DateTime,
    /// A URI; the list names what it may reference (`User`, `Group`, `external`).
    Reference(&'static [&'static str]),
    Complex(&'static [Attribute]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    /// `server` uniqueness (only `userName`).
    pub unique: bool,
    pub canonical: &'static [&'static str],
    pub description: &'static str,
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    Attribute {
        name,
        kind: Kind::String,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique: false,
        canonical: &[],
        description,
    }
}

const fn boolean(name: &'static str, description: &'static str) -> Attribute {
    Attribute {
        kind: Kind::Boolean,
        ..string(name, description)
    }
}

const fn complex(
    name: &'static str,
    sub: &'static [Attribute],
    description: &'static str,
) -> Attribute {
    Attribute {
        kind: Kind::Complex(sub),
        ..string(name, description)
    }
}

const fn multi(a: Attribute) -> Attribute {
    Attribute { multi: true, ..a }
}

const fn read_only(a: Attribute) -> Attribute {
    Attribute {
        mutability: Mutability::ReadOnly,
        ..a
    }
}

const fn with_canonical(a: Attribute, canonical: &'static [&'static str]) -> Attribute {
    Attribute { canonical, ..a }
}

const fn reference(
    name: &'static str,
    to: &'static [&'static str],
    description: &'static str,
) -> Attribute {
    Attribute {
        kind: Kind::Reference(to),
        case_exact: true,
        ..string(name, description)
    }
}

const NAME: &[Attribute] = &[
    string("formatted", "The full name, formatted for display."),
    string("familyName", "The family name."),
    string("givenName", "The given name."),
    string("middleName", "The middle name(s)."),
    string("honorificPrefix", "Title prefix, e.g. 'Ms.'."),
    string("honorificSuffix", "Title suffix, e.g. 'III'."),
];

const EMAIL: &[Attribute] = &[
    string("value", "The email address."),
    string("display", "A human-readable name."),
    with_canonical(
        string("type", "The kind of address."),
        &["work", "home", "other"],
    ),
    boolean("primary", "Whether this is the primary address."),
];

const PHONE: &[Attribute] = &[
    string("value", "The phone number."),
    string("display", "A human-readable name."),
    with_canonical(
        string("type", "The kind of number."),
        &["work", "home", "mobile", "fax", "pager", "other"],
    ),
    boolean("primary", "Whether this is the primary number."),
];

const ADDRESS: &[Attribute] = &[
    string("formatted", "The full address, formatted for display."),
    string("streetAddress", "The street part of the address."),
    string("locality", "The city or locality."),
    string("region", "The state or region."),
    string("postalCode", "The postal code."),
    string("country", "The country (ISO 3166-1 alpha-2)."),
    with_canonical(
        string("type", "The kind of address."),
        &["work", "home", "other"],
    ),
    boolean("primary", "Whether this is the primary address."),
];

const ROLE: &[Attribute] = &[
    string("value", "The role."),
    string("display", "A human-readable name."),
    string("type", "The kind of role."),
    boolean("primary", "Whether this is the primary role."),
];

const USER_GROUP: &[Attribute] = &[
    read_only(string("value", "The id of the group.")),
    read_only(reference("$ref", &["Group"], "The URI of the group.")),
    read_only(string("display", "The group's display name.")),
    read_only(with_canonical(
        string("type", "How the user belongs to the group."),
        &["direct"],
    )),
];

pub const USER_ATTRIBUTES: &[Attribute] = &[
    Attribute {
        required: true,
        unique: true,
        ..string(
            "userName",
            "The unique identifier of the user at the provider, often an email address.",
        )
    },
    complex("name", NAME, "The components of the user's name."),
    string("displayName", "The name of the user, for display."),
    string("nickName", "The casual name of the user."),
    reference(
        "profileUrl",
        &["external"],
        "A URI pointing to the user's online profile.",
    ),
    string("title", "The user's title, such as 'Vice President'."),
    string(
        "userType",
        "The relationship between the organization and the user.",
    ),
    string("preferredLanguage", "The user's preferred language."),
    string("locale", "The user's default location, for localizing."),
    string("timezone", "The user's time zone, in IANA format."),
    boolean(
        "active",
        "Whether the user may sign in. Inactive users are refused and their sessions revoked.",
    ),
    multi(complex("emails", EMAIL, "Email addresses.")),
    multi(complex("phoneNumbers", PHONE, "Phone numbers.")),
    multi(complex("addresses", ADDRESS, "Physical mailing addresses.")),
    multi(complex("roles", ROLE, "Roles.")),
    read_only(multi(complex(
        "groups",
        USER_GROUP,
        "The groups the user belongs to. Change it through the groups.",
    ))),
];

const MANAGER: &[Attribute] = &[
    string("value", "The id of the manager."),
    reference("$ref", &["User"], "The URI of the manager."),
    read_only(string("displayName", "The manager's display name.")),
];

pub const ENTERPRISE_ATTRIBUTES: &[Attribute] = &[
    string(
        "employeeNumber",
        "A string identifier assigned by the organization.",
    ),
    string("costCenter", "The cost center."),
    string("organization", "The organization."),
    string("division", "The division."),
    string("department", "The department."),
    complex("manager", MANAGER, "The user's manager."),
];

const MEMBER: &[Attribute] = &[
    Attribute {
        mutability: Mutability::Immutable,
        case_exact: true,
        ..string("value", "The id of the member.")
    },
    Attribute {
        mutability: Mutability::Immutable,
        ..reference("$ref", &["User", "Group"], "The URI of the member.")
    },
    string("display", "A human-readable name of the member."),
    Attribute {
        mutability: Mutability::Immutable,
        ..with_canonical(string("type", "The kind of member."), &["User", "Group"])
    },
];

pub const GROUP_ATTRIBUTES: &[Attribute] = &[
    Attribute {
        required: true,
        ..string("displayName", "The name of the group.")
    },
    multi(complex("members", MEMBER, "The members of the group.")),
];

/// A resource type: its core schema, optional extension, and endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ResourceKind {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub schema: &'static str,
    pub attributes: &'static [Attribute],
    pub extension: Option<(&'static str, &'static [Attribute])>,
    pub description: &'static str,
}

pub const USER: ResourceKind = ResourceKind {
    name: "User",
    endpoint: "/Users",
    schema: USER_SCHEMA,
    attributes: USER_ATTRIBUTES,
    extension: Some((ENTERPRISE_SCHEMA, ENTERPRISE_ATTRIBUTES)),
    description: "A user provisioned by the identity provider.",
};

pub const GROUP: ResourceKind = ResourceKind {
    name: "Group",
    endpoint: "/Groups",
    schema: GROUP_SCHEMA,
    attributes: GROUP_ATTRIBUTES,
    extension: None,
    description: "A group (team) provisioned by the identity provider.",
};

/// Finds a declared attribute by name, ignoring case (RFC 7643 §2.1).
pub fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Boolean => "boolean",
        Kind::Integer => "integer",
        Kind::DateTime => "dateTime",
        Kind::Reference(_) => "reference",
        Kind::Complex(_) => "complex",
    }
}

fn attribute_json(a: &Attribute) -> Value {
    let mut v = json!({
        "name": a.name,
        "type": kind_name(a.kind),
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "mutability": match a.mutability {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
        },
        "returned": match a.returned {
            Returned::Always => "always",
            Returned::Default => "default",
        },
    });
    match a.kind {
        Kind::Complex(sub) => {
            v["subAttributes"] = Value::Array(sub.iter().map(attribute_json).collect());
        }
        Kind::Reference(to) => {
            v["referenceTypes"] = json!(to);
            v["caseExact"] = json!(a.case_exact);
            v["uniqueness"] = json!("none");
        }
        _ => {
            v["caseExact"] = json!(a.case_exact);
            v["uniqueness"] = json!(if a.unique { "server" } else { "none" });
        }
    }
    if !a.canonical.is_empty() {
        v["canonicalValues"] = json!(a.canonical);
    }
    v
}

fn schema_json(
    id: &str,
    name: &str,
    description: &str,
    attributes: &[Attribute],
    base: &str,
) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// Every schema, as `/Schemas` serves them.
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_json(USER_SCHEMA, "User", "User account", USER_ATTRIBUTES, base),
        schema_json(
            ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            "Enterprise user",
            ENTERPRISE_ATTRIBUTES,
            base,
        ),
        schema_json(GROUP_SCHEMA, "Group", "Group", GROUP_ATTRIBUTES, base),
    ]
}

/// Every resource type, as `/ResourceTypes` serves them.
pub fn resource_types(base: &str) -> Vec<Value> {
    [USER, GROUP]
        .iter()
        .map(|kind| {
            let mut v = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": kind.name,
                "name": kind.name,
                "endpoint": kind.endpoint,
                "description": kind.description,
                "schema": kind.schema,
                "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", kind.name)},
            });
            if let Some((urn, _)) = kind.extension {
                v["schemaExtensions"] = json!([{"schema": urn, "required": false}]);
            }
            v
        })
        .collect()
}

/// The most results one page returns.
pub const MAX_RESULTS: usize = 1000;

/// The service provider configuration (RFC 7643 §5).
pub fn service_provider_config(base: &str, basic: bool, bearer: bool) -> Value {
    let mut schemes = Vec::new();
    if bearer {
        schemes.push(json!({"type": "oauthbearertoken", "name": "Bearer token", "description": "A static bearer token configured for this identity provider.", "primary": true}));
    }
    if basic {
        schemes.push(json!({"type": "httpbasic", "name": "HTTP Basic", "description": "A provisioning user name and password configured for this identity provider.", "primary": !bearer}));
    }
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/portcullis-proxy/portcullis#scim",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": schemes,
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_lookup_ignores_case() {
        assert_eq!(find(USER_ATTRIBUTES, "USERNAME").unwrap().name, "userName");
        assert!(
            find(USER_ATTRIBUTES, "password").is_none(),
            "password is never stored"
        );
    }

    #[test]
    fn schemas_declare_sub_attributes_and_uniqueness() {
        let all = schemas("https://x/scim");
        let user = &all[0];
        let user_name = &user["attributes"][0];
        assert_eq!(user_name["name"], "userName");
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["required"], true);
        let emails = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "emails")
            .unwrap();
        assert_eq!(emails["multiValued"], true);
        assert_eq!(emails["subAttributes"].as_array().unwrap().len(), 4);
    }
}
