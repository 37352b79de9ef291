//! HTTP/1.1 from the client, spoken directly on the connection for the requests that
//! make up nearly all traffic, and handed to hyper for everything else.
//!
//! A request is served here when its head is complete, valid and plain: HTTP/1.1, an
//! origin-form target, and none of the fields that give a request a body or change what
//! the connection does (`Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`, `TE`,
//! a `Connection` other than `keep-alive`). Such a request has no body (RFC 9112 section
//! 6.3: neither length field, so length zero), so there is no request framing here to get
//! wrong. Any other head, including every malformed, oversized or incomplete-at-the-limit
//! one, goes to hyper together with the rest of the connection, unread bytes and all:
//! hyper then serves it and every later request exactly as it serves any connection, and
//! answers the errors (400, 431) itself. The hand-over happens at most once per
//! connection.
//!
//! What this saves against hyper's server (about a quarter of the instructions of a
//! proxied request): the read buffer is the connection's and is reused, where hyper took
//! a fresh 8 KiB for every request to listen for the client going away; the `Date` is
//! rendered once a second per worker, not looked up on the clock twice a request; there
//! is no service, dispatcher or body channel between the connection and the app; and the
//! response head and first body bytes leave in one vectored write.
//!
//! Kept from hyper: a client that goes away while its request is in flight cancels it
//! (the connection is read while the app works, as hyper does, and the bytes of a
//! pipelined next request are kept); the header timeout, the idle timeout and graceful
//! shutdown (the connection's [`Watch`] and [`Beat`]); responses framed by their
//! `Content-Length`, by the body's exact length, or chunked, and never a body on 1xx,
//! 204 or 304.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::ops::Range;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::io::poll_read_buf;

use super::{Activity, Beat, Heard, Live, Protocols, ServerSettings, Watch, beat_period};
use crate::app::ConnInfo;
use crate::body::ProxyBody;
use crate::hop::lists_token;
use crate::inbound::RequestBody;

/// At most this many fields in a request head (hyper's limit too; beyond it hyper
/// answers 431).
const MAX_FIELDS: usize = 100;
/// The read buffer a connection starts with (hyper's size too).
const INPUT: usize = 8 * 1024;
/// Below this much free room, the read buffer is made room in before a read: in place
/// once the requests before have let go of it, which is nearly always.
const MIN_ROOM: usize = 2 * 1024;
/// Buffers grown past this by a large head are let go while the connection idles.
const KEEP_IDLE: usize = 32 * 1024;

/// How one connection's HTTP/1.1 ends here.
enum End {
    /// Closed: by the client, by its watch, by the server stopping, or after a response
    /// that closes it.
    Closed,
    /// A request this path does not serve: hyper serves the connection from here on,
    /// starting with these bytes.
    HandOver(Bytes),
}

/// Serves an HTTP/1 connection whose first bytes (`prefix`) are read.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve<I>(
    io: I,
    prefix: Bytes,
    protocols: Protocols,
    app: Live,
    conn: ConnInfo,
    settings: Arc<ServerSettings>,
    beats: watch::Receiver<()>,
    activity: Arc<Activity>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut input = BytesMut::with_capacity(INPUT.max(prefix.len()));
    input.extend_from_slice(&prefix);
    let mut link = Link {
        io,
        input,
        output: Vec::with_capacity(512),
        fields: Fields::default(),
        max_head: settings.max_header_bytes,
    };
    let mut watch = Watch::new(
        beat_period(&settings),
        settings.idle_timeout,
        Some(settings.header_read_timeout),
    );
    let mut beat = Beat::new(beats.clone());
    match link
        .run(&app, &conn, &activity, &mut watch, &mut beat)
        .await
    {
        End::Closed => {
            // Our own close (a response that ends the connection, a timeout, the stop):
            // the client reads the end of the stream (TLS: its close_notify) after the
            // last response. Bounded: a client that reads nothing cannot hold it.
            let _ = tokio::time::timeout(settings.header_read_timeout, link.io.shutdown()).await;
            Ok(())
        }
        End::HandOver(rest) => {
            // This path's buffers are not kept while hyper serves.
            let Link {
                io,
                input,
                output,
                fields,
                ..
            } = link;
            drop((input, output, fields));
            super::serve_hyper(
                io, rest, false, protocols, app, conn, settings, beats, activity,
            )
            .await
        }
    }
}

