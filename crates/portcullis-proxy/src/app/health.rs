//! Health and status: `/healthz` (the process answers), `/readyz` (providers' metadata
//! and keys loaded, the session store and directory reachable), `/metrics`, and
//! `/api/v1/auth/status`.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use portcullis_session::SessionStore;
use serde_json::json;

use super::App;
use crate::body::ProxyBody;
use crate::pages;

impl App {
    pub(super) fn status(&self) -> Response<ProxyBody> {
        pages::json(StatusCode::OK, &json!({"enabled": self.auth.is_some()}))
    }

    pub(super) async fn readyz(&self) -> Response<ProxyBody> {
        let mut checks = serde_json::Map::new();
        let mut ready = true;
        if let Some(auth) = &self.auth {
            for p in &auth.providers {
                let ok = p.is_ready();
                ready &= ok;
                checks.insert(
                    format!("provider:{}", p.name()),
                    json!(if ok { "ok" } else { "metadata not loaded" }),
                );
            }
            match auth.sessions.ready().await {
                Ok(()) => {
                    checks.insert("sessions".into(), json!("ok"));
                }
                Err(e) => {
                    ready = false;
                    checks.insert("sessions".into(), json!(e.to_string()));
                }
            }
        }
        if let Some(scim) = &self.scim {
            match scim.ready().await {
                Ok(()) => {
                    checks.insert("directory".into(), json!("ok"));
                }
                Err(e) => {
                    ready = false;
                    checks.insert("directory".into(), json!(e));
                }
            }
        }
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        pages::json(status, &json!({"ready": ready, "checks": checks}))
    }

    pub(super) fn metrics(&self) -> Response<ProxyBody> {
        let sessions = self
            .auth
            .as_ref()
            .and_then(|a| a.memory.as_ref())
            .map(|m| m.len());
        let mut resp = Response::new(ProxyBody::full(self.metrics.render(sessions)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        resp
    }
}
