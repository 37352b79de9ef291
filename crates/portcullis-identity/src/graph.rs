//! Microsoft Graph, for Entra users in more groups than fit in a token ("group overage").
//!
//! When a user belongs to more groups than Entra puts in an ID token (200), the token
//! carries `_claim_names: {"groups": "src1"}` instead of `groups`. The groups are then read
//! from Graph's `/me/transitiveMemberOf` (direct and nested memberships), page by page,
//! with the access token of the login (delegated `User.Read` and `GroupMember.Read.All`).
//! Groups are reported by object id, exactly as the `groups` claim reports them.

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::discovery::error_chain;

/// More pages than this is a misbehaving server, not a user.
const MAX_PAGES: usize = 200;

/// Whether the claims say the groups did not fit and must be fetched.
pub fn has_group_overage(claims: &Map<String, Value>, groups_claim: &str) -> bool {
    claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(groups_claim))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Member>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct Member {
    id: Option<String>,
    #[serde(rename = "@odata.type")]
    kind: Option<String>,
}

/// Every group the signed-in user is a member of, directly or through other groups.
pub async fn transitive_groups(
    http: &reqwest::Client,
    graph: &Url,
    access_token: &str,
) -> Result<Vec<String>, String> {
    let first = graph
        .join("v1.0/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999")
        .map_err(|e| format!("graph_url cannot be joined: {e}"))?;
    let mut next = Some(first);
    let mut groups = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(format!("more than {MAX_PAGES} pages of groups"));
        }
        let response = http
            .get(url.clone())
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("Microsoft Graph unreachable: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "Microsoft Graph answered {status} (does the app have the delegated GroupMember.Read.All permission, with admin consent?)"
            ));
        }
        let page: Page = response.json().await.map_err(|e| {
            format!("Microsoft Graph answered something that is not a page of groups: {e}")
        })?;
        groups.extend(
            page.value
                .into_iter()
                .filter(|m| {
                    m.kind
                        .as_deref()
                        .is_none_or(|k| k == "#microsoft.graph.group")
                })
                .filter_map(|m| m.id),
        );
        if let Some(link) = page.next_link {
            let link = Url::parse(&link).map_err(|e| format!("bad @odata.nextLink: {e}"))?;
            // The access token goes only to Graph itself, never where a page points.
            if link.origin() != graph.origin() {
                return Err(format!(
                    "@odata.nextLink points to another host ({})",
                    link.origin().ascii_serialization()
                ));
            }
            next = Some(link);
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overage_is_recognised_by_the_claim_names() {
        let with = json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "x"}}});
        assert!(has_group_overage(with.as_object().unwrap(), "groups"));
        let without = json!({"groups": ["a"]});
        assert!(!has_group_overage(without.as_object().unwrap(), "groups"));
        let other = json!({"_claim_names": {"roles": "src1"}});
        assert!(!has_group_overage(other.as_object().unwrap(), "groups"));
    }
}
