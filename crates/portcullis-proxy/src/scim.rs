//! SCIM provisioning inside the proxy: the `/v1/scim/v2/<idp>/...` routes, and what
//! provisioning does to sessions.
//!
//! Deactivating or deleting a user revokes every session of that user (indexed by the
//! provisioned user, and by the provider's subject for sessions begun before the user
//! was provisioned) before the SCIM answer is sent, on every replica at once when
//! sessions are in Redis. A membership change rewrites the teams of the sessions of the
//! users it touched, so their groups change on their next request.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use portcullis_config::{Config, ExposeSecret, ScimConfig};
use portcullis_scim::error::ScimError;
use portcullis_scim::resource::UserRecord;
use portcullis_scim::service::{AccessHooks, Endpoint, ScimRequest, ScimResponse, ScimService};
use portcullis_scim::store::{DirectoryStore, LoginKeys, LoginUser, SqlDirectory};
use portcullis_session::{Amend, Index, SessionStore};

use crate::body::ProxyBody;
use crate::inbound::{BodyError, BodyLimits, RequestBody};
use crate::sessions::Sessions;

/// Where the SCIM endpoints are: `/v1/scim/v2/<endpoint>/...`.
pub(crate) const SCIM_PREFIX: &str = "/v1/scim/v2/";

/// Acts on sessions when provisioning changes.
pub(crate) struct SessionHooks {
    sessions: Option<Sessions>,
    /// SCIM endpoint (tenant) -> login provider name.
    providers: HashMap<String, String>,
}

