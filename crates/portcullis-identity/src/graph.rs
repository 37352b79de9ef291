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
pub(crate) fn has_group_overage(claims: &Map<String, Value>, groups_claim: &str) -> bool {
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
pub(crate) async fn transitive_groups(
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
        let response = crate::http::send(
            "graph.member_of",
            http.get(url.clone())
                .bearer_auth(access_token)
                .header("accept", "application/json"),
        )
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

    /// A one-route server answering every request with `body`, counting requests.
    async fn serve(body: String) -> (Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (Url::parse(&format!("http://{addr}/")).unwrap(), hits)
    }

    #[tokio::test]
    async fn the_access_token_never_follows_a_next_link_to_another_host() {
        let page = json!({
            "value": [{"@odata.type": "#microsoft.graph.group", "id": "g-1"}],
            "@odata.nextLink": "http://evil.example/v1.0/steal",
        });
        let (graph, hits) = serve(page.to_string()).await;
        let err = transitive_groups(&reqwest::Client::new(), &graph, "token")
            .await
            .unwrap_err();
        assert!(err.contains("another host"), "{err}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn directory_roles_in_the_answer_are_not_groups() {
        let page = json!({"value": [
            {"@odata.type": "#microsoft.graph.group", "id": "g-1"},
            {"@odata.type": "#microsoft.graph.directoryRole", "id": "role-1"},
        ]});
        let (graph, _) = serve(page.to_string()).await;
        let groups = transitive_groups(&reqwest::Client::new(), &graph, "token")
            .await
            .unwrap();
        assert_eq!(groups, vec!["g-1"]);
    }
}
