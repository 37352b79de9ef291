//! Authorization: given an authenticated [`Identity`], may it enter?
//!
//! Pure functions, no I/O. A missing attribute never matches: a user without an email is
//! not admitted by an email rule, whatever the rule says. The reason for a refusal is kept
//! so the 403 page and the log can say why.
//!
//! The rules: a user whose provisioning (SCIM) says no is refused whatever else holds;
//! then, if neither `allowed_users` nor `allowed_groups` is set, every authenticated user
//! enters; otherwise a user enters when their email or user name is listed, or when one
//! of their groups (from the provider) or teams (from SCIM) is listed.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;

use portcullis_core::Identity;

pub mod routes;

pub use routes::{Route, RouteDecision, RouteTable};

/// Who may enter.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Lowercased emails and user names.
    allowed_users: HashSet<String>,
    /// Lowercased group and team names.
    allowed_groups: HashSet<String>,
}

/// What provisioning (SCIM) knows of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// Not consulted (no directory for this provider, or an established session whose
    /// revocation provisioning drives directly).
    NotChecked,
    Active,
    /// Provisioned but deactivated.
    Inactive,
    /// Not provisioned, and provisioning is required.
    Missing,
}

/// Everything a decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub identity: &'a Identity,
    /// Teams from the directory, besides the provider's groups.
    pub teams: &'a [String],
    pub provisioning: Provisioning,
}

impl<'a> Subject<'a> {
    pub fn new(identity: &'a Identity) -> Self {
        Subject {
            identity,
            teams: &[],
            provisioning: Provisioning::NotChecked,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    Allow,
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Not in `OAUTH_ALLOWED_USERS` and in none of the allowed groups.
    NotAllowedUser { user: String, groups_listed: bool },
    /// The identity provider deactivated the user (SCIM `active: false`).
    Deactivated { user: String },
    /// Provisioning is required and the user was never provisioned.
    NotProvisioned { user: String },
    /// A route's `deny` names the user.
    RouteDenied { user: String, route: String },
    /// No condition of the route's `allow` holds for the user.
    RouteNotAllowed { user: String, route: String },
}

impl DenyReason {
    /// The kind of refusal, for a metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            DenyReason::NotAllowedUser { .. } => "not_allowed",
            DenyReason::Deactivated { .. } => "deactivated",
            DenyReason::NotProvisioned { .. } => "not_provisioned",
            DenyReason::RouteDenied { .. } => "route_denied",
            DenyReason::RouteNotAllowed { .. } => "route_not_allowed",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NotAllowedUser {
                user,
                groups_listed: false,
            } => {
                write!(
                    f,
                    "{user} is not on this application's list of allowed users"
                )
            }
            DenyReason::NotAllowedUser {
                user,
                groups_listed: true,
            } => write!(
                f,
                "{user} is not on this application's list of allowed users, nor in one of its allowed groups"
            ),
            DenyReason::Deactivated { user } => {
                write!(f, "{user} has been deactivated by the identity provider")
            }
            DenyReason::NotProvisioned { user } => write!(
                f,
                "{user} has not been provisioned for this application by the identity provider"
            ),
            DenyReason::RouteDenied { user, route } => {
                write!(
                    f,
                    "{user} is refused on this part of the application ({route})"
                )
            }
            DenyReason::RouteNotAllowed { user, route } => write!(
                f,
                "{user} is not among those allowed on this part of the application ({route})"
            ),
        }
    }
}

fn lowered(items: &[String]) -> HashSet<String> {
    items
        .iter()
        .map(|u| u.trim().to_lowercase())
        .filter(|u| !u.is_empty())
        .collect()
}

impl Policy {
    /// A policy admitting the listed emails or user names, and members of the listed
    /// groups, all compared case-insensitively.
    pub fn new(allowed_users: &[String], allowed_groups: &[String]) -> Self {
        Policy {
            allowed_users: lowered(allowed_users),
            allowed_groups: lowered(allowed_groups),
        }
    }

    fn listed(set: &HashSet<String>, value: &str) -> bool {
        // Most values arrive lowercase already: look up without allocating then.
        if value.bytes().any(|b| b.is_ascii_uppercase()) || !value.is_ascii() {
            set.contains(&value.trim().to_lowercase())
        } else {
            set.contains(value.trim())
        }
    }