impl AccessHooks for SessionHooks {
    async fn user_deprovisioned(&self, tenant: &str, user: &UserRecord) -> Result<(), String> {
        let Some(sessions) = &self.sessions else {
            return Ok(());
        };
        let mut keys = vec![
            Index::Directory {
                tenant,
                id: &user.id,
            }
            .key(),
        ];
        if let (Some(provider), Some(external)) = (self.providers.get(tenant), &user.external_id) {
            keys.push(
                Index::Account {
                    provider,
                    id: external,
                }
                .key(),
            );
        }
        let mut revoked = 0;
        for key in keys {
            revoked += sessions
                .revoke_indexed(&key)
                .await
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(endpoint = tenant, user = %user.id, sessions = revoked, "sessions revoked for a deprovisioned user");
        Ok(())
    }

    async fn teams_changed(
        &self,
        tenant: &str,
        user_id: &str,
        teams: Vec<String>,
    ) -> Result<(), String> {
        let Some(sessions) = &self.sessions else {
            return Ok(());
        };
        let key = Index::Directory {
            tenant,
            id: user_id,
        }
        .key();
        sessions
            .amend_indexed(&key, Amend::Teams(teams))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The SCIM service and the links from login providers to directories.
pub(crate) struct Scim {
    service: ScimService<SqlDirectory, SessionHooks>,
    /// Login provider name -> (SCIM endpoint, required).
    links: HashMap<String, (String, bool)>,
    public_origin: Option<String>,
    bodies: BodyLimits,
}

/// What the directory says of a user at login.
pub(crate) enum Provisioned {
    /// No directory is linked to the provider.
    NotLinked,
    /// Linked, and the user was not found.
    Unknown {
        required: bool,
    },
    Found {
        tenant: String,
        user: LoginUser,
    },
}

impl Scim {
    /// Opens the directory (migrating it) and prepares the endpoints.
    pub(crate) async fn open(
        config: &Config,
        sessions: Option<Sessions>,
        bodies: BodyLimits,
    ) -> Result<Scim, String> {
        let scim: &ScimConfig = &config.scim;
        let directory = SqlDirectory::open(scim.database_url.expose_secret())
            .await
            .map_err(|e| format!("scim.database_url: {e}"))?;
        let endpoints = scim
            .endpoints
            .iter()
            .map(|e| {
                let basic = e
                    .basic
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.expose_secret()));
                let token = e.token.as_ref().map(|t| t.expose_secret());
                Endpoint::new(&e.name, basic, token)
            })
            .collect();
        let providers: HashMap<String, String> = scim
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.provider.clone()))
            .collect();
        let links = scim
            .endpoints
            .iter()
            .map(|e| (e.provider.clone(), (e.name.clone(), e.required)))
            .collect();
        for e in &scim.endpoints {
            tracing::info!(endpoint = %e.name, provider = %e.provider, required = e.required, "SCIM endpoint at {SCIM_PREFIX}{}", e.name);
        }
        Ok(Scim {
            service: ScimService::new(
                Arc::new(directory),
                SessionHooks {
                    sessions,
                    providers,
                },
                endpoints,
            ),
            links,
            public_origin: config
                .public_origin()
                .map(|u| u.as_str().trim_end_matches('/').to_string()),
            bodies,
        })
    }

    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.service.store().ready().await.map_err(|e| e.detail)
    }

    /// Looks a signing-in identity up in the directory linked to its provider.
    pub(crate) async fn at_login(
        &self,
        identity: &portcullis_core::Identity,
    ) -> Result<Provisioned, String> {
        let Some((tenant, required)) = self.links.get(&*identity.provider) else {
            return Ok(Provisioned::NotLinked);
        };
        let mut keys = LoginKeys {
            external_id: Some(identity.id().to_string()),
            ..LoginKeys::default()
        };
        for name in [&identity.username(), &identity.email()]
            .into_iter()
            .flatten()
        {
            keys.user_names.push(name.to_string());
        }
        if let Some(email) = &identity.email() {
            keys.emails.push(email.to_string());
        }
        match self.service.store().find_login_user(tenant, &keys).await {
            Ok(Some(user)) => Ok(Provisioned::Found {
                tenant: tenant.clone(),
                user,
            }),
            Ok(None) => Ok(Provisioned::Unknown {
                required: *required,
            }),
            Err(e) => Err(e.detail),
        }
    }

    /// Serves one request under [`SCIM_PREFIX`]. `origin` is the scheme and host the
    /// client reached (used when no public URL is configured).
    pub(crate) async fn handle(
        &self,
        req: Request<RequestBody>,
        origin: &str,
    ) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        let rest = &path[SCIM_PREFIX.len()..];
        let (name, sub_path) = match rest.split_once('/') {
            Some((n, p)) => (n.to_string(), format!("/{p}")),
            None => (rest.to_string(), "/".to_string()),
        };
        let base = format!(
            "{}{SCIM_PREFIX}{name}",
            self.public_origin.as_deref().unwrap_or(origin)
        );
        let method = req.method().as_str().to_string();
        let query = req.uri().query().map(str::to_string);
        let header = |h: &header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(&header::CONTENT_TYPE);
        let authorization = header(&header::AUTHORIZATION);
        // The credential first: without it, nobody gets Portcullis to hold a body.
        if let Err(refused) = self.service.authorize(&name, authorization.as_deref()) {
            return to_response(refused);
        }
        let headers = req.headers().clone();
        let body = match self.bodies.read(&headers, req.into_body()).await {
            Ok(b) => b,
            Err(e) => {
                let e = match e {
                    BodyError::TooLarge => ScimError::payload_too_large(format!(
                        "the body is larger than {} bytes",
                        self.bodies.max_bytes
                    )),
                    BodyError::Timeout => {
                        ScimError::request_timeout("the body did not arrive in time")
                    }
                    BodyError::Busy => ScimError::unavailable(
                        "too many requests are sending bodies at once; retry",
                    ),
                    BodyError::Aborted => ScimError::bad_request("the body was cut off"),
                };
                return to_response(ScimResponse::from_error(&e));
            }
        };
        let body = body.bytes;
        let response = self
            .service
            .handle(
                &name,
                &base,
                ScimRequest {
                    method: &method,
                    path: &sub_path,
                    query: query.as_deref(),
                    content_type: content_type.as_deref(),
                    authorization: authorization.as_deref(),
                    body: &body,
                },
            )
            .await;
        to_response(response)
    }
}

/// A request under the SCIM prefix refused before it reached the service, as a SCIM
/// error so the provider's client can read it.
pub(crate) fn refused(detail: &str) -> Response<ProxyBody> {
    to_response(ScimResponse::from_error(&ScimError::bad_request(detail)))
}

fn to_response(r: ScimResponse) -> Response<ProxyBody> {
    let body = r.body.map(|b| b.to_string()).unwrap_or_default();
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if r.status != 204 {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        );
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(location) = r.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, location);
    }
    if let Some(allow) = r.allow {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(challenge) = r
        .www_authenticate
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        h.insert(header::WWW_AUTHENTICATE, challenge);
    }
    resp
}
