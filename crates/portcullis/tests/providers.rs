//! Every kind of identity provider, end to end through the real binary configured by
//! environment variables only: GitHub against an in-process fake of its OAuth endpoints
//! and REST API (GitHub cannot be reached from here), Microsoft Entra, Google, ADFS, Okta,
//! Auth0 and custom providers against the real `oidc-provider` (with the claims each of
//! them issues), Entra's group overage against a fake Microsoft Graph.
#![allow(clippy::unwrap_used)]

use portcullis_testkit::fakes::{FakeGitHub, FakeGraph, GitHubUser};
use portcullis_testkit::prelude::*;
use serde_json::json;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";

struct Env(Vec<(String, String)>);

impl Env {
    fn new(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn set(mut self, k: &str, v: impl Into<String>) -> Env {
        self.0.push((k.into(), v.into()));
        self
    }

    async fn start(self, port: u16, upstream: &EchoUpstream) -> Portcullis {
        let mut b = Portcullis::builder()
            .port(port)
            .env("UPSTREAM_URL", upstream.url())
            .env("COOKIE_SECRET", SECRET);
        for (k, v) in &self.0 {
            b = b.env(k, v.clone());
        }
        b.wait_ready().start().await
    }
}

fn redirect_for(port: u16) -> String {
    format!("http://127.0.0.1:{port}/api/v1/auth/callback")
}

// ---------------------------------------------------------------------------------------
// GitHub

fn octocat() -> GitHubUser {
    GitHubUser {
        id: 583231,
        login: "octocat".into(),
        name: Some("The Octocat".into()),
        email: None,
        // The primary, verified address is on the second page.
        emails: vec![
            ("old@users.example".into(), false, true),
            (
                "583231+octocat@users.noreply.github.com".into(),
                false,
                true,
            ),
            ("octo@acme.example".into(), true, true),
        ],
        // The admitting organization and team are on the second pages.
        orgs: vec!["github".into(), "octo-labs".into(), "Acme".into()],
        teams: vec![
            ("octo-labs".into(), "docs".into()),
            ("octo-labs".into(), "ops".into()),
            ("Acme".into(), "platform".into()),
        ],
        no_email_scope: false,
    }
}

async fn github_setup(extra: &[(&str, &str)]) -> (FakeGitHub, EchoUpstream, Portcullis) {
    let github = FakeGitHub::start("gh-client-id", "gh-client-secret").await;
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let mut env = Env::new(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "github"),
        ("OAUTH_CLIENT_ID", "gh-client-id"),
        ("OAUTH_CLIENT_SECRET", "gh-client-secret"),
    ])
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    // GitHub Enterprise: the web endpoints here, the API under /api/v3.
    .set("OAUTH_GITHUB_URL", github.url());
    for (k, v) in extra {
        env = env.set(k, *v);
    }
    let p = env.start(port, &upstream).await;
    (github, upstream, p)
}

