//! SCIM provisioning end to end: the requests Okta and Microsoft Entra really send,
//! replayed against the real binary, with the effect on access checked after each step
//! (a deprovisioned user's next proxied request is refused; a membership change shows in
//! the user's groups on their next request). Also bad input, and persistence.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_testkit::prelude::*;
use portcullis_testkit::{PostgresServer, RedisServer, TempDir};
use serde_json::{Value, json};

const OKTA_USER: &str = "okta-provisioner";
const OKTA_PASSWORD: &str = "okta-provisioning-password-123";
const ENTRA_TOKEN: &str = "entra-secret-token-0123456789abcdef";

/// A SCIM client: what Okta or Entra would be.
struct ScimClient {
    http: reqwest::Client,
    base: String,
    auth: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl ScimClient {
    fn okta(p: &Portcullis) -> Self {
        ScimClient {
            http: reqwest::Client::new(),
            base: p.url("/v1/scim/v2/okta"),
            auth: format!(
                "Basic {}",
                STANDARD.encode(format!("{OKTA_USER}:{OKTA_PASSWORD}"))
            ),
        }
    }

    fn entra(p: &Portcullis) -> Self {
        ScimClient {
            http: reqwest::Client::new(),
            base: p.url("/v1/scim/v2/microsoft"),
            auth: format!("Bearer {ENTRA_TOKEN}"),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .header("accept", "application/scim+json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send("PUT", path, Some(body)).await
    }
    async fn patch(&self, path: &str, ops: Value) -> Answer {
        self.send("PATCH", path, Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}))).await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None).await
    }
}

/// An upstream, the dev provider registered as `provider` with callbacks for `replicas`
/// ports, and a way to start replicas with SCIM on.
struct Site {
    upstream: EchoUpstream,
    idp: portcullis_devidp::DevIdp,
    ports: Vec<u16>,
    provider: &'static str,
    env: Vec<(String, String)>,
}

impl Site {
    async fn new(provider: &'static str, replicas: usize, env: &[(&str, &str)]) -> Site {
        let upstream = EchoUpstream::start().await;
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let idp = dev_idp(
            ports
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}/api/v1/auth/callback"))
                .collect(),
        )
        .await;
        Site {
            upstream,
            idp,
            ports,
            provider,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    async fn replica(&self, i: usize) -> Portcullis {
        let port = self.ports[i];
        let p = self.provider.to_uppercase();
        let mut b = Portcullis::builder()
            .port(port)
            .env(&format!("AUTH__OPENID_CONNECT__{p}__ENABLED"), "true")
            .env(
                &format!("AUTH__OPENID_CONNECT__{p}__CLIENT_ID"),
                "portcullis",
            )
            .env(
                &format!("AUTH__OPENID_CONNECT__{p}__CLIENT_SECRET"),
                "dev-secret",
            )
            .env(
                &format!("AUTH__OPENID_CONNECT__{p}__DISCOVERY_URL"),
                self.idp.issuer(),
            )
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("UPSTREAM_URL", self.upstream.url())
            .env("COOKIE_SECRET", SECRET)
            .env("SCIM__ENABLED", "true");
        for (k, v) in &self.env {
            b = b.env(k, v.clone());
        }
        b.wait_ready().start().await
    }
}

/// Signs `user` in through the dev provider (email `email`); returns the browser and the
/// status the login ended with.
async fn sign_in(p: &Portcullis, user: &str, email: &str) -> (Browser, Page) {
    let mut browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let page = browser
        .submit(&form, &[("username", user), ("email", email)])
        .await;
    browser.accept = "application/json".into();
    (browser, page)
}

fn groups_seen(page: &Page) -> Vec<String> {
    page.json()["headers"]["x-forwarded-groups"][0]
        .as_str()
        .map(|g| g.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

fn okta_env(database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SCIM__DATABASE_URL", database_url.to_string()),
        ("SCIM__ENDPOINTS__OKTA__USERNAME", OKTA_USER.into()),
        ("SCIM__ENDPOINTS__OKTA__PASSWORD", OKTA_PASSWORD.into()),
    ]
}

/// One Portcullis (and its SQLite directory, in the returned folder) with Okta's SCIM
/// endpoint and `extra` settings.
async fn okta_site(label: &str, extra: &[(&str, &str)]) -> (TempDir, Site) {
    let dir = TempDir::new(label);
    let url = format!("sqlite://{}", dir.path().join("directory.db").display());
    let env = okta_env(&url);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    let site = Site::new("okta", 1, &env).await;
    (dir, site)
}

#[tokio::test]
async fn okta_provisioning_traffic_controls_access_at_once() {
    let (_dir, site) = okta_site("scim-okta", &[]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);

    // Okta checks whether the user exists, then creates it.
    let found = okta
        .get("/Users?filter=userName%20eq%20%22alice%40example.com%22&startIndex=1&count=100")
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["totalResults"], 0);
    assert_eq!(found.headers["content-type"], "application/scim+json");
    let created = okta
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice@example.com",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"primary": true, "value": "alice@example.com", "type": "work"}],
                "displayName": "Alice Smith", "locale": "en-US", "externalId": "00u1okta",
                "groups": [], "password": "1mz050nq", "active": true
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let uid = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        p.url(&format!("/v1/scim/v2/okta/Users/{uid}"))
    );
    assert!(
        created.body.get("password").is_none(),
        "the password was returned"
    );
    assert_eq!(
        okta.get(&format!("/Users/{uid}")).await.body["name"]["givenName"],
        "Alice"
    );

