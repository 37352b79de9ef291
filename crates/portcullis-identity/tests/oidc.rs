//! The OpenID Connect client against the development provider over real HTTP: a full
//! code flow, and every way an ID token must be refused.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_config::{ProviderConfig, SecretString, Url};
use portcullis_devidp::{Client, DevIdp, SigningKey};
use portcullis_identity::{IdentityError, OidcProvider};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:1/callback";
const CLIENT: &str = "portcullis-test";
const SECRET: &str = "test-client-secret";

async fn idp() -> DevIdp {
    DevIdp::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![Client {
            id: CLIENT.into(),
            secret: Some(SECRET.into()),
            redirect_uris: vec![REDIRECT.into()],
        }],
    )
    .await
    .expect("dev idp starts")
}

fn provider_for(issuer: &str, secret: Option<&str>) -> OidcProvider {
    let config = ProviderConfig {
        client_secret: secret.map(|s| SecretString::from(s.to_string())),
        scopes: vec!["openid".into(), "email".into()],
        auth_url_params: vec![
            ("prompt".into(), "login".into()),
            ("state".into(), "evil".into()),
        ],
        ..ProviderConfig::oidc("dev", "Dev", Url::parse(issuer).unwrap(), CLIENT)
    };
    let http = portcullis_identity::http::client(&Default::default()).unwrap();
    OidcProvider::new(config, http)
        .expect("an OpenID Connect provider")
        .with_jwks_min_refetch(Duration::from_millis(200))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query(url: &str) -> HashMap<String, String> {
    let url = Url::parse(url).unwrap();
    url.query_pairs().into_owned().collect()
}

/// Plays the browser at the dev provider: loads the form, submits it, returns the code.
async fn sign_in(authorize_url: &str, username: &str, groups: &str) -> HashMap<String, String> {
    let form_page = http().get(authorize_url).send().await.unwrap();
    assert_eq!(form_page.status(), 200);
    let mut form = query(authorize_url);
    form.insert("username".into(), username.into());
    form.insert("groups".into(), groups.into());
    let post_to = Url::parse(authorize_url)
        .unwrap()
        .join("authorize")
        .unwrap();
    let resp = http().post(post_to).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    query(resp.headers()["location"].to_str().unwrap())
}

#[tokio::test]
async fn a_full_code_flow_yields_the_signed_in_identity() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), Some(SECRET));
    let request = provider
        .authorization_request(REDIRECT, None)
        .await
        .unwrap();
    let params = query(&request.url);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(
        params["state"], request.state,
        "auth_url_params overrode state"
    );
    assert_eq!(params["prompt"], "login");
    assert_eq!(params["scope"], "openid email");
    let back = sign_in(&request.url, "alice", "admins, devs").await;
    assert_eq!(back["state"], request.state);
    let tokens = provider
        .exchange_code(&back["code"], &request.pkce_verifier, REDIRECT)
        .await
        .unwrap();
    let who = provider.identity(&tokens, &request.nonce).await.unwrap();
    assert_eq!(who.email(), Some("alice@example.com"));
    assert_eq!(who.username(), Some("alice"));
    assert_eq!(who.groups, vec!["admins", "devs"]);
    assert_eq!(&*who.provider, "dev");
    assert!(who.id().starts_with("dev-"));
}

#[tokio::test]
async fn a_code_can_be_exchanged_only_once() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), Some(SECRET));
    let request = provider
        .authorization_request(REDIRECT, None)
        .await
        .unwrap();
    let back = sign_in(&request.url, "bob", "").await;
    provider
        .exchange_code(&back["code"], &request.pkce_verifier, REDIRECT)
        .await
        .unwrap();
    let replay = provider
        .exchange_code(&back["code"], &request.pkce_verifier, REDIRECT)
        .await
        .unwrap_err();
    assert!(
        matches!(replay, IdentityError::TokenExchange { ref error, client_fault: true, .. } if error == "invalid_grant"),
        "{replay:?}"
    );
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), Some(SECRET));
    let request = provider
        .authorization_request(REDIRECT, None)
        .await
        .unwrap();
    let back = sign_in(&request.url, "carol", "").await;
    let err = provider
        .exchange_code(
            &back["code"],
            &portcullis_identity::pkce::verifier(),
            REDIRECT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::TokenExchange {
                client_fault: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_provider_side_refusal() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), Some("not-the-secret"));
    let request = provider
        .authorization_request(REDIRECT, None)
        .await
        .unwrap();
    let back = sign_in(&request.url, "dan", "").await;
    let err = provider
        .exchange_code(&back["code"], &request.pkce_verifier, REDIRECT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::TokenExchange { ref error, client_fault: false, .. } if error == "invalid_client"),
        "{err:?}"
    );
}

fn good_claims(issuer: &str) -> Value {
    let now = portcullis_core::time::unix_now();
    json!({
        "iss": issuer, "sub": "user-1", "aud": CLIENT, "exp": now + 300, "iat": now,
        "nonce": "n-1", "email": "user@example.com"
    })
}

async fn verify(provider: &OidcProvider, token: &str) -> Result<(), IdentityError> {
    provider
        .verify_id_token(token, Some("n-1"))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_correct_token_verifies() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    let claims = provider
        .verify_id_token(&idp.sign(&good_claims(idp.issuer())), Some("n-1"))
        .await
        .unwrap();
    assert_eq!(claims.sub, "user-1");
}