#[tokio::test]
async fn github_signs_in_members_of_the_allowed_organization_with_their_verified_email() {
    let (github, _upstream, p) = github_setup(&[("OAUTH_GITHUB_ORGS", "acme")]).await;
    assert!(
        p.wait_for_log("OAuth enabled with provider: github").await,
        "{}",
        p.logs()
    );
    github.sign_in_as(octocat());
    let browser = Browser::new();
    let first = browser.get(&p.url("/repos?tab=stars")).await;
    assert_eq!(first.status, 302);
    let authorize = url::Url::parse(&first.location().unwrap()).unwrap();
    assert_eq!(authorize.path(), "/login/oauth/authorize");
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    // The design documents' default scopes, plus read:org for the organization check.
    assert_eq!(q["scope"], "read:user user:email read:org");
    assert_eq!(q["code_challenge_method"], "S256");
    let landed = browser.follow(first).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(landed.url.as_str(), p.url("/repos?tab=stars"));
    let echo = landed.json();
    assert_eq!(echo_header(&echo, "x-forwarded-user"), Some("583231"));
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("octo@acme.example")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-preferred-username"),
        Some("octocat")
    );
    assert_eq!(echo_header(&echo, "x-forwarded-provider"), Some("github"));
    assert_eq!(
        echo_header(&echo, "x-forwarded-groups"),
        Some("github,octo-labs,acme,octo-labs:docs,octo-labs:ops,acme:platform")
    );
    // Every page was read, and only over the API with the token.
    let pages: Vec<String> = github
        .server
        .requests_to("/api/v3/user/orgs")
        .iter()
        .map(|s| s.query("page").unwrap_or_else(|| "1".into()))
        .collect();
    assert_eq!(pages, vec!["1", "2"]);
    assert_eq!(github.server.requests_to("/api/v3/user/emails").len(), 2);
    let me = browser.get(&p.url("/api/v1/auth/me")).await.json();
    assert_eq!(me["provider"], "github");
    assert_eq!(me["username"], "octocat");
    assert_eq!(me["name"], "The Octocat");

    // Someone outside the organization is refused, and the log says who and why.
    github.sign_in_as(GitHubUser {
        id: 99,
        login: "outsider".into(),
        email: Some("outsider@example.org".into()),
        orgs: vec!["elsewhere".into()],
        ..GitHubUser::default()
    });
    let stranger = Browser::new();
    let refused = stranger.navigate(&p.url("/")).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body.contains("outsider@example.org"),
        "{}",
        refused.body
    );
    assert!(
        p.wait_for_log("User not allowed: outsider@example.org")
            .await,
        "{}",
        p.logs()
    );
    assert!(stranger.cookie("127.0.0.1", "session_token").is_none());
}

#[tokio::test]
async fn github_teams_admit_and_an_unverified_email_is_never_used() {
    let (github, _upstream, p) = github_setup(&[("OAUTH_GITHUB_TEAMS", "acme/platform")]).await;
    // Primary address unverified, no public email: signed in, but without an email.
    github.sign_in_as(GitHubUser {
        id: 7,
        login: "mallory".into(),
        email: None,
        emails: vec![("ceo@acme.example".into(), true, false)],
        orgs: vec!["acme".into()],
        teams: vec![("acme".into(), "platform".into())],
        ..GitHubUser::default()
    });
    let browser = Browser::new();
    let landed = browser.navigate(&p.url("/")).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let echo = landed.json();
    assert_eq!(echo_header(&echo, "x-forwarded-email"), None);
    assert_eq!(
        echo_header(&echo, "x-forwarded-preferred-username"),
        Some("mallory")
    );

    // In the organization but not the team: refused.
    github.sign_in_as(GitHubUser {
        id: 8,
        login: "trent".into(),
        orgs: vec!["acme".into()],
        teams: vec![("acme".into(), "sales".into())],
        ..GitHubUser::default()
    });
    let other = Browser::new();
    assert_eq!(other.navigate(&p.url("/")).await.status, 403);
}

#[tokio::test]
async fn an_allow_list_of_github_users_matches_the_login_or_the_email() {
    let (github, _upstream, p) = github_setup(&[("OAUTH_ALLOWED_USERS", "octocat")]).await;
    // Without the user:email scope the private address cannot be read: octocat still
    // signs in (the allow-list names the login), without an email.
    github.sign_in_as(GitHubUser {
        no_email_scope: true,
        ..octocat()
    });
    let browser = Browser::new();
    let landed = browser.navigate(&p.url("/")).await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(echo_header(&landed.json(), "x-forwarded-email"), None);
    assert!(
        p.wait_for_log("no email for the user").await,
        "{}",
        p.logs()
    );
    // Without read:org (no restriction configured), organizations are not even asked.
    assert!(github.server.requests_to("/api/v3/user/orgs").is_empty());
    github.sign_in_as(GitHubUser {
        id: 5,
        login: "hubot".into(),
        email: Some("hubot@example.org".into()),
        ..GitHubUser::default()
    });
    let other = Browser::new();
    assert_eq!(other.navigate(&p.url("/")).await.status, 403);
}