    // Alice signs in: her userName matches.
    let (alice, landed) = sign_in(&p, "alice", "alice@example.com").await;
    assert_eq!(landed.status, 200, "{}", landed.body);

    // Group push: the group, then its member; her next request carries the team.
    let group = okta.post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": []})).await;
    assert_eq!(group.status, 201);
    let gid = group.body["id"].as_str().unwrap().to_string();
    let added = okta.patch(&format!("/Groups/{gid}"), json!([{"op": "add", "path": "members", "value": [{"value": uid, "display": "alice@example.com"}]}])).await;
    assert_eq!(added.status, 204, "{}", added.body);
    assert_eq!(
        groups_seen(&alice.get(&p.url("/app")).await),
        vec!["Engineering"]
    );
    let by_name = okta
        .get("/Groups?filter=displayName%20eq%20%22Engineering%22&excludedAttributes=members")
        .await;
    assert_eq!(by_name.body["totalResults"], 1);
    assert!(by_name.body["Resources"][0].get("members").is_none());
    assert_eq!(
        okta.get(&format!("/Groups/{gid}")).await.body["members"][0]["value"],
        uid.as_str()
    );

    // Rename, then remove the membership: her groups follow on the next request.
    assert_eq!(
        okta.patch(
            &format!("/Groups/{gid}"),
            json!([{"op": "replace", "value": {"id": gid, "displayName": "Eng"}}])
        )
        .await
        .status,
        204
    );
    assert_eq!(groups_seen(&alice.get(&p.url("/app")).await), vec!["Eng"]);
    assert_eq!(
        okta.patch(
            &format!("/Groups/{gid}"),
            json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}])
        )
        .await
        .status,
        204
    );
    assert!(groups_seen(&alice.get(&p.url("/app")).await).is_empty());

    // Profile update by PUT (read-only attributes sent back are ignored).
    let mut full = okta.get(&format!("/Users/{uid}")).await.body;
    full["displayName"] = json!("Alice S.");
    full["meta"] = json!({"resourceType": "User", "created": "2000-01-01T00:00:00Z"});
    full["groups"] = json!([{"value": "made-up"}]);
    let put = okta.put(&format!("/Users/{uid}"), full).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["displayName"], "Alice S.");
    assert!(put.body.get("groups").is_none());

    // Deactivation: the very next proxied request is refused, and so is a new login.
    let off = okta
        .patch(
            &format!("/Users/{uid}"),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(off.body["active"], false);
    assert_eq!(
        alice.get(&p.url("/app")).await.status,
        401,
        "a deactivated user got through"
    );
    let (_, refused) = sign_in(&p, "alice", "alice@example.com").await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("deactivated"), "{}", refused.body);
    // Okta reactivates by finding the (still visible) inactive user.
    let inactive = okta
        .get("/Users?filter=userName%20eq%20%22alice%40example.com%22")
        .await;
    assert_eq!(inactive.body["totalResults"], 1);
    assert_eq!(inactive.body["Resources"][0]["active"], false);
    assert_eq!(
        okta.patch(
            &format!("/Users/{uid}"),
            json!([{"op": "replace", "value": {"active": true}}])
        )
        .await
        .status,
        200
    );
    let (alice, back) = sign_in(&p, "alice", "alice@example.com").await;
    assert_eq!(back.status, 200);

    // Group deleted, then the user: refused at once.
    assert_eq!(okta.delete(&format!("/Groups/{gid}")).await.status, 204);
    assert_eq!(okta.get(&format!("/Groups/{gid}")).await.status, 404);
    assert_eq!(okta.delete(&format!("/Users/{uid}")).await.status, 204);
    assert_eq!(
        alice.get(&p.url("/app")).await.status,
        401,
        "a deleted user got through"
    );
    assert_eq!(okta.get(&format!("/Users/{uid}")).await.status, 404);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs PostgreSQL, Redis: run scripts/test"
)]
async fn entra_provisioning_traffic_controls_access_on_every_replica() {
    let pg = PostgresServer::start();
    let redis = RedisServer::start();
    let database = pg.database("entra");
    let site = Site::new(
        "microsoft",
        2,
        &[
            ("SCIM__DATABASE_URL", &database),
            ("SCIM__ENDPOINTS__MICROSOFT__TOKEN", ENTRA_TOKEN),
            ("SESSION__STORE", "redis"),
            ("SESSION__REDIS__URL", &redis.url()),
        ],
    )
    .await;
    let a = site.replica(0).await;
    let b = site.replica(1).await;
    let entra = ScimClient::entra(&a);
    let q = "aadOptscim062020";

    let exists = entra
        .get(&format!(
            "/Users?{q}&filter=userName+eq+%22bob%40contoso.com%22"
        ))
        .await;
    assert_eq!(
        (exists.status, exists.body["totalResults"].clone()),
        (200, json!(0))
    );
    let created = entra
        .post(&format!("/Users?{q}"), json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "bob", "userName": "bob@contoso.com", "active": true,
            "emails": [{"primary": true, "type": "work", "value": "bob@contoso.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Bob Brown", "familyName": "Brown", "givenName": "Bob"},
            "roles": [],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}
        }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let uid = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Sales"
    );

    // Entra's PATCH dialect: capitalised ops, filtered paths, a bare manager id.
    let patched = entra
        .patch(&format!("/Users/{uid}?{q}"), json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "robert@contoso.com"},
            {"op": "Replace", "path": "name.familyName", "value": "Browne"},
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+47 555 0100"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "manager-id"}
        ]))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["emails"][0]["value"], "robert@contoso.com");
    assert_eq!(
        patched.body["phoneNumbers"],
        json!([{"type": "mobile", "value": "+47 555 0100"}])
    );
    assert_eq!(
        patched.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"]["value"],
        "manager-id"
    );
    let by_email = entra.get("/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22ROBERT%40contoso.com%22").await;
    assert_eq!(by_email.body["totalResults"], 1);

    // Bob signs in through replica A (matched by email) and is known to replica B.
    let (bob, landed) = sign_in(&a, "bob", "robert@contoso.com").await;
    assert_eq!(landed.status, 200, "{}", landed.body);
    assert_eq!(bob.get(&b.url("/b")).await.status, 200);

    // A group with a second member; Entra adds and removes members with value lists.
    let carol = entra
        .post(
            "/Users",
            json!({"userName": "carol@contoso.com", "active": true}),
        )
        .await;
    let carol_id = carol.body["id"].as_str().unwrap().to_string();
    let group = entra
        .post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "externalId": "sales-group",
            "displayName": "Sales Team", "meta": {"resourceType": "Group"}}))
        .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let gid = group.body["id"].as_str().unwrap().to_string();
    let add = entra
        .patch(&format!("/Groups/{gid}"), json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": uid}, {"$ref": null, "value": carol_id}]}]))
        .await;
    assert_eq!(add.status, 204, "{}", add.body);
    assert_eq!(
        groups_seen(&bob.get(&b.url("/x")).await),
        vec!["Sales Team"]
    );
    let remove = entra
        .patch(&format!("/Groups/{gid}"), json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": carol_id}]}]))
        .await;
    assert_eq!(remove.status, 204);
    let members = entra.get(&format!("/Groups/{gid}")).await.body["members"].clone();
    assert_eq!(
        members.as_array().unwrap().len(),
        1,
        "only the listed member was removed: {members}"
    );
    assert_eq!(
        entra
            .patch(
                &format!("/Groups/{gid}"),
                json!([{"op": "Replace", "path": "displayName", "value": "Sales EMEA"}])
            )
            .await
            .status,
        204
    );
    assert_eq!(
        groups_seen(&bob.get(&a.url("/x")).await),
        vec!["Sales EMEA"]
    );

    // Disabled through replica A's endpoint (the older dialect's string boolean): refused
    // on replica B at once.
    let off = entra
        .patch(
            &format!("/Users/{uid}"),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!(off.status, 200);
    assert_eq!(off.body["active"], false);
    assert_eq!(
        bob.get(&b.url("/after")).await.status,
        401,
        "replica B let a disabled user through"
    );
    assert_eq!(bob.get(&a.url("/after")).await.status, 401);

    // Re-enabled, signed in again; then deleted: refused on both.
    assert_eq!(
        entra
            .patch(
                &format!("/Users/{uid}"),
                json!([{"op": "Replace", "path": "active", "value": true}])
            )
            .await
            .status,
        200
    );
    let (bob, again) = sign_in(&b, "bob", "robert@contoso.com").await;
    assert_eq!(again.status, 200);
    assert_eq!(entra.delete(&format!("/Users/{uid}")).await.status, 204);
    assert_eq!(bob.get(&a.url("/gone")).await.status, 401);
    assert_eq!(bob.get(&b.url("/gone")).await.status, 401);
}

#[tokio::test]
async fn scim_required_admits_only_provisioned_active_users() {
    let (_dir, site) = okta_site("scim-required", &[("SCIM__REQUIRED", "true")]).await;
    let p = site.replica(0).await;
    let (_, refused) = sign_in(&p, "dan", "dan@example.com").await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("has not been provisioned"),
        "{}",
        refused.body
    );
    assert!(p.wait_for_log("User not allowed: dan@example.com").await);
    let okta = ScimClient::okta(&p);
    assert_eq!(
        okta.post(
            "/Users",
            json!({"userName": "DAN@example.com", "active": true})
        )
        .await
        .status,
        201
    );
    let (_, admitted) = sign_in(&p, "dan", "dan@example.com").await;
    assert_eq!(
        admitted.status, 200,
        "matching ignores case: {}",
        admitted.body
    );
}

#[tokio::test]
async fn teams_count_for_allowed_groups() {
    let (_dir, site) = okta_site("scim-groups", &[("AUTH__ALLOWED_GROUPS", "Platform")]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    let uid = okta
        .post("/Users", json!({"userName": "erin@example.com"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, refused) = sign_in(&p, "erin", "erin@example.com").await;
    assert_eq!(refused.status, 403, "admitted without the team");
    okta.post(
        "/Groups",
        json!({"displayName": "Platform", "members": [{"value": uid}]}),
    )
    .await;
    let (erin, admitted) = sign_in(&p, "erin", "erin@example.com").await;
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    assert_eq!(groups_seen(&admitted), vec!["Platform"]);
    // Out of the team: the next request is refused by the policy.
    let gid = okta
        .get("/Groups?filter=displayName%20eq%20%22Platform%22")
        .await
        .body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    okta.patch(
        &format!("/Groups/{gid}"),
        json!([{"op": "remove", "path": "members"}]),
    )
    .await;
    assert_eq!(erin.get(&p.url("/x")).await.status, 403);
}

#[tokio::test]
async fn bad_scim_requests_get_scim_errors_with_the_right_type() {
    let (_dir, site) = okta_site("scim-bad", &[]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    let error = |a: &Answer, status: u16, scim_type: Option<&str>| {
        assert_eq!(a.status, status, "{}", a.body);
        assert_eq!(
            a.body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
            "{}",
            a.body
        );
        assert_eq!(a.body["status"], status.to_string());
        assert_eq!(a.body["scimType"].as_str(), scim_type, "{}", a.body);
    };

    // Credentials.
    for auth in [
        "",
        "Basic bm9ib2R5OndoYXRldmVy",
        "Bearer okta-provisioning-password-123",
        "Basic !!!",
    ] {
        let mut c = ScimClient::okta(&p);
        c.auth = auth.into();
        let a = c.get("/Users").await;
        error(&a, 401, None);
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=")
        );
    }
    assert!(
        !p.logs().contains(OKTA_PASSWORD),
        "a credential reached the log"
    );

    // Bodies.
    let raw = |method: &'static str, path: &'static str, ct: &'static str, body: Vec<u8>| {
        let okta = &okta;
        async move {
            let resp = okta
                .http
                .request(method.parse().unwrap(), format!("{}{path}", okta.base))
                .header("authorization", &okta.auth)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.json::<Value>().await.unwrap_or(Value::Null);
            Answer {
                status,
                headers,
                body,
            }
        }
    };
    error(
        &raw(
            "POST",
            "/Users",
            "application/scim+json",
            b"{not json".to_vec(),
        )
        .await,
        400,
        Some("invalidSyntax"),
    );
    error(
        &raw("POST", "/Users", "application/json", b"[1, 2]".to_vec()).await,
        400,
        Some("invalidSyntax"),
    );
    error(
        &raw("POST", "/Users", "application/scim+json", Vec::new()).await,
        400,
        Some("invalidSyntax"),
    );
    error(
        &raw("POST", "/Users", "text/plain", b"{}".to_vec()).await,
        415,
        None,
    );
    {
        // The server answers 413 from the declared length without reading the body, then
        // closes the connection: sent raw, so no client is caught writing the body into
        // a closed socket.
        let url = url::Url::parse(&okta.base).unwrap();
        let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
            .parse()
            .unwrap();
        let request = format!(
            "POST {}/Users HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\n\r\n",
            url.path(),
            url.host_str().unwrap(),
            okta.auth,
            2 * 1024 * 1024
        );
        let raw = exchange(addr, request.as_bytes()).await;
        error(
            &Answer {
                status: raw.status,
                headers: Default::default(),
                body: raw.json(),
            },
            413,
            None,
        );
    }
    error(
        &okta
            .post("/Users", json!({"userName": "x", "active": "maybe"}))
            .await,
        400,
        Some("invalidValue"),
    );
    error(
        &okta
            .post("/Users", json!({"userName": "x", "name": "not an object"}))
            .await,
        400,
        Some("invalidValue"),
    );
    error(
        &okta
            .post("/Users", json!({"userName": "x", "emails": 7}))
            .await,
        400,
        Some("invalidValue"),
    );
    error(
        &okta
            .post("/Users", json!({"displayName": "no userName"}))
            .await,
        400,
        Some("invalidValue"),
    );
    // Accepted as application/json too, with null attributes and unknown schemas.
    let ok = raw(
        "POST",
        "/Users",
        "application/json",
        json!({"schemas": ["urn:example:custom"], "userName": "frank", "title": null, "roles": []})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let fid = ok.body["id"].as_str().unwrap().to_string();
    error(
        &okta.post("/Users", json!({"userName": "FRANK"})).await,
        409,
        Some("uniqueness"),
    );

    // Paths, methods, ids.
    error(&okta.get("/Frobnicators").await, 404, None);
    error(&okta.get("/Users/not-an-id").await, 404, None);
    // An encoded NUL never reaches the directory: refused as the path is read.
    error(&okta.get("/Users/%00%ff%27%20OR%201=1").await, 400, None);
    error(&okta.get("/Users/%ff%27%20OR%201=1").await, 400, None);
    error(&okta.get("/Users/%27%20OR%201=1").await, 404, None);
    error(&okta.get("/").await, 404, None);
    let a = okta.send("DELETE", "/Users", None).await;
    error(&a, 405, None);
    assert_eq!(a.headers["allow"], "GET, POST");
    error(
        &okta
            .send("PUT", "/ServiceProviderConfig", Some(json!({})))
            .await,
        405,
        None,
    );

    // Filters and PATCH.
    error(
        &okta.get("/Users?filter=userName%20eq").await,
        400,
        Some("invalidFilter"),
    );
    error(
        &okta.get("/Users?filter=nosuch%20eq%20%22x%22").await,
        400,
        Some("invalidFilter"),
    );
    error(
        &okta
            .patch(
                &format!("/Users/{fid}"),
                json!([{"op": "explode", "path": "title"}]),
            )
            .await,
        400,
        Some("invalidSyntax"),
    );
    error(
        &okta
            .patch(
                &format!("/Users/{fid}"),
                json!([{"op": "replace", "path": "id", "value": "x"}]),
            )
            .await,
        400,
        Some("mutability"),
    );
    error(
        &okta
            .patch(&format!("/Users/{fid}"), json!([{"op": "remove"}]))
            .await,
        400,
        Some("noTarget"),
    );
    // A failing operation leaves the earlier ones unapplied: PATCH is atomic.
    let atomic = okta.patch(&format!("/Users/{fid}"), json!([{"op": "replace", "path": "title", "value": "changed"}, {"op": "replace", "path": "active", "value": "maybe"}])).await;
    error(&atomic, 400, Some("invalidValue"));
    assert!(
        okta.get(&format!("/Users/{fid}"))
            .await
            .body
            .get("title")
            .is_none()
    );
    error(
        &okta
            .patch(
                "/Users/no-such-user",
                json!([{"op": "replace", "path": "title", "value": "x"}]),
            )
            .await,
        404,
        None,
    );
}

#[tokio::test]
async fn listing_pages_with_integer_counts_and_tolerates_what_clients_add() {
    let (_dir, site) = okta_site("scim-list", &[]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    for i in 0..5 {
        assert_eq!(
            okta.post(
                "/Users/",
                json!({"userName": format!("user{i}"), "title": "Engineer"})
            )
            .await
            .status,
            201
        );
    }
    let page = okta
        .get("/Users/?startIndex=2&count=2&aadOptscim062020&unknown=1")
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["totalResults"], json!(5));
    assert_eq!(page.body["startIndex"], json!(2));
    assert_eq!(page.body["itemsPerPage"], json!(2));
    assert_eq!(page.body["Resources"][0]["userName"], "user1");
    let totals = okta.get("/Users?count=0").await;
    assert_eq!(
        (
            totals.body["totalResults"].clone(),
            totals.body["itemsPerPage"].clone()
        ),
        (json!(5), json!(0))
    );
    assert!(totals.body["Resources"].as_array().unwrap().is_empty());
    let start_zero = okta.get("/Users?startIndex=0&count=1").await;
    assert_eq!(start_zero.body["startIndex"], json!(1));
    let none = okta.get("/Users?filter=userName%20eq%20%22nobody%22").await;
    assert_eq!(
        (none.status, none.body["totalResults"].clone()),
        (200, json!(0))
    );
    let projected = okta.get("/Users?attributes=userName&count=1").await;
    let first = projected.body["Resources"][0].as_object().unwrap();
    assert!(
        first.contains_key("userName") && first.contains_key("id") && first.contains_key("meta"),
        "{first:?}"
    );
    assert!(
        !first.contains_key("title"),
        "attributes=userName returned title: {first:?}"
    );
    let excluded = okta.get("/Users?excludedAttributes=title&count=1").await;
    assert!(excluded.body["Resources"][0].get("title").is_none());
    let searched = okta
        .post(
            "/Users/.search",
            json!({"filter": "userName sw \"user\"", "startIndex": 1, "count": 3}),
        )
        .await;
    assert_eq!(
        (
            searched.body["totalResults"].clone(),
            searched.body["itemsPerPage"].clone()
        ),
        (json!(5), json!(3))
    );
    for discovery in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/Schemas",
        "/ResourceTypes/User",
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
    ] {
        assert_eq!(okta.get(discovery).await.status, 200, "{discovery}");
    }
    let spc = okta.get("/ServiceProviderConfig").await.body;
    assert_eq!(spc["authenticationSchemes"][0]["type"], "httpbasic");
    assert_eq!(spc["patch"]["supported"], true);
}

#[tokio::test]
async fn the_directory_survives_a_restart() {
    let (_dir, site) = okta_site("scim-restart", &[]).await;
    let uid = {
        let p = site.replica(0).await;
        let okta = ScimClient::okta(&p);
        okta.post(
            "/Users",
            json!({"userName": "gina@example.com", "active": false}),
        )
        .await
        .body["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    let back = okta.get(&format!("/Users/{uid}")).await;
    assert_eq!(
        (back.status, back.body["active"].clone()),
        (200, json!(false))
    );
    let (_, refused) = sign_in(&p, "gina", "gina@example.com").await;
    assert_eq!(
        refused.status, 403,
        "a deactivated user signed in after a restart"
    );
}

#[tokio::test]
async fn hostile_filters_get_400_and_the_proxy_lives_on() {
    let (_dir, site) = okta_site("scim-hostile", &[]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    let invalid = |a: &Answer, scim_type: &str| {
        assert_eq!(a.status, 400, "{}", a.body);
        assert_eq!(a.body["scimType"], scim_type, "{}", a.body);
    };
    let nested = |n: usize| format!("{}userName eq \"x\"{}", "(".repeat(n), ")".repeat(n));
    let query = |f: &str| {
        format!(
            "/Users?filter={}",
            url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
        )
    };
    invalid(&okta.get(&query(&nested(2_000))).await, "invalidFilter");
    invalid(&okta.get(&query(&nested(5_000))).await, "invalidFilter");
    // Too long for a request line: through the body of a search.
    invalid(
        &okta
            .post("/Users/.search", json!({"filter": nested(100_000)}))
            .await,
        "invalidFilter",
    );
    let nots = format!("{}userName pr{}", "not (".repeat(3_000), ")".repeat(3_000));
    invalid(&okta.get(&query(&nots)).await, "invalidFilter");
    // A thousand terms: SQLite's expression limit is never reached, and nobody is paged
    // for a healthy database.
    let terms = vec!["userName eq \"x\""; 1_000].join(" and ");
    invalid(&okta.get(&query(&terms)).await, "invalidFilter");
    let uid = okta
        .post("/Users", json!({"userName": "gina@example.com"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("emails[{}", "(".repeat(5_000));
    invalid(
        &okta
            .patch(
                &format!("/Users/{uid}"),
                json!([{"op": "add", "path": path, "value": "x"}]),
            )
            .await,
        "invalidPath",
    );
    // Still alive, still serving, and nothing logged as an error.
    assert_eq!(reqwest::get(p.url("/healthz")).await.unwrap().status(), 200);
    assert_eq!(okta.get(&format!("/Users/{uid}")).await.status, 200);
    let logs = p.logs();
    assert!(
        !logs.contains("ERROR") && !logs.contains("overflow"),
        "{logs}"
    );
}

#[tokio::test]
async fn patching_an_attribute_that_does_not_exist_is_an_invalid_path() {
    let (_dir, site) = okta_site("scim-patch-unknown", &[]).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    let uid = okta
        .post("/Users", json!({"userName": "hal@example.com"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    for ops in [
        json!([{"op": "add", "path": "favouriteColour", "value": "blue"}]),
        json!([{"op": "replace", "path": "favouriteColour", "value": "blue"}]),
        json!([{"op": "add", "value": {"favouriteColour": "blue"}}]),
        json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:shoeSize", "value": "44"}]),
    ] {
        let a = okta.patch(&format!("/Users/{uid}"), ops.clone()).await;
        assert_eq!(a.status, 400, "{ops}: {}", a.body);
        assert_eq!(a.body["scimType"], "invalidPath", "{ops}: {}", a.body);
    }
    // A standard attribute Portcullis does not keep is accepted and changes nothing;
    // one it keeps is changed.
    let a = okta
        .patch(
            &format!("/Users/{uid}"),
            json!([{"op": "add", "path": "photos", "value": [{"value": "https://example.com/h.png"}]}, {"op": "add", "path": "title", "value": "Pilot"}]),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["title"], "Pilot");
    assert!(a.body.get("photos").is_none());
}

#[tokio::test]
async fn an_endpoint_named_after_the_identity_provider_protects_the_only_provider() {
    // The README's set-up: one provider in the flat dialect, the SCIM endpoint named
    // after the identity provider, provisioning required.
    let dir = TempDir::new("scim-flat");
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let setup = with_dev_idp(&[
        ("SCIM__ENABLED", "true"),
        ("SCIM__DATABASE_URL", &db),
        ("SCIM__REQUIRED", "true"),
        ("SCIM__ENDPOINTS__MICROSOFT__TOKEN", ENTRA_TOKEN),
    ])
    .await;
    let p = &setup.portcullis;
    let (_, refused) = sign_in(p, "dan", "dan@example.com").await;
    assert_eq!(refused.status, 403, "an unprovisioned user got in");
    let entra = ScimClient::entra(p);
    let created = entra
        .post(
            "/Users",
            json!({"userName": "dan@example.com", "active": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let uid = created.body["id"].as_str().unwrap().to_string();
    let (dan, admitted) = sign_in(p, "dan", "dan@example.com").await;
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    let session = dan.cookie("127.0.0.1", "session_token").unwrap();
    let mut ws = websocket(p.addr, &session).await;
    let off = entra
        .patch(
            &format!("/Users/{uid}"),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(dan.get(&p.url("/x")).await.status, 401, "still signed in");
    let closed = until_closed(&mut ws, std::time::Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "the WebSocket outlived the deprovisioning"
    );
}

#[test]
fn an_endpoint_for_no_configured_provider_stops_start_up_and_check() {
    let env = [
        ("UPSTREAM_URL", "http://127.0.0.1:3000"),
        ("COOKIE_SECRET", SECRET),
        ("PUBLIC_URL", "https://app.example.com"),
        ("AUTH__OPENID_CONNECT__OKTA__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__OKTA__CLIENT_ID", "okta-client"),
        (
            "AUTH__OPENID_CONNECT__OKTA__DISCOVERY_URL",
            "https://example.okta.com",
        ),
        ("AUTH__OPENID_CONNECT__ENTRA__ENABLED", "true"),
        ("AUTH__OPENID_CONNECT__ENTRA__CLIENT_ID", "entra-client"),
        (
            "AUTH__OPENID_CONNECT__ENTRA__DISCOVERY_URL",
            "https://login.example.com/tenant/v2.0",
        ),
        ("SCIM__ENABLED", "true"),
        ("SCIM__REQUIRED", "true"),
        ("SCIM__ENDPOINTS__OKTA__TOKEN", ENTRA_TOKEN),
        ("SCIM__ENDPOINTS__MICROSOFT__TOKEN", ENTRA_TOKEN),
    ];
    for args in [&["check", "--offline"][..], &[][..]] {
        let (code, out) = run_portcullis(args, &env);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(
            out.contains("SCIM__ENDPOINTS__MICROSOFT__PROVIDER"),
            "{args:?}: {out}"
        );
    }
    // Naming the provider mends it, and check says how the endpoints are linked.
    let mut fixed = env.to_vec();
    fixed.push(("SCIM__ENDPOINTS__MICROSOFT__PROVIDER", "entra"));
    let (code, out) = run_portcullis(&["check", "--offline"], &fixed);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "SCIM endpoint /v1/scim/v2/microsoft provisions the users of provider entra (required)"
        ),
        "{out}"
    );
}

#[tokio::test]
async fn a_group_with_a_comma_in_its_name_stays_one_group() {
    for (allowed, expect) in [("", 200), ("admins", 403)] {
        let (_dir, site) = okta_site("scim-comma", &[("AUTH__ALLOWED_GROUPS", allowed)]).await;
        let p = site.replica(0).await;
        let okta = ScimClient::okta(&p);
        let uid = okta
            .post("/Users", json!({"userName": "ivy@example.com"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_string();
        for name in ["eng,admins", "100%"] {
            let g = okta
                .post(
                    "/Groups",
                    json!({"displayName": name, "members": [{"value": uid}]}),
                )
                .await;
            assert_eq!(g.status, 201, "{}", g.body);
        }
        let (_, page) = sign_in(&p, "ivy", "ivy@example.com").await;
        assert_eq!(
            page.status, expect,
            "allowed groups {allowed:?}: {}",
            page.body
        );
        if expect == 200 {
            let header = page.json()["headers"]["x-forwarded-groups"][0]
                .as_str()
                .unwrap()
                .to_string();
            let mut groups: Vec<&str> = header.split(',').collect();
            groups.sort();
            assert_eq!(groups, vec!["100%25", "eng%2Cadmins"], "{header}");
        }
    }
}

/// PostgreSQL down while the provider provisions: a 503 in SCIM's error shape, so the
/// provider retries later; sessions and proxied traffic carry on.
#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs PostgreSQL: run scripts/test")]
async fn a_database_outage_is_a_503_the_provider_retries_and_traffic_flows_on() {
    let pg = PostgresServer::start();
    let database = pg.database("outage");
    let env = okta_env(&database);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let site = Site::new("okta", 1, &env).await;
    let p = site.replica(0).await;
    let okta = ScimClient::okta(&p);
    assert_eq!(okta.get("/Users").await.status, 200);
    let (browser, page) = sign_in(&p, "ada", "ada@example.com").await;
    assert_eq!(page.status, 200, "{page:?}");

    drop(pg);
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bob@example.com", "active": true,
    });
    let refused = okta.post("/Users", user.clone()).await;
    assert_eq!(refused.status, 503, "{:?}\n{}", refused.body, p.logs());
    assert_eq!(refused.body["status"], "503", "{:?}", refused.body);
    assert!(
        refused.body["schemas"][0]
            .as_str()
            .unwrap()
            .ends_with(":Error"),
        "{:?}",
        refused.body
    );
    assert_eq!(okta.get("/Users").await.status, 503);
    // The signed-in user and the proxy are unaffected.
    let page = browser.get(&p.url("/app")).await;
    assert_eq!(page.status, 200, "{page:?}\n{}", p.logs());
    assert_eq!(
        page.json()["headers"]["x-forwarded-email"][0],
        "ada@example.com"
    );
    assert_eq!(Browser::new().get(&p.url("/healthz")).await.status, 200);
}