/// The connection: the client's stream, the bytes read from it and not yet served, and
/// the scratch space of its responses.
struct Link<I> {
    io: I,
    input: BytesMut,
    output: Vec<u8>,
    /// Where the fields of the head being read lie, and the names of the last one's.
    fields: Fields,
    max_head: usize,
}

/// A field of a request head: name and value, as ranges of the head.
#[derive(Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What is at the front of the read buffer. (Returned, never stored: boxing the request
/// would cost an allocation per request to save a move.)
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request this path serves, its head taken off the buffer.
    Plain(Request<RequestBody>),
    /// Anything else: hyper's.
    Other,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Link<I> {
    async fn run(
        &mut self,
        app: &Live,
        conn: &ConnInfo,
        activity: &Arc<Activity>,
        watch: &mut Watch,
        beat: &mut Beat,
    ) -> End {
        loop {
            let mut req = loop {
                if !self.input.is_empty() {
                    match parse(&mut self.input, &mut self.fields, self.max_head) {
                        Parsed::Plain(req) => break req,
                        Parsed::Other => return End::HandOver(self.input.split().freeze()),
                        Parsed::Partial => {}
                    }
                }
                if !self.wait_input(activity, watch, beat).await {
                    return End::Closed;
                }
            };
            let guard = activity.begin();
            // The app in force when the request arrived serves it to the end, even if a
            // reload replaces it meanwhile.
            let app = app.load_full();
            let Some(response) = self.alongside(app.handle(conn, &mut req)).await else {
                tracing::debug!(peer = %conn.peer, "client went away with a request in flight");
                return End::Closed;
            };
            // The head's bytes are the read buffer's: let go of them before the next read.
            drop(req);
            let keep = self.respond(response, beat.stopped()).await;
            drop(guard);
            if !keep {
                return End::Closed;
            }
            if !self.input.is_empty() {
                // The next head started while this request was in flight: its time runs.
                activity.received();
            } else if self.input.capacity() > KEEP_IDLE {
                self.input = BytesMut::with_capacity(INPUT);
            }
            if self.output.capacity() > KEEP_IDLE {
                self.output = Vec::with_capacity(512);
            }
        }
    }

    /// Reads more of a head; `false` if the connection is to close instead: the client
    /// closed or failed, its watch finds it overdue, or the server is stopping.
    async fn wait_input(
        &mut self,
        activity: &Activity,
        watch: &mut Watch,
        beat: &mut Beat,
    ) -> bool {
        poll_fn(|cx| {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(_)) => {
                    activity.received();
                    return Poll::Ready(true);
                }
                Poll::Pending => {}
            }
            loop {
                match beat.poll_heard(cx) {
                    None => return Poll::Pending,
                    Some(Heard::Stop) => return Poll::Ready(false),
                    Some(Heard::Tick) => {
                        if let Some(overdue) = watch.tick(activity) {
                            tracing::debug!(?overdue, "closing a connection");
                            return Poll::Ready(false);
                        }
                    }
                }
            }
        })
        .await
    }

    /// Reads what the client sent into the buffer, making room first if little is left.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.input.capacity() - self.input.len() < MIN_ROOM {
            self.input.reserve(INPUT / 2);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input)
    }

    /// Runs `work` while listening to the client: `None` if it closed the connection (or
    /// it failed) first, and `work` is dropped, which cancels what it was doing upstream.
    /// Bytes it sends meanwhile (a pipelined request) are kept, up to a head's limit.
    async fn alongside<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut listening = true;
        poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while listening {
                if self.input.len() >= self.max_head {
                    listening = false;
                    break;
                }
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => break,
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `response`; whether the connection can carry another request.
    /// `stopping`: the server is shutting down, so this is the connection's last.
    async fn respond(&mut self, response: Response<ProxyBody>, stopping: bool) -> bool {
        let (parts, mut body) = response.into_parts();
        self.output.clear();
        let (framing, close) = write_head(&mut self.output, &parts, &body, stopping);

        let mut left = match framing {
            Framing::Length(length) => length,
            _ => 0,
        };
        let chunked = framing == Framing::Chunked;
        let mut head_sent = false;
        if framing != Framing::None && !body.is_end_stream() {
            loop {
                let frame = self
                    .alongside(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)))
                    .await;
                let data = match frame {
                    // The client left.
                    None => return false,
                    Some(None) => break,
                    Some(Some(Err(e))) => {
                        tracing::debug!(error = %e, "response body failed; closing the connection");
                        return false;
                    }
                    Some(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        // Trailers: not sent, as hyper does not for a client that did
                        // not ask for them (one that does, with `TE`, is hyper's).
                        Err(_) => continue,
                    },
                };
                if data.is_empty() {
                    continue;
                }
                if !chunked {
                    let Some(rest) = left.checked_sub(data.len() as u64) else {
                        tracing::debug!(
                            "response body longer than its length; closing the connection"
                        );
                        return false;
                    };
                    left = rest;
                }
                let end = body.is_end_stream();
                let mut size = [0u8; 20];
                let size_line = if chunked {
                    chunk_size(&mut size, data.len())
                } else {
                    &[][..]
                };
                let tail: &[u8] = match (chunked, end) {
                    (false, _) => b"",
                    (true, false) => b"\r\n",
                    (true, true) => b"\r\n0\r\n\r\n",
                };
                let head: &[u8] = if head_sent { b"" } else { &self.output };
                let mut bufs = [
                    IoSlice::new(head),
                    IoSlice::new(size_line),
                    IoSlice::new(&data),
                    IoSlice::new(tail),
                ];
                if write_all_vectored(&mut self.io, &mut bufs).await.is_err() {
                    return false;
                }
                head_sent = true;
                if end {
                    return self.finish(left, close).await;
                }
                if self.io.flush().await.is_err() {
                    return false;
                }
            }
        }
        let tail: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
        let head: &[u8] = if head_sent { b"" } else { &self.output };
        let mut bufs = [IoSlice::new(head), IoSlice::new(tail)];
        if write_all_vectored(&mut self.io, &mut bufs).await.is_err() {
            return false;
        }
        self.finish(left, close).await
    }

    /// After a response's last bytes: flushed, and whether it was whole.
    async fn finish(&mut self, left: u64, close: bool) -> bool {
        if left != 0 {
            tracing::debug!(
                missing = left,
                "response body shorter than its length; closing the connection"
            );
            return false;
        }
        self.io.flush().await.is_ok() && !close
    }
}