// ---------------------------------------------------------------------------------------
// Microsoft Entra ID

/// An Entra-like provider: `tid`, `oid`, the email only in `preferred_username`, every
/// claim in the ID token. alice is in too many groups (overage), carol in one, bob is
/// from another tenant.
async fn entra_provider(redirect: &str) -> OidcProvider {
    OidcProvider::start_with(
        "entra-app-id",
        "entra-client-secret",
        &[redirect],
        json!({
            "idTokenClaims": true,
            "groups": {"carol": ["6f1d7c2a-small-group"]},
            "accounts": {
                "alice": {
                    "tid": TENANT, "oid": "00000000-0000-0000-0000-00000000a11c",
                    "email": null, "preferred_username": "alice@contoso.example",
                    "_claim_names": {"groups": "src1"},
                    "_claim_sources": {"src1": {"endpoint": format!("https://graph.windows.net/{TENANT}/users/a11c/getMemberObjects")}},
                },
                "carol": {"tid": TENANT, "oid": "00000000-0000-0000-0000-0000000ca201", "email": null, "preferred_username": "carol@contoso.example"},
                "bob": {"tid": OTHER_TENANT, "oid": "00000000-0000-0000-0000-000000000b0b", "email": null, "preferred_username": "bob@fabrikam.example"},
            },
        }),
    )
    .await
}

