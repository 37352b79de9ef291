//! Authorization: given an authenticated [`Identity`], may it enter?
//!
//! Pure functions, no I/O. A missing attribute never matches: a user without an email is
//! not admitted by an email rule, whatever the rule says. The reason for a refusal is kept
//! so the 403 page and the log can say why.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;

use portcullis_core::Identity;

/// Who may enter.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Lowercased emails and user names; empty admits every authenticated user.
    allowed_users: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    Allow,
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Neither the email nor the user name is in `OAUTH_ALLOWED_USERS`.
    NotAllowedUser { user: String },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NotAllowedUser { user } => write!(
                f,
                "{user} is not on this application's list of allowed users"
            ),
        }
    }
}

impl Policy {
    /// A policy admitting the listed emails or user names, compared case-insensitively.
    pub fn new(allowed_users: &[String]) -> Self {
        Policy {
            allowed_users: allowed_users
                .iter()
                .map(|u| u.trim().to_lowercase())
                .filter(|u| !u.is_empty())
                .collect(),
        }
    }

    pub fn decide(&self, who: &Identity) -> PolicyDecision {
        if self.allowed_users.is_empty() {
            return PolicyDecision::Allow;
        }
        let listed = |v: &Option<String>| {
            v.as_deref()
                .is_some_and(|s| self.allowed_users.contains(&s.trim().to_lowercase()))
        };
        if listed(&who.email) || listed(&who.username) {
            PolicyDecision::Allow
        } else {
            PolicyDecision::Deny(DenyReason::NotAllowedUser {
                user: who.display().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(email: Option<&str>, username: Option<&str>) -> Identity {
        Identity {
            id: "subject-1".into(),
            email: email.map(str::to_string),
            name: None,
            username: username.map(str::to_string),
            groups: vec![],
            provider: "oidc".into(),
        }
    }

    fn policy(users: &[&str]) -> Policy {
        Policy::new(&users.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn an_empty_list_admits_every_authenticated_user() {
        assert_eq!(policy(&[]).decide(&who(None, None)), PolicyDecision::Allow);
        assert_eq!(
            policy(&[" ", ""]).decide(&who(None, None)),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn email_matches_case_insensitively() {
        let p = policy(&["Alice@Example.com"]);
        assert_eq!(
            p.decide(&who(Some("alice@example.COM"), None)),
            PolicyDecision::Allow
        );
    }

    #[test]
    fn user_name_matches() {
        let p = policy(&["octocat"]);
        assert_eq!(p.decide(&who(None, Some("OctoCat"))), PolicyDecision::Allow);
    }

    #[test]
    fn anyone_else_is_refused_with_a_reason_naming_them() {
        let p = policy(&["alice@example.com", "octocat"]);
        assert_eq!(
            p.decide(&who(Some("mallory@example.com"), Some("mallory"))),
            PolicyDecision::Deny(DenyReason::NotAllowedUser {
                user: "mallory@example.com".into()
            })
        );
    }

    #[test]
    fn a_missing_email_and_user_name_never_match() {
        let p = policy(&["subject-1"]);
        // The subject id is not an email or a user name: a list entry equal to it does
        // not admit the user.
        assert!(matches!(
            p.decide(&who(None, None)),
            PolicyDecision::Deny(_)
        ));
    }

    #[test]
    fn a_partial_match_is_not_a_match() {
        let p = policy(&["alice@example.com"]);
        assert!(matches!(
            p.decide(&who(Some("alice@example.com.evil.test"), None)),
            PolicyDecision::Deny(_)
        ));
        assert!(matches!(
            p.decide(&who(Some("xalice@example.com"), None)),
            PolicyDecision::Deny(_)
        ));
    }
}
