//! The SCIM HTTP surface under one root per identity provider
//! (`/v1/scim/v2/<idp>/...`), independent of the HTTP server: a request goes in as
//! method, path, query, headers and body, and a [`ScimResponse`] comes out.
//!
//! Each endpoint has its own credential: HTTP Basic (Okta) or a static bearer token
//! (Entra). Credentials are compared as SHA-256 digests in constant time and never
//! logged. What provisioning does to access happens here too, through [`AccessHooks`]:
//! deactivating or deleting a user ends its sessions before the answer is sent, and a
//! membership change updates the teams of the users it touched. If that cannot be done
//! (the session store is down), the answer is 503 so the provider retries; the retry
//! revokes again, since revocation follows the stored state, not the transition.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_core::constant_time_eq;
use serde_json::{Map, Value, json};

use crate::error::ScimError;
use crate::filter::{Filter, parse_filter};
use crate::patch::PatchRequest;
use crate::resource::{
    GroupRecord, Member, Normalized, Projection, UserRecord, normalize, render_group, render_user,
};
use crate::schema::{self, ResourceKind};
use crate::store::DirectoryStore;

/// What SCIM changes do to people who are signed in.
pub trait AccessHooks: Send + Sync + 'static {
    /// `user` may no longer sign in (deactivated or deleted): end every session now.
    fn user_deprovisioned(
        &self,
        tenant: &str,
        user: &UserRecord,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The teams of user `user_id` are now `teams`.
    fn teams_changed(
        &self,
        tenant: &str,
        user_id: &str,
        teams: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// One SCIM root and its credential.
#[derive(Clone)]
pub struct Endpoint {
    /// The name in the path and the directory's tenant (`okta`, `microsoft`).
    pub name: String,
    /// SHA-256 of `user:password`, for HTTP Basic.
    basic: Option<[u8; 32]>,
    /// SHA-256 of the bearer token.
    bearer: Option<[u8; 32]>,
}

fn digest(text: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Endpoint {
    pub fn new(name: &str, basic: Option<(&str, &str)>, bearer: Option<&str>) -> Self {
        Endpoint {
            name: name.to_string(),
            basic: basic.map(|(u, p)| digest(format!("{u}:{p}").as_bytes())),
            bearer: bearer.map(|t| digest(t.as_bytes())),
        }
    }

    fn authorize(&self, authorization: Option<&str>) -> Result<(), ScimError> {
        let given = authorization.unwrap_or("").trim();
        let ok = if let Some(encoded) = strip_scheme(given, "Basic") {
            let decoded = STANDARD.decode(encoded.trim()).unwrap_or_default();
            self.basic
                .is_some_and(|expected| constant_time_eq(&digest(&decoded), &expected))
        } else if let Some(token) = strip_scheme(given, "Bearer") {
            self.bearer.is_some_and(|expected| {
                constant_time_eq(&digest(token.trim().as_bytes()), &expected)
            })
        } else {
            false
        };
        if ok {
            Ok(())
        } else {
            Err(ScimError::unauthorized(
                "missing or wrong credentials for this SCIM endpoint",
            ))
        }
    }

    /// The `WWW-Authenticate` challenge for a 401.
    pub fn challenge(&self) -> String {
        let realm = format!("realm=\"portcullis-scim-{}\"", self.name);
        match (self.basic.is_some(), self.bearer.is_some()) {
            (true, false) => format!("Basic {realm}"),
            _ => format!("Bearer {realm}"),
        }
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// A SCIM request, as the server hands it over.
pub struct ScimRequest<'a> {
    pub method: &'a str,
    /// The path below the endpoint root (`/Users/123`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScimResponse {
    pub status: u16,
    pub location: Option<String>,
    /// For 405.
    pub allow: Option<&'static str>,
    /// For 401.
    pub www_authenticate: Option<String>,
    pub body: Option<Value>,
}

impl ScimResponse {
    fn json(status: u16, body: Value) -> Self {
        ScimResponse {
            status,
            location: None,
            allow: None,
            www_authenticate: None,
            body: Some(body),
        }
    }

    /// The response carrying a SCIM error body.
    pub fn from_error(e: &ScimError) -> Self {
        Self::json(e.status, e.body())
    }
}

pub struct ScimService<D, H> {
    store: Arc<D>,
    hooks: H,
    endpoints: Vec<Endpoint>,
}

/// What a collection request asks for.
struct ListQuery {
    filter: Option<Filter>,
    start: usize,
    count: usize,
    projection: Projection,
}

const DEFAULT_COUNT: usize = 100;

fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn int_param(value: Option<&str>, name: &str) -> Result<Option<i64>, ScimError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer"))),
    }
}

impl ListQuery {
    fn from_parts(
        filter: Option<&str>,
        start: Option<i64>,
        count: Option<i64>,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Self, ScimError> {
        Ok(ListQuery {
            filter: filter
                .filter(|f| !f.trim().is_empty())
                .map(parse_filter)
                .transpose()?,
            // RFC 7644 §3.4.2.4: startIndex is 1-based (less is 1); a negative count is 0.
            start: start.unwrap_or(1).max(1) as usize,
            count: count
                .unwrap_or(DEFAULT_COUNT as i64)
                .clamp(0, schema::MAX_RESULTS as i64) as usize,
            projection: Projection::parse(attributes, excluded)?,
        })
    }

    fn from_query(params: &[(String, String)]) -> Result<Self, ScimError> {
        Self::from_parts(
            param(params, "filter"),
            int_param(param(params, "startIndex"), "startIndex")?,
            int_param(param(params, "count"), "count")?,
            param(params, "attributes"),
            param(params, "excludedAttributes"),
        )
    }

    /// A `POST .search` body (RFC 7644 §3.4.3).
    fn from_search(body: &Value) -> Result<Self, ScimError> {
        let field = |name: &str| {
            body.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
        };
        let text = |name: &str| -> Option<String> {
            match field(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => None,
            }
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            match field(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer"))),
                Some(Value::String(s)) => int_param(Some(s), name),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{name} must be an integer"
                ))),
            }
        };
        let filter = text("filter");
        let attributes = text("attributes");
        let excluded = text("excludedAttributes");
        Self::from_parts(
            filter.as_deref(),
            int("startIndex")?,
            int("count")?,
            attributes.as_deref(),
            excluded.as_deref(),
        )
    }
}