#[tokio::test]
async fn tokens_with_a_wrong_claim_are_refused() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    let now = portcullis_core::time::unix_now();
    let cases: Vec<(&str, Value)> = vec![
        ("wrong aud", json!({"aud": "someone-else"})),
        ("wrong iss", json!({"iss": "https://evil.example.com"})),
        ("expired", json!({"exp": now - 3600})),
        ("not yet valid", json!({"nbf": now + 3600})),
        ("issued in the future", json!({"iat": now + 3600})),
        ("wrong nonce", json!({"nonce": "n-2"})),
        (
            "several audiences without azp",
            json!({"aud": [CLIENT, "other"]}),
        ),
        ("azp naming another client", json!({"azp": "other"})),
        ("empty subject", json!({"sub": ""})),
    ];
    for (name, patch) in cases {
        let mut claims = good_claims(idp.issuer());
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let result = verify(&provider, &idp.sign(&claims)).await;
        assert!(
            matches!(result, Err(IdentityError::InvalidToken(_))),
            "{name}: {result:?}"
        );
    }
    for missing in ["exp", "iss", "aud", "sub", "nonce"] {
        let mut claims = good_claims(idp.issuer());
        claims.as_object_mut().unwrap().remove(missing);
        let result = verify(&provider, &idp.sign(&claims)).await;
        assert!(result.is_err(), "token without {missing} accepted");
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    for header in [json!({"alg": "none"}), json!({"alg": "None", "typ": "JWT"})] {
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(good_claims(idp.issuer()).to_string())
        );
        assert!(matches!(
            verify(&provider, &token).await,
            Err(IdentityError::InvalidToken(_))
        ));
    }
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    let stranger = SigningKey::generate();
    // With its own kid, and with the provider's kid (a forged signature).
    let own_kid = stranger.sign(&good_claims(idp.issuer()));
    let stolen_kid = stranger.sign_with_header(
        &json!({"alg": "RS256", "kid": idp.signing_key().kid()}),
        &good_claims(idp.issuer()),
    );
    for token in [own_kid, stolen_kid] {
        assert!(matches!(
            verify(&provider, &token).await,
            Err(IdentityError::InvalidToken(_))
        ));
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    // The classic algorithm-confusion forgery: HMAC keyed with the RSA public modulus.
    let header = json!({"alg": "HS256", "kid": idp.signing_key().kid()});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(good_claims(idp.issuer()).to_string())
    );
    let n = idp.signing_key().jwk()["n"].as_str().unwrap().to_string();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, n.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert!(matches!(
        verify(&provider, &token).await,
        Err(IdentityError::InvalidToken(_))
    ));
}

#[tokio::test]
async fn garbage_tokens_are_refused_without_panicking() {
    let idp = idp().await;
    let provider = provider_for(idp.issuer(), None);
    for token in [
        "",
        ".",
        "..",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "\u{0}\u{1}",
        &"A".repeat(100_000),
    ] {
        assert!(verify(&provider, token).await.is_err());
    }
}

#[tokio::test]
async fn discovery_refuses_a_document_for_another_issuer() {
    let idp = idp().await;
    // The dev provider answers at 127.0.0.1; asking for it as "localhost" must fail the
    // exact issuer comparison.
    let other = idp.issuer().replace("127.0.0.1", "localhost");
    let provider = provider_for(&other, None);
    let err = provider.metadata().await.unwrap_err();
    assert!(
        matches!(err, IdentityError::ProviderUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("names the issuer"), "{err}");
}

/// A provider whose key set the test can rotate, counting fetches of it.
struct RotatingIssuer {
    addr: SocketAddr,
    keys: Arc<std::sync::Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn rotating_issuer() -> RotatingIssuer {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keys = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (k, f) = (k.clone(), f.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (k, f) = (k.clone(), f.clone());
                    async move {
                        let issuer = format!("http://{addr}");
                        let body = if req.uri().path() == "/jwks" {
                            f.fetch_add(1, Ordering::SeqCst);
                            json!({"keys": *k.lock().unwrap()})
                        } else {
                            json!({"issuer": issuer, "authorization_endpoint": format!("{issuer}/a"),
                                   "jwks_uri": format!("{issuer}/jwks"),
                                   "id_token_signing_alg_values_supported": ["RS256"]})
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(body.to_string()),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    RotatingIssuer {
        addr,
        keys,
        fetches,
    }
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_rate_limited_refetch_and_picks_up_a_rotated_key() {
    let issuer = rotating_issuer().await;
    let url = format!("http://{}", issuer.addr);
    let old = SigningKey::generate();
    let new = SigningKey::generate();
    issuer.keys.lock().unwrap().push(old.jwk());
    let provider = provider_for(&url, None);
    let claims = good_claims(&url);
    verify(&provider, &old.sign(&claims))
        .await
        .expect("old key verifies");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);

    // The provider rotates: the new key is published, then used.
    issuer.keys.lock().unwrap().push(new.jwk());
    // Within the refetch interval, an unknown kid is refused without a fetch...
    assert!(verify(&provider, &new.sign(&claims)).await.is_err());
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);
    // ...after it, one refetch picks the new key up.
    tokio::time::sleep(Duration::from_millis(250)).await;
    verify(&provider, &new.sign(&claims))
        .await
        .expect("rotated key verifies");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2);

    // A flood of made-up kids causes at most one more fetch per interval.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stranger = SigningKey::generate();
    for _ in 0..20 {
        assert!(verify(&provider, &stranger.sign(&claims)).await.is_err());
    }
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 3);
}