/// Parses the head at the front of `input`; a plain request's head is taken off it.
fn parse(input: &mut BytesMut, fields: &mut Fields, max_head: usize) -> Parsed {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut head = httparse::Request::new(&mut []);
    let length = match head.parse_with_uninit_headers(input, &mut slots) {
        Ok(httparse::Status::Complete(length)) if length <= max_head => length,
        Ok(httparse::Status::Partial) if input.len() < max_head => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    if head.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(target)) = (head.method, head.path) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') {
        return Parsed::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    // HEAD answers carry no body whatever their framing says: hyper's.
    if method == Method::HEAD {
        return Parsed::Other;
    }
    let base = input.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    let target = range(target.as_bytes());
    fields.spans.clear();
    for field in head.headers.iter() {
        if !plain_field(field.name.as_bytes(), field.value) {
            return Parsed::Other;
        }
        fields.spans.push(Span {
            name: range(field.name.as_bytes()),
            value: range(field.value),
        });
    }
    let bytes = input.split_to(length).freeze();
    let built = Uri::from_maybe_shared(bytes.slice(at(target)))
        .ok()
        .zip(fields.map(&bytes));
    let Some((uri, headers)) = built else {
        // Not taken after all: back in front of whatever followed it.
        let mut back = BytesMut::with_capacity(bytes.len() + input.len());
        back.extend_from_slice(&bytes);
        back.extend_from_slice(input);
        *input = back;
        return Parsed::Other;
    };
    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Plain(request)
}