    pub fn decide(&self, subject: &Subject<'_>) -> PolicyDecision {
        let who = subject.identity;
        let user = || who.display().to_string();
        match subject.provisioning {
            Provisioning::Inactive => {
                return PolicyDecision::Deny(DenyReason::Deactivated { user: user() });
            }
            Provisioning::Missing => {
                return PolicyDecision::Deny(DenyReason::NotProvisioned { user: user() });
            }
            Provisioning::Active | Provisioning::NotChecked => {}
        }
        if self.allowed_users.is_empty() && self.allowed_groups.is_empty() {
            return PolicyDecision::Allow;
        }
        let user_listed = [&who.email(), &who.username()]
            .iter()
            .filter_map(|v| v.as_deref())
            .any(|v| Self::listed(&self.allowed_users, v));
        let group_listed = !self.allowed_groups.is_empty()
            && who
                .groups
                .iter()
                .chain(subject.teams.iter())
                .any(|g| Self::listed(&self.allowed_groups, g));
        if user_listed || group_listed {
            PolicyDecision::Allow
        } else {
            PolicyDecision::Deny(DenyReason::NotAllowedUser {
                user: user(),
                groups_listed: !self.allowed_groups.is_empty(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(email: Option<&str>, username: Option<&str>) -> Identity {
        Identity::from(portcullis_core::IdentityFields {
            id: "subject-1".into(),
            email: email.map(Into::into),
            name: None,
            username: username.map(Into::into),
            groups: vec![],
            provider: "oidc".into(),
            ..portcullis_core::IdentityFields::default()
        })
    }

    fn policy(users: &[&str]) -> Policy {
        Policy::new(
            &users.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[],
        )
    }

    fn decide(p: &Policy, w: &Identity) -> PolicyDecision {
        p.decide(&Subject::new(w))
    }

    #[test]
    fn an_empty_list_admits_every_authenticated_user() {
        assert_eq!(
            decide(&policy(&[]), &who(None, None)),
            PolicyDecision::Allow
        );
        assert_eq!(
            decide(&policy(&[" ", ""]), &who(None, None)),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn email_matches_case_insensitively() {
        let p = policy(&["Alice@Example.com"]);
        assert_eq!(
            decide(&p, &who(Some("alice@example.COM"), None)),
            PolicyDecision::Allow
        );
        assert_eq!(
            decide(&p, &who(Some("alice@example.com"), None)),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn user_name_matches() {
        let p = policy(&["octocat"]);
        assert_eq!(
            decide(&p, &who(None, Some("OctoCat"))),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn anyone_else_is_refused_with_a_reason_naming_them() {
        let p = policy(&["alice@example.com", "octocat"]);
        assert_eq!(
            decide(&p, &who(Some("mallory@example.com"), Some("mallory"))),
            PolicyDecision::Deny(DenyReason::NotAllowedUser {
                user: "mallory@example.com".into(),
                groups_listed: false
            })
        );
    }

    #[test]
    fn a_missing_email_and_user_name_never_match() {
        let p = policy(&["subject-1"]);
        // The subject id is not an email or a user name: a list entry equal to it does
        // not admit the user.
        assert!(matches!(
            decide(&p, &who(None, None)),
            PolicyDecision::Deny(_)
        ));
    }

    #[test]
    fn a_partial_match_is_not_a_match() {
        let p = policy(&["alice@example.com"]);
        assert!(matches!(
            decide(&p, &who(Some("alice@example.com.evil.test"), None)),
            PolicyDecision::Deny(_)
        ));
        assert!(matches!(
            decide(&p, &who(Some("xalice@example.com"), None)),
            PolicyDecision::Deny(_)
        ));
    }

    #[test]
    fn provider_groups_and_directory_teams_admit_members_of_allowed_groups() {
        let p = Policy::new(&["boss@example.com".into()], &["Platform".into()]);
        let mut w = who(Some("dev@example.com"), None);
        assert!(matches!(
            decide(&p, &w),
            PolicyDecision::Deny(DenyReason::NotAllowedUser {
                groups_listed: true,
                ..
            })
        ));
        w.groups = vec!["platform".into()];
        assert_eq!(decide(&p, &w), PolicyDecision::Allow);
        w.groups.clear();
        let teams = vec!["PLATFORM".to_string()];
        let subject = Subject {
            identity: &w,
            teams: &teams,
            provisioning: Provisioning::Active,
        };
        assert_eq!(p.decide(&subject), PolicyDecision::Allow);
        // The listed user still enters without the group.
        assert_eq!(
            decide(&p, &who(Some("boss@example.com"), None)),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn deactivated_or_unprovisioned_users_are_refused_whatever_their_groups() {
        let p = Policy::new(&[], &["admins".into()]);
        let mut w = who(Some("a@example.com"), None);
        w.groups = vec!["admins".into()];
        for (provisioning, expected) in [
            (Provisioning::Inactive, "deactivated"),
            (Provisioning::Missing, "not been provisioned"),
        ] {
            let decision = p.decide(&Subject {
                identity: &w,
                teams: &[],
                provisioning,
            });
            match decision {
                PolicyDecision::Deny(reason) => {
                    assert!(reason.to_string().contains(expected), "{reason}")
                }
                PolicyDecision::Allow => panic!("{provisioning:?} admitted"),
            }
        }
        let open = Policy::new(&[], &[]);
        assert!(matches!(
            open.decide(&Subject {
                identity: &w,
                teams: &[],
                provisioning: Provisioning::Inactive
            }),
            PolicyDecision::Deny(_)
        ));
    }
}