fn list_response(total: usize, start: usize, resources: Vec<Value>) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([schema::LIST_RESPONSE]));
    out.insert("totalResults".into(), json!(total));
    out.insert("startIndex".into(), json!(start));
    out.insert("itemsPerPage".into(), json!(resources.len()));
    // Moved in, not through `json!` (which would serialize a deep copy of every resource).
    out.insert("Resources".into(), Value::Array(resources));
    Value::Object(out)
}

fn parse_body(req: &ScimRequest<'_>) -> Result<Value, ScimError> {
    if let Some(ct) = req.content_type {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !media.is_empty() && media != "application/scim+json" && media != "application/json" {
            return Err(ScimError::unsupported_media_type(format!(
                "send application/scim+json or application/json, not {media}"
            )));
        }
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request has no body"));
    }
    serde_json::from_slice(req.body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, ScimError> {
    body.as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the body must be a JSON object"))
}

enum Route<'p> {
    ServiceProviderConfig,
    ResourceTypes(Option<&'p str>),
    Schemas(Option<&'p str>),
    Collection(&'static ResourceKind),
    Search(&'static ResourceKind),
    Resource(&'static ResourceKind, &'p str),
    RootSearch,
}

fn route(path: &str) -> Option<Route<'_>> {
    let trimmed = path.trim_end_matches('/');
    let mut parts = trimmed.trim_start_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or("");
    let rest = parts.next();
    let kind = |name: &str| -> Option<&'static ResourceKind> {
        if name.eq_ignore_ascii_case("Users") {
            Some(&schema::USER)
        } else if name.eq_ignore_ascii_case("Groups") {
            Some(&schema::GROUP)
        } else {
            None
        }
    };
    match (first, rest) {
        (f, None) if f.eq_ignore_ascii_case("ServiceProviderConfig") => {
            Some(Route::ServiceProviderConfig)
        }
        (f, r) if f.eq_ignore_ascii_case("ResourceTypes") => Some(Route::ResourceTypes(r)),
        (f, r) if f.eq_ignore_ascii_case("Schemas") => Some(Route::Schemas(r)),
        (".search", None) => Some(Route::RootSearch),
        (f, None) => kind(f).map(Route::Collection),
        (f, Some(".search")) => kind(f).map(Route::Search),
        (f, Some(id)) if !id.contains('/') && !id.is_empty() => {
            kind(f).map(|k| Route::Resource(k, id))
        }
        _ => None,
    }
}

fn method_not_allowed(allow: &'static str) -> ScimResponse {
    let mut r = ScimResponse::from_error(&ScimError::method_not_allowed(format!(
        "this path accepts {allow}"
    )));
    r.allow = Some(allow);
    r
}

impl<D: DirectoryStore, H: AccessHooks> ScimService<D, H> {
    pub fn new(store: Arc<D>, hooks: H, endpoints: Vec<Endpoint>) -> Self {
        ScimService {
            store,
            hooks,
            endpoints,
        }
    }

    pub fn store(&self) -> &Arc<D> {
        &self.store
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
    }

    /// Handles one request to endpoint `name`; `base` is the endpoint's absolute URL
    /// (for `Location` and `meta.location`).
    /// Checks the credential of a request to endpoint `name` before anything else is
    /// read; the refusal is the response to send.
    pub fn authorize(&self, name: &str, authorization: Option<&str>) -> Result<(), ScimResponse> {
        let Some(endpoint) = self.endpoint(name) else {
            return Err(ScimResponse::from_error(&ScimError::not_found(
                "no SCIM endpoint of that name",
            )));
        };
        endpoint.authorize(authorization).map_err(|e| {
            tracing::warn!(endpoint = %endpoint.name, "SCIM request refused: missing or wrong credentials");
            let mut r = ScimResponse::from_error(&e);
            r.www_authenticate = Some(endpoint.challenge());
            r
        })
    }

    pub async fn handle(&self, name: &str, base: &str, req: ScimRequest<'_>) -> ScimResponse {
        if let Err(refused) = self.authorize(name, req.authorization) {
            return refused;
        }
        let Some(endpoint) = self.endpoint(name) else {
            return ScimResponse::from_error(&ScimError::not_found(
                "no SCIM endpoint of that name",
            ));
        };
        let tenant = endpoint.name.as_str();
        match self.dispatch(tenant, base, &req).await {
            Ok(r) => r,
            Err(e) => {
                if e.status >= 500 {
                    tracing::error!(endpoint = tenant, status = e.status, detail = %e.detail, "SCIM request failed");
                } else {
                    tracing::debug!(endpoint = tenant, status = e.status, detail = %e.detail, "SCIM request refused");
                }
                ScimResponse::from_error(&e)
            }
        }
    }

    async fn dispatch(
        &self,
        tenant: &str,
        base: &str,
        req: &ScimRequest<'_>,
    ) -> Result<ScimResponse, ScimError> {
        let Some(route) = route(req.path) else {
            return Err(ScimError::not_found(format!(
                "no SCIM resource at {}",
                req.path
            )));
        };
        let method = req.method;
        let params = query_params(req.query);
        match route {
            Route::ServiceProviderConfig => match method {
                "GET" | "HEAD" => {
                    let ep = self.endpoint(tenant).expect("authorized above");
                    Ok(ScimResponse::json(
                        200,
                        schema::service_provider_config(
                            base,
                            ep.basic.is_some(),
                            ep.bearer.is_some(),
                        ),
                    ))
                }
                _ => Ok(method_not_allowed("GET")),
            },
            Route::ResourceTypes(which) => match method {
                "GET" | "HEAD" => discovery(schema::resource_types(base), which, "id"),
                _ => Ok(method_not_allowed("GET")),
            },
            Route::Schemas(which) => match method {
                "GET" | "HEAD" => discovery(schema::schemas(base), which, "id"),
                _ => Ok(method_not_allowed("GET")),
            },
            Route::RootSearch => match method {
                "POST" => Err(ScimError::not_implemented(
                    "search Users or Groups separately (POST /Users/.search)",
                )),
                _ => Ok(method_not_allowed("POST")),
            },
            Route::Search(kind) => match method {
                "POST" => {
                    let body = parse_body(req)?;
                    self.list(tenant, base, kind, ListQuery::from_search(&body)?)
                        .await
                }
                _ => Ok(method_not_allowed("POST")),
            },
            Route::Collection(kind) => match method {
                "GET" | "HEAD" => {
                    self.list(tenant, base, kind, ListQuery::from_query(&params)?)
                        .await
                }
                "POST" => {
                    let body = parse_body(req)?;
                    self.create(tenant, base, kind, as_object(&body)?).await
                }
                _ => Ok(method_not_allowed("GET, POST")),
            },
            Route::Resource(kind, id) => {
                let projection = Projection::parse(
                    param(&params, "attributes"),
                    param(&params, "excludedAttributes"),
                )?;
                match method {
                    "GET" | "HEAD" => self.get(tenant, base, kind, id, &projection).await,
                    "PUT" => {
                        let body = parse_body(req)?;
                        self.replace(tenant, base, kind, id, as_object(&body)?)
                            .await
                    }
                    "PATCH" => {
                        let body = parse_body(req)?;
                        self.patch(tenant, base, kind, id, &body).await
                    }
                    "DELETE" => self.delete(tenant, kind, id).await,
                    _ => Ok(method_not_allowed("GET, PUT, PATCH, DELETE")),
                }
            }
        }
    }

    async fn render(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        user: Option<&UserRecord>,
        group: Option<&GroupRecord>,
        projection: &Projection,
    ) -> Result<Value, ScimError> {
        let rendered = match (user, group) {
            (Some(u), _) => {
                let groups = self.store.user_groups(tenant, &u.id).await?;
                render_user(u, &groups, base)
            }
            (_, Some(g)) => render_group(g, base),
            _ => Map::new(),
        };
        Ok(Value::Object(projection.apply(kind, rendered)))
    }

    async fn list(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        q: ListQuery,
    ) -> Result<ScimResponse, ScimError> {
        let mut resources = Vec::new();
        let total;
        if kind.name == "User" {
            let (t, users) = self
                .store
                .list_users(tenant, q.filter.as_ref(), q.start, q.count)
                .await?;
            total = t;
            // Every listed user's groups in one query, and none when they are not asked for.
            let mut groups = if q.projection.wants("groups") && !users.is_empty() {
                let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
                self.store.groups_of_users(tenant, &ids).await?
            } else {
                HashMap::new()
            };
            for u in &users {
                let mine = groups.remove(&u.id).unwrap_or_default();
                let rendered = render_user(u, &mine, base);
                resources.push(Value::Object(q.projection.apply(kind, rendered)));
            }
        } else {
            let wants_members = q.projection.wants("members");
            let (t, groups) = self
                .store
                .list_groups(tenant, q.filter.as_ref(), q.start, q.count, wants_members)
                .await?;
            total = t;
            for g in &groups {
                resources.push(
                    self.render(tenant, base, kind, None, Some(g), &q.projection)
                        .await?,
                );
            }
        }
        Ok(ScimResponse::json(
            200,
            list_response(total, q.start, resources),
        ))
    }

    async fn get(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        id: &str,
        projection: &Projection,
    ) -> Result<ScimResponse, ScimError> {
        let missing = || ScimError::not_found(format!("{} {id} not found", kind.name));
        let body = if kind.name == "User" {
            let user = self.store.get_user(tenant, id).await?.ok_or_else(missing)?;
            self.render(tenant, base, kind, Some(&user), None, projection)
                .await?
        } else {
            let wants_members = !projection
                .exclude
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case("members"));
            let group = self
                .store
                .get_group(tenant, id, wants_members)
                .await?
                .ok_or_else(missing)?;
            self.render(tenant, base, kind, None, Some(&group), projection)
                .await?
        };
        Ok(ScimResponse::json(200, body))
    }

    async fn create(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        body: &Map<String, Value>,
    ) -> Result<ScimResponse, ScimError> {
        let normalized = normalize(kind, body)?;
        let (id, rendered) = if kind.name == "User" {
            let user = self.store.create_user(tenant, normalized).await?;
            tracing::info!(endpoint = tenant, user = %user.id, "SCIM user created");
            let r = self
                .render(
                    tenant,
                    base,
                    kind,
                    Some(&user),
                    None,
                    &Projection::default(),
                )
                .await?;
            (user.id, r)
        } else {
            let group = self.store.create_group(tenant, normalized).await?;
            tracing::info!(endpoint = tenant, group = %group.id, members = group.members.len(), "SCIM group created");
            let members: Vec<String> = group.members.iter().map(|m| m.value.clone()).collect();
            self.refresh_teams(tenant, &members).await?;
            let r = self
                .render(
                    tenant,
                    base,
                    kind,
                    None,
                    Some(&group),
                    &Projection::default(),
                )
                .await?;
            (group.id, r)
        };
        let mut response = ScimResponse::json(201, rendered);
        response.location = Some(format!("{base}{}/{id}", kind.endpoint));
        Ok(response)
    }

    async fn replace(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<ScimResponse, ScimError> {
        let normalized = normalize(kind, body)?;
        if kind.name == "User" {
            self.change_user(tenant, base, kind, id, move |_| Ok(normalized))
                .await
        } else {
            self.change_group(tenant, base, kind, id, true, move |_| Ok(normalized))
                .await
        }
    }

    async fn patch(
        &self,
        tenant: &str,
        base: &str,
        kind: &'static ResourceKind,
        id: &str,
        body: &Value,
    ) -> Result<ScimResponse, ScimError> {
        let request = PatchRequest::parse(body)?;
        if kind.name == "User" {
            self.change_user(tenant, base, kind, id, |current| {
                let mut doc = stored_document(&current.attributes, current.external_id.as_deref());
                request.apply(kind, &mut doc)?;
                normalize(kind, &doc)
            })
            .await
        } else {
            // RFC 7644 §3.5.2 lets a PATCH answer 204; a group's answer would list every
            // member.
            self.change_group(tenant, base, kind, id, false, |current| {
                let mut doc = stored_document(&current.attributes, current.external_id.as_deref());
                if !current.members.is_empty() {
                    doc.insert(
                        "members".into(),
                        Value::Array(current.members.iter().map(member_json).collect()),
                    );
                }
                request.apply(kind, &mut doc)?;
                normalize(kind, &doc)
            })
            .await
        }
    }

    /// Replaces a user with what `change` makes of it, then revokes or renders: the one
    /// path for PUT and PATCH.
    async fn change_user<F>(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        id: &str,
        change: F,
    ) -> Result<ScimResponse, ScimError>
    where
        F: FnOnce(&UserRecord) -> Result<Normalized, ScimError> + Send,
    {
        let (before, after) = self
            .store
            .update_user(tenant, id, change)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))?;
        self.after_user_change(tenant, &before, &after).await?;
        let r = self
            .render(
                tenant,
                base,
                kind,
                Some(&after),
                None,
                &Projection::default(),
            )
            .await?;
        Ok(ScimResponse::json(200, r))
    }

    /// The same for a group; `with_body`: answer 200 with the group, else 204.
    async fn change_group<F>(
        &self,
        tenant: &str,
        base: &str,
        kind: &ResourceKind,
        id: &str,
        with_body: bool,
        change: F,
    ) -> Result<ScimResponse, ScimError>
    where
        F: FnOnce(&GroupRecord) -> Result<Normalized, ScimError> + Send,
    {
        let (before, after) = self
            .store
            .update_group(tenant, id, change)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("Group {id} not found")))?;
        self.after_group_change(tenant, Some(&before), Some(&after))
            .await?;
        if !with_body {
            return Ok(ScimResponse {
                status: 204,
                location: None,
                allow: None,
                www_authenticate: None,
                body: None,
            });
        }
        let r = self
            .render(
                tenant,
                base,
                kind,
                None,
                Some(&after),
                &Projection::default(),
            )
            .await?;
        Ok(ScimResponse::json(200, r))
    }

    async fn delete(
        &self,
        tenant: &str,
        kind: &ResourceKind,
        id: &str,
    ) -> Result<ScimResponse, ScimError> {
        if kind.name == "User" {
            // Revoke first: if that fails the user stays, and the provider's retry finds it.
            let user = self
                .store
                .get_user(tenant, id)
                .await?
                .ok_or_else(|| ScimError::not_found(format!("User {id} not found")))?;
            self.hooks
                .user_deprovisioned(tenant, &user)
                .await
                .map_err(|e| {
                    ScimError::unavailable(format!("sessions could not be revoked: {e}"))
                })?;
            self.store.delete_user(tenant, id).await?;
            tracing::info!(endpoint = tenant, user = %id, "SCIM user deleted; sessions revoked");
        } else {
            let group = self
                .store
                .delete_group(tenant, id)
                .await?
                .ok_or_else(|| ScimError::not_found(format!("Group {id} not found")))?;
            self.after_group_change(tenant, Some(&group), None).await?;
            tracing::info!(endpoint = tenant, group = %id, "SCIM group deleted");
        }
        Ok(ScimResponse {
            status: 204,
            location: None,
            allow: None,
            www_authenticate: None,
            body: None,
        })
    }

    async fn after_user_change(
        &self,
        tenant: &str,
        before: &UserRecord,
        after: &UserRecord,
    ) -> Result<(), ScimError> {
        if !after.active() {
            self.hooks
                .user_deprovisioned(tenant, after)
                .await
                .map_err(|e| {
                    ScimError::unavailable(format!("sessions could not be revoked: {e}"))
                })?;
            if before.active() {
                tracing::info!(endpoint = tenant, user = %after.id, "SCIM user deactivated; sessions revoked");
            }
        }
        Ok(())
    }

    /// Tells the sessions of the users a group change touched about their new teams.
    async fn after_group_change(
        &self,
        tenant: &str,
        before: Option<&GroupRecord>,
        after: Option<&GroupRecord>,
    ) -> Result<(), ScimError> {
        let ids = |g: Option<&GroupRecord>| -> Vec<String> {
            g.map(|g| {
                g.members
                    .iter()
                    .filter(|m| m.kind == "User")
                    .map(|m| m.value.clone())
                    .collect()
            })
            .unwrap_or_default()
        };
        let (old, new) = (ids(before), ids(after));
        let renamed = match (before, after) {
            (Some(b), Some(a)) => b.display_name() != a.display_name(),
            _ => false,
        };
        let touched: Vec<String> = if renamed || after.is_none() {
            old.iter().chain(new.iter()).cloned().collect()
        } else {
            old.iter()
                .filter(|o| !new.contains(o))
                .chain(new.iter().filter(|n| !old.contains(n)))
                .cloned()
                .collect()
        };
        self.refresh_teams(tenant, &touched).await
    }

    async fn refresh_teams(&self, tenant: &str, users: &[String]) -> Result<(), ScimError> {
        let mut seen = std::collections::HashSet::new();
        for user in users.iter().filter(|u| seen.insert(u.as_str())) {
            let teams: Vec<String> = self
                .store
                .user_groups(tenant, user)
                .await?
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            self.hooks
                .teams_changed(tenant, user, teams)
                .await
                .map_err(|e| {
                    ScimError::unavailable(format!("sessions could not be updated: {e}"))
                })?;
        }
        Ok(())
    }
}