/// A span of a head as a range of its bytes.
fn at((start, end): (u32, u32)) -> Range<usize> {
    start as usize..end as usize
}

/// The most bytes of field names a connection keeps (a head with more is read in full).
const NAMES_KEPT: usize = 2048;

/// What a connection keeps of its request heads: where the fields of the one being read
/// lie, and the field names of the last one, as read and as parsed. A client sends the
/// same names in the same order request after request, and comparing their bytes costs
/// less than parsing and hashing each name again.
#[derive(Default)]
struct Fields {
    spans: Vec<Span>,
    /// The last head's names as read, one after the other.
    raw: Vec<u8>,
    /// Each of those names: where its bytes end in `raw`, and the name.
    parsed: Vec<(usize, HeaderName)>,
    /// A map of exactly the names in `parsed`, every value blank: cloning it and filling
    /// in the values costs less than building a map. Kept only while those names are all
    /// different (a map with a repeated name does not list its values in the order they
    /// were read).
    template: Option<HeaderMap>,
}

impl Fields {
    /// The fields at `spans` as a map, their values sharing the head's `bytes`; `None` if
    /// `http` refuses a name or value that httparse let through (hyper's to answer then).
    fn map(&mut self, bytes: &Bytes) -> Option<HeaderMap> {
        let Fields {
            spans,
            raw,
            parsed,
            template,
        } = self;
        let value = |span: &Span| HeaderValue::from_maybe_shared(bytes.slice(at(span.value))).ok();
        if let Some(template) = template
            && spans.len() == parsed.len()
            && spans
                .iter()
                .enumerate()
                .all(|(i, span)| kept(raw, parsed, i, &bytes[at(span.name)]).is_some())
        {
            let mut map = template.clone();
            // In the order the names were appended: they are all different.
            for (slot, span) in map.values_mut().zip(spans.iter()) {
                *slot = value(span)?;
            }
            return Some(map);
        }
        *template = None;
        let mut map = HeaderMap::with_capacity(spans.len());
        let mut all_kept = true;
        for (i, span) in spans.iter().enumerate() {
            let name_bytes = &bytes[at(span.name)];
            let name = match kept(raw, parsed, i, name_bytes) {
                Some(name) => name.clone(),
                None => {
                    all_kept = false;
                    let name = HeaderName::from_bytes(name_bytes).ok()?;
                    let start = i
                        .checked_sub(1)
                        .and_then(|p| parsed.get(p))
                        .map_or(0, |p| p.0);
                    if parsed.len() >= i && start + name_bytes.len() <= NAMES_KEPT {
                        parsed.truncate(i);
                        raw.truncate(start);
                        raw.extend_from_slice(name_bytes);
                        parsed.push((raw.len(), name.clone()));
                    }
                    name
                }
            };
            map.append(name, value(span)?);
        }
        // Names kept past this head's belong to none now.
        if parsed.len() > spans.len() {
            parsed.truncate(spans.len());
            raw.truncate(parsed.last().map_or(0, |p| p.0));
        }
        // The second head in a row with these names makes the template.
        if all_kept && parsed.len() == spans.len() && map.len() == map.keys_len() {
            let mut blank = map.clone();
            for value in blank.values_mut() {
                *value = HeaderValue::from_static("");
            }
            *template = Some(blank);
        }
        Some(map)
    }
}

/// Field `i`'s name as parsed for an earlier head, if its bytes were `name`.
fn kept<'a>(
    raw: &[u8],
    parsed: &'a [(usize, HeaderName)],
    i: usize,
    name: &[u8],
) -> Option<&'a HeaderName> {
    let start = i
        .checked_sub(1)
        .and_then(|p| parsed.get(p))
        .map_or(0, |p| p.0);
    parsed
        .get(i)
        .filter(|(end, _)| raw.get(start..*end) == Some(name))
        .map(|(_, name)| name)
}

