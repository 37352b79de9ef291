//! The listener of Envoy's gRPC check: `envoy.service.auth.v3.Authorization/Check` over
//! HTTP/2 (h2c, or TLS with the public listener's certificate). gRPC here is one unary
//! method, so it is written directly on hyper: a request is one length-prefixed protobuf
//! message, the answer one message followed by `grpc-status` trailers. The decision is
//! [`App::ext_authz_check`](crate::App); this module only carries it.

pub(crate) mod proto;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use tokio_rustls::TlsAcceptor;

use crate::app::ConnInfo;
use crate::server::{Live, SideListener};
use proto::code;

/// The one method served.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The largest check request read: Envoy sends the client's headers, and the body only
/// when `with_request_body` is configured (bounded there by `max_request_bytes`).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Gateways keep a few long-lived HTTP/2 connections and multiplex checks over them.
const MAX_CONNECTIONS: usize = 1024;
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// A gRPC answer: at most one message, then the trailers.
pub(crate) struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(message) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.message.as_ref().map_or(0, |m| m.len() as u64))
    }
}

fn grpc_status(code: i32, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        // grpc-message is percent-encoded; the texts here are plain ASCII words.
        let text: String = message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&text.replace('%', "%25")) {
            trailers.insert("grpc-message", v);
        }
    }
    trailers
}

/// A failure with no message: the status in the headers ("trailers-only").
fn failure(code: i32, message: &str) -> Response<GrpcBody> {
    let mut resp = Response::new(GrpcBody {
        message: None,
        trailers: None,
    });
    *resp.headers_mut() = grpc_status(code, message);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

fn answer(message: &impl Message) -> Response<GrpcBody> {
    let encoded = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + encoded.len());
    framed.put_u8(0);
    framed.put_u32(encoded.len() as u32);
    framed.extend_from_slice(&encoded);
    let mut resp = Response::new(GrpcBody {
        message: Some(framed.freeze()),
        trailers: Some(grpc_status(code::OK, "")),
    });
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

/// The one message of a unary request: a flag byte (0: not compressed), a 4-byte length,
/// the message, nothing after it.
fn unframe(body: &[u8]) -> Result<&[u8], (i32, &'static str)> {
    if body.len() < 5 {
        return Err((code::INVALID_ARGUMENT, "the request holds no message"));
    }
    if body[0] != 0 {
        return Err((
            code::UNIMPLEMENTED,
            "compressed messages are not accepted: turn compression off for this service",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err((
            code::INVALID_ARGUMENT,
            "the request is not exactly one message",
        ));
    }
    Ok(&body[5..])
}

async fn serve_check(
    live: &Live,
    conn: &ConnInfo,
    req: Request<Incoming>,
    read_timeout: Duration,
) -> Response<GrpcBody> {
    if req.uri().path() != CHECK_PATH {
        return failure(
            code::UNIMPLEMENTED,
            "only envoy.service.auth.v3.Authorization/Check is served here",
        );
    }
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if req.method() != http::Method::POST || !grpc {
        let mut resp = failure(code::INVALID_ARGUMENT, "not a gRPC request");
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return resp;
    }
    let body = Limited::new(req.into_body(), MAX_MESSAGE_BYTES + 5);
    let bytes = match tokio::time::timeout(read_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return failure(
                code::RESOURCE_EXHAUSTED,
                "the check request is larger than 1 MiB: lower the gateway's max_request_bytes",
            );
        }
        Ok(Err(_)) => return failure(code::INVALID_ARGUMENT, "the request body was cut off"),
        Err(_) => return failure(code::INVALID_ARGUMENT, "the request body was too slow"),
    };
    let message = match unframe(&bytes) {
        Ok(m) => m,
        Err((c, text)) => return failure(c, text),
    };
    let check = match proto::CheckRequest::decode(message) {
        Ok(c) => c,
        Err(_) => return failure(code::INVALID_ARGUMENT, "not a CheckRequest"),
    };
    let app = live.load_full();
    let resp = app.ext_authz_check(conn, &check).await;
    answer(&resp)
}

/// Serves Envoy's gRPC check on the current runtime until the process ends.
pub async fn serve_ext_authz(
    live: Live,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    read_timeout: Duration,
) -> std::io::Result<()> {
    let side = SideListener::new(listener, MAX_CONNECTIONS, "ext_authz")?;
    let tls = tls.map(TlsAcceptor::from);
    while let Some((stream, peer, slot)) = side.next().await {
        let _ = stream.set_nodelay(true);
        let (live, tls) = (live.clone(), tls.clone());
        tokio::spawn(async move {
            let conn = ConnInfo {
                peer,
                tls: tls.is_some(),
                worker: 0,
            };
            let service = service_fn(move |req| {
                let live = live.clone();
                async move { Ok::<_, Infallible>(serve_check(&live, &conn, req, read_timeout).await) }
            });
            let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http2
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20))
                .max_header_list_size(64 * 1024);
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                        }
                        _ => tracing::debug!(%peer, "ext_authz: TLS handshake failed"),
                    }
                }
                None => {
                    let _ = http2.serve_connection(TokioIo::new(stream), service).await;
                }
            }
            drop(slot);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uncompressed_message_exactly() {
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 8, 1]).unwrap(), &[8, 1]);
        assert_eq!(unframe(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
        assert_eq!(
            unframe(&[1, 0, 0, 0, 0]).unwrap_err().0,
            code::UNIMPLEMENTED
        );
        assert_eq!(
            unframe(&[0, 0, 0, 0, 3, 8, 1]).unwrap_err().0,
            code::INVALID_ARGUMENT
        );
        assert_eq!(
            unframe(&[0, 0, 0, 0, 1, 8, 1]).unwrap_err().0,
            code::INVALID_ARGUMENT
        );
        assert_eq!(unframe(&[0, 0]).unwrap_err().0, code::INVALID_ARGUMENT);
    }
}