/// A discovery collection, or one item of it by id.
fn discovery(items: Vec<Value>, which: Option<&str>, key: &str) -> Result<ScimResponse, ScimError> {
    match which
        .map(|w| w.trim_end_matches('/'))
        .filter(|w| !w.is_empty())
    {
        None => {
            let n = items.len();
            Ok(ScimResponse::json(200, list_response(n, 1, items)))
        }
        Some(id) => items
            .into_iter()
            .find(|i| i[key].as_str().is_some_and(|v| v.eq_ignore_ascii_case(id)))
            .map(|i| ScimResponse::json(200, i))
            .ok_or_else(|| ScimError::not_found(format!("{id} not found"))),
    }
}

/// A stored resource as the SCIM document a PATCH applies to: its attributes with
/// `externalId` put back.
fn stored_document(
    attributes: &Map<String, Value>,
    external_id: Option<&str>,
) -> Map<String, Value> {
    let mut doc = attributes.clone();
    if let Some(e) = external_id {
        doc.insert("externalId".into(), json!(e));
    }
    doc
}

/// A stored group member as SCIM JSON.
fn member_json(m: &Member) -> Value {
    let mut v = json!({"value": m.value, "type": m.kind});
    if let Some(d) = &m.display {
        v["display"] = json!(d);
    }
    v
}