/// Whether a request field leaves the request plain: no body, no upgrade, no
/// expectation, no connection option but keep-alive.
fn plain_field(name: &[u8], value: &[u8]) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 => !is("te"),
        6 => !is("expect"),
        7 => !is("upgrade"),
        10 => !is("connection") || value.eq_ignore_ascii_case(b"keep-alive"),
        14 => !is("content-length"),
        17 => !is("transfer-encoding"),
        _ => true,
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

/// Writes the status line and fields of a response into `out`, in one pass over its
/// fields; how its body is framed, and whether the connection closes after it.
///
/// The framing is this hop's: the body is delimited by the response's own
/// `Content-Length` if it has exactly one valid value, else by the body's exact length,
/// else chunked; never a body on 1xx, 204 or 304 (a 304 keeps the length of what it
/// stands for). A `Transfer-Encoding` from elsewhere is not copied. A `Date` is added
/// unless there is one, `connection: close` when the connection ends after the
/// response (`stopping`, or the response says so) unless the response already speaks of
/// the connection.
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    stopping: bool,
) -> (Framing, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut connection = false;
    // An interim answer here would switch nothing: none is ever made, and one that were
    // would end the connection.
    let mut close = stopping || status.is_informational();
    // `None`: no length given; `Some(None)`: more than one, or not a number.
    let mut declared: Option<Option<u64>> = None;
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            declared = Some(match declared {
                None => length_value(value.as_bytes()),
                Some(_) => None,
            });
            continue;
        }
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::DATE {
            has_date = true;
        } else if *name == header::CONNECTION {
            connection = true;
            close |= lists_token(value.as_bytes(), b"close");
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else if let Some(Some(length)) = declared {
        Framing::Length(length)
    } else if let Some(length) = body.size_hint().exact() {
        Framing::Length(length)
    } else {
        Framing::Chunked
    };
    let length = match (framing, declared) {
        (Framing::Length(length), _) => Some(length),
        (Framing::None, Some(Some(length))) if status == StatusCode::NOT_MODIFIED => Some(length),
        _ => None,
    };
    if let Some(length) = length {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {length}\r\n");
    } else if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date::write(out);
        out.extend_from_slice(b"\r\n");
    }
    if close && !connection {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

/// A `Content-Length` value: digits only.
fn length_value(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A chunk's size line, in `buf`.
fn chunk_size(buf: &mut [u8; 20], len: usize) -> &[u8] {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    // 16 hex digits and the line end fit.
    let _ = write!(cursor, "{len:x}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// The `Date` of responses: rendered once a second by each worker's [`date::keep`],
/// instead of read from the clock for every response.
pub(super) mod date {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        static NOW: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Appends the current date in the HTTP format (`Sun, 06 Nov 1994 08:49:37 GMT`).
    pub(super) fn write(out: &mut Vec<u8>) {
        NOW.with_borrow(|now| match now {
            Some(text) => out.extend_from_slice(text.as_bytes()),
            // Off a worker (tests): read the clock.
            None => out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes()),
        })
    }

    /// Keeps this thread's date current until the server stops, rendering it just
    /// after every whole second.
    pub(in crate::server) async fn keep(mut stopped: watch::Receiver<bool>) {
        loop {
            let now = SystemTime::now();
            NOW.set(Some(httpdate::fmt_http_date(now)));
            let into = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let next = Duration::from_nanos(u64::from(1_000_000_000 - into.min(999_999_999)));
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(next) => {}
            }
        }
        NOW.set(None);
    }
}

/// This path's reading of a request head against hyper's, for the tests and the fuzz
/// target `client_head`: hyper is the reference, written independently of this code.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod differential {
    use std::convert::Infallible;

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// The method, target and fields of `raw` if this path serves it, read with what
    /// `fields` kept of the heads before.
    pub(super) fn read_with(raw: &[u8], fields: &mut Fields) -> Option<(Method, Uri, HeaderMap)> {
        let mut input = BytesMut::from(raw);
        match parse(&mut input, fields, MAX_HEAD) {
            Parsed::Plain(req) => {
                let (parts, _) = req.into_parts();
                Some((parts.method, parts.uri, parts.headers))
            }
            Parsed::Partial | Parsed::Other => None,
        }
    }

    /// The method, target and fields of `raw` if this path serves it: read three times
    /// on one connection (the names parsed, then compared with the kept ones, then read
    /// into the template), which must all read the same.
    pub(crate) fn ours(raw: &[u8]) -> Result<Option<(Method, Uri, HeaderMap)>, String> {
        let mut fields = Fields::default();
        let first = read_with(raw, &mut fields);
        for _ in 0..2 {
            let again = read_with(raw, &mut fields);
            if again != first {
                return Err(format!(
                    "read as {first:?} first, as {again:?} again: {:?}",
                    String::from_utf8_lossy(raw)
                ));
            }
        }
        Ok(first)
    }

    /// The same as hyper's server reads it (with the same head limit), or `None` if it
    /// refuses it or waits for more.
    pub(crate) async fn hypers(raw: &[u8]) -> Option<(Method, Uri, HeaderMap)> {
        let (mut client, server) = tokio::io::duplex(2 * MAX_HEAD);
        let (seen, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let _ = seen.send((
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            ));
            async { Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new())) }
        });
        let serving = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(server), service);
        let talking = async move {
            // Everything, then the end: hyper does not wait for more of a partial head.
            let _ = client.write_all(raw).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        let _ = tokio::join!(serving, talking);
        heard.try_recv().ok()
    }

    /// `Err` saying how, if this path serves `raw` and hyper would not, or reads it
    /// differently.
    pub(crate) async fn compare(raw: &[u8]) -> Result<(), String> {
        let Some(ours) = ours(raw)? else {
            return Ok(());
        };
        let shown = String::from_utf8_lossy(raw);
        match hypers(raw).await {
            None => Err(format!("served here, refused by hyper: {shown:?}")),
            Some(theirs) if theirs != ours => Err(format!(
                "read as {ours:?} here, as {theirs:?} by hyper: {shown:?}"
            )),
            Some(_) => Ok(()),
        }
    }

    /// The head limit of the comparison (the default `server.max_header_bytes`).
    const MAX_HEAD: usize = 16 * 1024;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn plain(raw: &[u8]) -> Option<Request<RequestBody>> {
        let mut input = BytesMut::from(raw);
        match parse(&mut input, &mut Fields::default(), 8192) {
            Parsed::Plain(req) => Some(req),
            Parsed::Partial | Parsed::Other => {
                assert_eq!(
                    &input[..],
                    raw,
                    "bytes not served here must stay as they came"
                );
                None
            }
        }
    }

    #[test]
    fn only_plain_heads_are_served_here_and_the_rest_stays_for_hyper() {
        let req = plain(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\nConnection: Keep-Alive\r\n\r\nNEXT")
            .expect("a plain GET");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert!(req.body().is_end_stream());
        for other in [
            // Anything that can carry a body, in any spelling.
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
            // Whatever changes the connection, or asks something of it.
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            // Other versions, targets and methods.
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"HEAD / HTTP/1.1\r\n\r\n",
            // Malformed: hyper answers them.
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x7f\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            // Not whole yet.
            b"GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert!(
                plain(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        // Too many fields, or a head past the limit: hyper's 431.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(plain(&many).is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(plain(long.as_bytes()).is_none());
        let unfinished = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert!(plain(unfinished.as_bytes()).is_none());
    }

    #[tokio::test]
    async fn a_head_served_here_is_read_as_hyper_reads_it() {
        // Plain heads, then the same with bytes changed at random: whatever this path
        // takes, hyper takes too, and reads the same.
        let seeds: &[&[u8]] = &[
            b"GET /path/to?q=1&r=%20 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\nCookie: a=b; c=d\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 1.2.3.4\r\nAuthorization: Bearer abc.def\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\nX-Obs: \xe9t\xe9\r\n\r\n",
            b"PROPFIND /dav HTTP/1.1\r\nHost: h\r\nDepth: 1\r\n\r\n",
        ];
        let mut draw = {
            let mut seed = 0x5eed_u32;
            move |n: u32| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) % n
            }
        };
        let alphabet = b" \t\r\n:/?#%\x00\x01\x7f\x80\xffaZ09-_.~\"(),;=@[]{}|\\^`";
        let mut taken = 0;
        for round in 0..1500 {
            let seed = seeds[round % seeds.len()];
            let mut raw = seed.to_vec();
            if round >= seeds.len() {
                for _ in 0..=draw(3) {
                    let at = draw(raw.len() as u32 - 4) as usize;
                    raw[at] = alphabet[draw(alphabet.len() as u32) as usize];
                }
            }
            if plain(&raw).is_none() {
                continue;
            }
            taken += 1;
            if let Err(e) = differential::compare(&raw).await {
                panic!("{e}");
            }
        }
        // Most mutations break the head; enough survive to mean something.
        assert!(taken > 200, "only {taken} heads taken");
    }

    fn response(status: u16, headers: &[(&str, &str)], body: ProxyBody) -> Response<ProxyBody> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).expect("a status");
        for (n, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).expect("a name"),
                HeaderValue::from_str(v).expect("a value"),
            );
        }
        r
    }

    /// What `respond` writes for `r`, without its `date` line, and whether the connection
    /// stays open.
    async fn wire(r: Response<ProxyBody>, stopping: bool) -> (String, bool) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut link = Link {
            io: server,
            input: BytesMut::new(),
            output: Vec::new(),
            fields: Fields::default(),
            max_head: 8192,
        };
        let keep = link.respond(r, stopping).await;
        drop(link);
        let mut out = String::new();
        let mut client = client;
        client.read_to_string(&mut out).await.expect("the response");
        let Some(date) = out.find("date: ") else {
            assert!(out.is_empty(), "{out}");
            return (out, keep);
        };
        assert_eq!(out.matches("date: ").count(), 1, "{out}");
        let end = date + out[date..].find("\r\n").expect("a line") + 2;
        let stamp = &out[date + 6..end - 2];
        assert!(httpdate::parse_http_date(stamp).is_ok(), "{stamp}");
        out.replace_range(date..end, "");
        (out, keep)
    }

    #[tokio::test]
    async fn responses_are_framed_by_their_length_and_never_carry_a_body_they_must_not() {
        let (out, keep) = wire(
            response(200, &[("x-a", "1")], ProxyBody::full("hello")),
            false,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert!(keep);
        // The response's own length frames it; a Transfer-Encoding is not this hop's.
        let (out, _) = wire(
            response(
                200,
                &[("content-length", "5"), ("transfer-encoding", "gzip")],
                ProxyBody::full("hello"),
            ),
            false,
        )
        .await;
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        // Empty: a length of zero; an unknown status keeps its number.
        let (out, _) = wire(response(599, &[], ProxyBody::empty()), false).await;
        assert_eq!(out, "HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n");
        // No body, no length on 204; a 304 keeps the length of what it stands for.
        let (out, keep) = wire(
            response(204, &[("content-length", "7")], ProxyBody::full("nothing")),
            false,
        )
        .await;
        assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
        assert!(keep);
        let (out, _) = wire(
            response(
                304,
                &[("content-length", "7"), ("etag", "\"e\"")],
                ProxyBody::empty(),
            ),
            false,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 304 Not Modified\r\netag: \"e\"\r\ncontent-length: 7\r\n\r\n"
        );
        // Lengths that are not one number give way to the body's own.
        for lengths in [&["5", "5"][..], &["abc"], &["-5"], &[""], &["5, 5"]] {
            let fields: Vec<_> = lengths.iter().map(|v| ("content-length", *v)).collect();
            let (out, keep) = wire(response(200, &fields, ProxyBody::full("hello")), false).await;
            assert_eq!(
                out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                "{lengths:?}"
            );
            assert!(keep);
        }
        // A declared length the body does not match ends the connection, not the framing:
        // nothing of a body found too long before anything was sent.
        let (out, keep) = wire(
            response(200, &[("content-length", "3")], ProxyBody::full("hello")),
            false,
        )
        .await;
        assert_eq!(out, "");
        assert!(!keep);
        let (out, keep) = wire(
            response(200, &[("content-length", "9")], ProxyBody::full("hello")),
            false,
        )
        .await;
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello");
        assert!(!keep);
        // Closing: said, unless the response already speaks of the connection.
        let (out, keep) = wire(response(200, &[], ProxyBody::empty()), true).await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        assert!(!keep);
        let (out, keep) = wire(
            response(200, &[("connection", "Close")], ProxyBody::empty()),
            false,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!keep);
        // A response's own date is kept, and no second one added.
        let (out, _) = wire(
            response(
                200,
                &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")],
                ProxyBody::empty(),
            ),
            false,
        )
        .await;
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn heads_read_with_the_names_kept_from_the_last_are_read_as_if_first() {
        let heads: &[&[u8]] = &[
            b"GET /1 HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nAccept: */*\r\n\r\n",
            b"GET /2 HTTP/1.1\r\nHost: b\r\nCookie: s=2\r\nAccept: text/html\r\n\r\n",
            // The template from here on.
            b"GET /3 HTTP/1.1\r\nHost: c\r\nCookie: s=3\r\nAccept: x\r\n\r\n",
            b"GET /4 HTTP/1.1\r\nHost: d\r\nCookie: s=4\r\nAccept: y\r\n\r\n",
            // Another spelling of a name, one name fewer, one more, a repeated one.
            b"GET /5 HTTP/1.1\r\nhost: e\r\nCookie: s=5\r\nAccept: z\r\n\r\n",
            b"GET /6 HTTP/1.1\r\nhost: f\r\nCookie: s=6\r\n\r\n",
            b"GET /7 HTTP/1.1\r\nhost: g\r\nCookie: s=7\r\n\r\n",
            b"GET /8 HTTP/1.1\r\nhost: h\r\nCookie: s=8\r\nX-New: 1\r\n\r\n",
            b"GET /9 HTTP/1.1\r\nhost: i\r\nCookie: s=9\r\nCookie: t=9\r\n\r\n",
            b"GET /10 HTTP/1.1\r\nhost: j\r\nCookie: s=10\r\nCookie: t=10\r\n\r\n",
            b"GET /11 HTTP/1.1\r\nhost: k\r\nCookie: s=11\r\nCookie: t=11\r\n\r\n",
            b"GET /12 HTTP/1.1\r\nhost: l\r\nCookie: t=12\r\nX-New: 12\r\n\r\n",
            b"GET /13 HTTP/1.1\r\nhost: m\r\nCookie: t=13\r\nX-New: 13\r\n\r\n",
            b"GET /14 HTTP/1.1\r\nhost: n\r\nCookie: t=14\r\nX-New: 14\r\n\r\n",
            // The same names, a value http refuses: not served here.
            b"GET /15 HTTP/1.1\r\nhost: o\r\nCookie: t=15\r\nX-New: \x7f\r\n\r\n",
            b"GET /16 HTTP/1.1\r\n\r\n",
            b"GET /17 HTTP/1.1\r\nhost: q\r\n\r\n",
        ];
        let mut fields = Fields::default();
        let mut templated = 0;
        for head in heads {
            templated += usize::from(fields.template.is_some());
            let kept = differential::read_with(head, &mut fields);
            let fresh = differential::read_with(head, &mut Fields::default());
            assert_eq!(kept, fresh, "{}", String::from_utf8_lossy(head));
        }
        assert!(templated >= 5, "the template was used {templated} times");
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 20];
        assert_eq!(chunk_size(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_size(&mut buf, 65536), b"10000\r\n");
        assert_eq!(chunk_size(&mut buf, usize::MAX), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn the_date_is_http_dates_format() {
        let mut out = Vec::new();
        date::write(&mut out);
        let text = String::from_utf8(out).expect("text");
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