async fn entra_setup(
    graph: &FakeGraph,
    extra: &[(&str, &str)],
) -> (OidcProvider, EchoUpstream, Portcullis) {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = entra_provider(&redirect_for(port)).await;
    let mut env = Env::new(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "entra"),
        ("OAUTH_CLIENT_ID", "entra-app-id"),
        ("OAUTH_CLIENT_SECRET", "entra-client-secret"),
        ("OAUTH_SCOPES", "openid,profile,email,groups"),
    ])
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    // login.microsoftonline.com cannot be reached from here: the real oidc-provider
    // stands in for it at its own issuer, and the fake Graph for Microsoft Graph.
    .set("OAUTH_ISSUER_URL", op.issuer.clone())
    .set("OAUTH_GRAPH_URL", graph.url());
    if !extra.iter().any(|(k, _)| *k == "OAUTH_TENANT_ID") {
        env = env.set("OAUTH_TENANT_ID", TENANT);
    }
    for (k, v) in extra {
        env = env.set(k, *v);
    }
    let p = env.start(port, &upstream).await;
    (op, upstream, p)
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn entra_reads_the_groups_of_an_overage_user_from_graph_page_by_page() {
    let graph = FakeGraph::start(vec!["g-1", "g-2", "g-3", "g-4", "g-5"], false).await;
    let (_op, _upstream, p) = entra_setup(&graph, &[("AUTH__ALLOWED_GROUPS", "g-5")]).await;
    assert!(
        p.wait_for_log("OAuth enabled with provider: entra").await,
        "{}",
        p.logs()
    );
    let browser = Browser::new();
    let login = browser.navigate(&p.url("/portal")).await;
    let landed = op_sign_in(&browser, &login, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let echo = landed.json();
    // The user id is oid (the same in every app of the tenant), the email comes from
    // preferred_username, the groups from both Graph pages.
    assert_eq!(
        echo_header(&echo, "x-forwarded-user"),
        Some("00000000-0000-0000-0000-00000000a11c")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("alice@contoso.example")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-groups"),
        Some("g-1,g-2,g-3,g-4,g-5")
    );
    let calls = graph
        .server
        .requests_to("/v1.0/me/transitiveMemberOf/microsoft.graph.group");
    assert_eq!(calls.len(), 2, "{:?}", graph.server.paths());
    assert!(
        calls
            .iter()
            .all(|c| c.bearer().is_some_and(|t| !t.is_empty()))
    );

    // Without overage, the groups claim is used and Graph is not asked.
    let carol = Browser::new();
    let login = carol.navigate(&p.url("/")).await;
    let page = op_sign_in(&carol, &login, "carol").await;
    assert_eq!(page.status, 403, "carol is not in g-5: {page:?}");
    let me = carol.get(&p.url("/api/v1/auth/me")).await;
    assert_eq!(me.status, 401);
    assert_eq!(graph.server.paths().len(), 2);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn when_graph_fails_the_overage_user_has_no_groups_and_a_group_rule_refuses_them() {
    let graph = FakeGraph::start(vec!["g-1"], true).await;
    let (_op, _upstream, p) = entra_setup(&graph, &[("AUTH__ALLOWED_GROUPS", "g-1")]).await;
    let browser = Browser::new();
    let login = browser.navigate(&p.url("/")).await;
    let page = op_sign_in(&browser, &login, "alice").await;
    assert_eq!(page.status, 403, "{page:?}");
    assert!(
        p.wait_for_log("cannot read the groups from Microsoft Graph, so the user has no groups")
            .await,
        "{}",
        p.logs()
    );
    assert!(p.wait_for_log("503").await, "{}", p.logs());
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn entra_refuses_users_of_another_tenant() {
    let graph = FakeGraph::start(vec![], false).await;
    let (_op, _upstream, p) = entra_setup(&graph, &[]).await;
    let browser = Browser::new();
    let login = browser.navigate(&p.url("/")).await;
    let page = op_sign_in(&browser, &login, "bob").await;
    assert_eq!(page.status, 403, "{page:?}");
    assert!(page.body.contains(OTHER_TENANT), "{}", page.body);
    assert!(
        p.wait_for_log("User not allowed: bob@fabrikam.example")
            .await,
        "{}",
        p.logs()
    );
    // carol, of the configured tenant, is let in.
    let carol = Browser::new();
    let login = carol.navigate(&p.url("/")).await;
    assert_eq!(op_sign_in(&carol, &login, "carol").await.status, 200);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn a_multi_tenant_entra_app_admits_only_the_listed_tenants() {
    let graph = FakeGraph::start(vec!["g-1", "g-2"], false).await;
    let (_op, _upstream, p) = entra_setup(
        &graph,
        &[
            ("OAUTH_TENANT_ID", "organizations"),
            ("OAUTH_ALLOWED_TENANTS", TENANT),
        ],
    )
    .await;
    let alice = Browser::new();
    let login = alice.navigate(&p.url("/")).await;
    assert_eq!(op_sign_in(&alice, &login, "alice").await.status, 200);
    let bob = Browser::new();
    let login = bob.navigate(&p.url("/")).await;
    assert_eq!(op_sign_in(&bob, &login, "bob").await.status, 403);

    // Without the list, the configuration is refused before anyone can sign in.
    let (code, out) = run_portcullis(
        &["check", "--offline"],
        &[
            ("OAUTH_ENABLED", "true"),
            ("OAUTH_PROVIDER", "entra"),
            ("OAUTH_TENANT_ID", "common"),
            ("OAUTH_CLIENT_ID", "c"),
            (
                "OAUTH_REDIRECT_URL",
                "https://app.example.com/api/v1/auth/callback",
            ),
            ("COOKIE_SECRET", SECRET),
            ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("OAUTH_ALLOWED_TENANTS"), "{out}");
}

// ---------------------------------------------------------------------------------------
// The nested dialect: Okta, Auth0, Google, ADFS, custom and GitHub side by side

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn google_admits_only_its_hosted_domain() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = OidcProvider::start_with(
        "google-client",
        "google-secret",
        &[&redirect_for(port)],
        json!({
            "idTokenClaims": true,
            "accounts": {"alice": {"hd": "example.com"}, "eve": {"hd": "gmail.example"}, "frank": {"email_verified": true}},
        }),
    )
    .await;
    let p = Env::new(&[
        ("AUTH__OPENID_CONNECT__GOOGLE__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__GOOGLE__CLIENT_ID", "google-client"),
        (
            "AUTH__OPENID_CONNECT__GOOGLE__CLIENT_SECRET",
            "google-secret",
        ),
        ("AUTH__OPENID_CONNECT__GOOGLE__HOSTED_DOMAIN", "example.com"),
    ])
    .set(
        "AUTH__OPENID_CONNECT__GOOGLE__DISCOVERY_URL",
        op.issuer.clone(),
    )
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    .start(port, &upstream)
    .await;
    let browser = Browser::new();
    let first = browser.get(&p.url("/")).await;
    assert!(first.location().unwrap().contains("hd=example.com"));
    let login = browser.follow(first).await;
    let landed = op_sign_in(&browser, &login, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(
        echo_header(&landed.json(), "x-forwarded-provider"),
        Some("google")
    );
    for outsider in ["eve", "frank"] {
        let b = Browser::new();
        let login = b.navigate(&p.url("/")).await;
        let page = op_sign_in(&b, &login, outsider).await;
        assert_eq!(page.status, 403, "{outsider}: {page:?}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn adfs_users_are_known_by_their_upn() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = OidcProvider::start_with(
        "adfs-client",
        "adfs-secret",
        &[&redirect_for(port)],
        json!({
            "idTokenClaims": true,
            "accounts": {"dan": {"email": null, "preferred_username": null, "upn": "dan@corp.example"}},
        }),
    )
    .await;
    let p = Env::new(&[
        ("AUTH__OPENID_CONNECT__ADFS__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__ADFS__CLIENT_ID", "adfs-client"),
        ("AUTH__OPENID_CONNECT__ADFS__CLIENT_SECRET", "adfs-secret"),
        ("OAUTH_ALLOWED_USERS", "dan@corp.example"),
    ])
    .set(
        "AUTH__OPENID_CONNECT__ADFS__DISCOVERY_URL",
        op.issuer.clone(),
    )
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    .start(port, &upstream)
    .await;
    let browser = Browser::new();
    let login = browser.navigate(&p.url("/")).await;
    let landed = op_sign_in(&browser, &login, "dan").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let echo = landed.json();
    assert_eq!(
        echo_header(&echo, "x-forwarded-email"),
        Some("dan@corp.example")
    );
    assert_eq!(
        echo_header(&echo, "x-forwarded-preferred-username"),
        Some("dan@corp.example")
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm): run scripts/test"
)]
async fn several_providers_at_once_each_sign_in_and_record_their_name() {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let redirect = redirect_for(port);
    let client = |id: &str, secret: &str| {
        json!({"client_id": id, "client_secret": secret, "redirect_uris": [redirect.clone()],
               "grant_types": ["authorization_code"], "response_types": ["code"]})
    };
    // Okta and a custom provider at one issuer (two clients), Auth0 at another.
    let okta = OidcProvider::start_with(
        "okta-client",
        "okta-secret",
        &[],
        json!({"clients": [client("okta-client", "okta-secret"), client("custom-client", "custom-secret")]}),
    )
    .await;
    let auth0 = OidcProvider::start("auth0-client", "auth0-secret", &[&redirect], json!({})).await;
    let github = FakeGitHub::start("gh-client-id", "gh-client-secret").await;
    let mut env = Env::new(&[]).set("OAUTH_REDIRECT_URL", redirect.clone());
    for (name, op, id, secret) in [
        ("OKTA", &okta, "okta-client", "okta-secret"),
        ("AUTH0", &auth0, "auth0-client", "auth0-secret"),
        ("CUSTOM", &okta, "custom-client", "custom-secret"),
    ] {
        env = env
            .set(&format!("AUTH__OPENID_CONNECT__{name}__ENABLED"), "true")
            .set(&format!("AUTH__OPENID_CONNECT__{name}__CLIENT_ID"), id)
            .set(
                &format!("AUTH__OPENID_CONNECT__{name}__CLIENT_SECRET"),
                secret,
            )
            .set(
                &format!("AUTH__OPENID_CONNECT__{name}__DISCOVERY_URL"),
                format!("{}/.well-known/openid-configuration", op.issuer),
            );
    }
    let p = env
        .set("AUTH__OPENID_CONNECT__CUSTOM__DISPLAY_NAME", "Acme SSO")
        .set(
            "AUTH__OPENID_CONNECT__AUTH0__AUTH_URL_PARAMS__AUDIENCE",
            "https://api.acme.example",
        )
        .set("AUTH__OPENID_CONNECT__GITHUB__ENABLED", "true")
        .set("AUTH__OPENID_CONNECT__GITHUB__CLIENT_ID", "gh-client-id")
        .set(
            "AUTH__OPENID_CONNECT__GITHUB__CLIENT_SECRET",
            "gh-client-secret",
        )
        .set("AUTH__OPENID_CONNECT__GITHUB__WEB_URL", github.url())
        // A disabled provider's settings are accepted and ignored.
        .set("AUTH__OPENID_CONNECT__GOOGLE__ENABLED", "false")
        .set("AUTH__OPENID_CONNECT__GOOGLE__CLIENT_ID", "unused")
        .start(port, &upstream)
        .await;

    // The login page offers one button per enabled provider.
    let browser = Browser::new();
    let page = browser.navigate(&p.url("/wiki")).await;
    assert_eq!(page.status, 200);
    for label in [
        "Log in with Okta",
        "Log in with Auth0",
        "Log in with Acme SSO",
        "Log in with GitHub",
    ] {
        assert!(page.body.contains(label), "{label}: {}", page.body);
    }
    assert!(!page.body.contains("Google"), "{}", page.body);

    // ?provider= skips the page; Auth0 gets its audience parameter.
    let to_auth0 = browser
        .get(&p.url("/api/v1/auth/login?provider=auth0&rd=%2Fwiki"))
        .await;
    let location = to_auth0.location().unwrap();
    assert!(location.starts_with(&auth0.issuer), "{location}");
    assert!(
        location.contains("audience=https%3A%2F%2Fapi.acme.example"),
        "{location}"
    );
    let login = browser.follow(to_auth0).await;
    let landed = op_sign_in(&browser, &login, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    assert_eq!(landed.url.as_str(), p.url("/wiki"));
    assert_eq!(
        echo_header(&landed.json(), "x-forwarded-provider"),
        Some("auth0")
    );
    assert_eq!(
        browser.get(&p.url("/api/v1/auth/me")).await.json()["provider"],
        "auth0"
    );

    for (name, user) in [("okta", "bob"), ("custom", "carol")] {
        let b = Browser::new();
        let login = b
            .navigate(&p.url(&format!("/api/v1/auth/login?provider={name}")))
            .await;
        let landed = op_sign_in(&b, &login, user).await;
        assert_eq!(landed.status, 200, "{name}: {landed:?}");
        let me = b.get(&p.url("/api/v1/auth/me")).await.json();
        assert_eq!(me["provider"], name);
        assert_eq!(me["email"], format!("{user}@example.com"));
    }

    github.sign_in_as(octocat());
    let third = Browser::new();
    let landed = third
        .navigate(&p.url("/api/v1/auth/login?provider=github"))
        .await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    let me = third.get(&p.url("/api/v1/auth/me")).await.json();
    assert_eq!(me["provider"], "github");
    assert_eq!(me["email"], "octo@acme.example");

    // An unknown provider name gets the page again, with a 400.
    let unknown = third.get(&p.url("/api/v1/auth/login?provider=nope")).await;
    assert_eq!(unknown.status, 400);
}

// ---------------------------------------------------------------------------------------
// Outbound calls: an HTTPS proxy, a private CA, an unreachable provider

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs nginx, oidc-provider (npm), openssl, tinyproxy: run scripts/test"
)]
async fn provider_calls_go_through_the_https_proxy_and_trust_the_extra_ca() {
    use portcullis_testkit::{Nginx, TestCa, Tinyproxy};
    // oidc-provider behind nginx on TLS, with a certificate from a private CA.
    let ca = TestCa::generate();
    let tls_port = free_port();
    let issuer = format!("https://127.0.0.1:{tls_port}");
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = OidcProvider::start_with(
        "proxied-client",
        "proxied-secret",
        &[&redirect_for(port)],
        json!({"issuer": issuer}),
    )
    .await;
    let _nginx = Nginx::start(
        &format!(
            "server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {}; ssl_certificate_key {};\n\
             location / {{ proxy_pass http://127.0.0.1:{}; proxy_set_header Host $http_host;\n\
             proxy_set_header X-Forwarded-Proto https; }} }}",
            ca.server_cert().display(),
            ca.server_key().display(),
            op.port
        ),
        tls_port,
    );
    let mut proxy = Tinyproxy::start();
    let p = Env::new(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_CLIENT_ID", "proxied-client"),
        ("OAUTH_CLIENT_SECRET", "proxied-secret"),
    ])
    .set("OAUTH_ISSUER_URL", issuer.clone())
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    .set("OUTBOUND__CA_FILE", ca.ca_pem().display().to_string())
    // The name the design documents use; HTTPS_PROXY works the same way.
    .set("GLOBAL_AGENT_HTTPS_PROXY", proxy.url())
    .start(port, &upstream)
    .await;

    let alice = Browser::new();
    let login = alice.navigate(&p.url("/")).await;
    assert!(login.url.as_str().starts_with(&issuer), "{}", login.url);
    let landed = op_sign_in(&alice, &login, "alice").await;
    assert_eq!(landed.status, 200, "{landed:?}\n{}", p.logs());
    // Discovery, keys, token and userinfo all went through the proxy, as CONNECT tunnels
    // to the provider (the TLS inside was checked against the private CA).
    let log = proxy.log();
    let tunnels = log
        .lines()
        .filter(|l| l.contains(&format!("CONNECT 127.0.0.1:{tls_port}")))
        .count();
    assert!(tunnels >= 1, "no tunnel to the provider:\n{log}");

    // The proxy goes away. A new sign-in cannot be completed (the code cannot be
    // exchanged): a clear 502 page, not a hang or a 500...
    proxy.stop();
    let bob = Browser::new();
    let login = bob.navigate(&p.url("/")).await;
    let failed = op_sign_in(&bob, &login, "bob").await;
    assert_eq!(failed.status, 502, "{failed:?}");
    assert!(
        failed.body.contains("cannot reach the identity provider"),
        "{}",
        failed.body
    );
    assert!(
        p.wait_for_log("OAuth token exchange failed").await,
        "{}",
        p.logs()
    );
    // ...while the sessions that exist keep working.
    assert_eq!(alice.get(&p.url("/still-here")).await.status, 200);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs oidc-provider (npm), tinyproxy: run scripts/test"
)]
async fn no_proxy_keeps_provider_calls_direct_even_with_a_proxy_set() {
    use portcullis_testkit::Tinyproxy;
    let proxy = Tinyproxy::start();
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let op = OidcProvider::start("np-client", "np-secret", &[&redirect_for(port)], json!({})).await;
    let p = Env::new(&[
        ("OAUTH_ENABLED", "true"),
        ("OAUTH_PROVIDER", "oidc"),
        ("OAUTH_CLIENT_ID", "np-client"),
        ("OAUTH_CLIENT_SECRET", "np-secret"),
        ("NO_PROXY", "127.0.0.1"),
    ])
    .set("OAUTH_ISSUER_URL", op.issuer.clone())
    .set("OAUTH_REDIRECT_URL", redirect_for(port))
    .set("HTTP_PROXY", proxy.url())
    .start(port, &upstream)
    .await;
    let browser = Browser::new();
    let login = browser.navigate(&p.url("/")).await;
    assert_eq!(op_sign_in(&browser, &login, "alice").await.status, 200);
    assert!(
        !proxy.log().contains("Request (file descriptor"),
        "NO_PROXY ignored:\n{}",
        proxy.log()
    );
}
