//! HTTP/1.1 to the upstream, spoken directly on the connection.
//!
//! A connection belongs to the request using it: the request's own future writes the
//! head and the body and reads the response head, and the response body reads the rest
//! from the same socket whenever the client's side of the proxy polls it. There is no
//! connection task and no channel between request and connection (hyper's client has
//! both, and a proxied request spent a good part of its time crossing them). Upgrades,
//! which need hyper's upgrade machinery and are rare, still go through hyper, on a fresh
//! connection each.
//!
//! Response framing follows RFC 9112 section 6.3, and every doubt closes the connection
//! after the response instead of reusing it: `Transfer-Encoding` together with
//! `Content-Length`, a length read until close, bytes past the end of a response, an
//! HTTP/1.0 answer, `Connection: close`, a request body the upstream answered before
//! reading. A response head is limited in bytes and fields, a chunk-size line and the
//! trailers too; conflicting lengths and malformed framing are errors, never guesses.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::FieldValue;
use super::pool::Pool;
use crate::hop::{self, lists_token};
use crate::inbound::RequestBody;
use crate::redact;

/// The largest response head accepted, interim responses included.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most fields a response head (or the trailers) may have.
const MAX_FIELDS: usize = 100;
/// The most interim (1xx) responses before the final one.
const MAX_INTERIM: usize = 16;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailers after a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// The most bytes read from the socket at once for a body.
const MAX_READ: usize = 64 * 1024;
/// The read size when nothing says how much is coming.
const READ: usize = 8 * 1024;
/// Buffers larger than this are not kept on an idle connection.
const KEEP_IDLE: usize = 16 * 1024;

/// The socket, in plain text or TLS.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One keep-alive connection to the upstream.
pub(super) struct Conn {
    io: Io,
    /// Read from the upstream and not consumed yet.
    input: BytesMut,
    /// The request head (and small chunks of a chunked body) being written.
    output: Vec<u8>,
    /// The field names of the last answer on this connection (boxed: a connection is
    /// moved with each answer's body, and a bigger one costs a copy at every move).
    names: Box<FieldNames>,
}

/// The most bytes of field names a connection keeps (an answer with more is parsed in full).
const NAMES_KEPT: usize = 2048;

/// The field names of an answer as they were read and as parsed: an upstream sends the
/// same names in the same order answer after answer, and comparing the bytes is cheaper
/// than parsing a name again. At most [`MAX_FIELDS`] names.
#[derive(Default)]
struct FieldNames {
    /// The names as read, one after the other.
    raw: Vec<u8>,
    /// Each name, where its raw bytes end in `raw`, and what it does in an answer.
    parsed: Vec<(usize, HeaderName, Role)>,
    /// The map an answer with exactly the names in `parsed` is read into, every value
    /// blank: cloning it and filling in the values costs less than hashing and inserting
    /// each name again. Kept only while `parsed` is the whole of an answer's names and
    /// those that go into the map are all different (a map with a repeated name does not
    /// list its values in the order they were read).
    template: Option<HeaderMap>,
    /// Where the fields of the answer being read are (kept only for its buffer).
    spans: Vec<Span>,
    /// What came before the first field of the last final answer read in full (its
    /// status line, and any empty lines before it), with its status code and HTTP minor
    /// version: an answer that starts with these bytes has that status (see [`replay`]).
    /// Empty when there is none to compare with.
    status: Vec<u8>,
    code: u16,
    minor: u8,
}

/// The longest status line kept for [`replay`].
const STATUS_KEPT: usize = 256;

impl FieldNames {
    /// Field `i`'s name read as `raw`, its role, and whether it is the one parsed before
    /// (the bytes are the same); else it is parsed now and kept (in place of what
    /// followed it) for the next answer.
    fn name(
        &mut self,
        i: usize,
        raw: &[u8],
    ) -> Result<(HeaderName, Role, bool), http::header::InvalidHeaderName> {
        if let Some((name, role)) = self.kept(i, raw) {
            return Ok((name.clone(), role, true));
        }
        self.template = None;
        let name = HeaderName::from_bytes(raw)?;
        let role = Role::of(&name);
        let start = self.start(i);
        if self.parsed.len() >= i && start + raw.len() <= NAMES_KEPT {
            self.parsed.truncate(i);
            self.raw.truncate(start);
            self.raw.extend_from_slice(raw);
            self.parsed.push((self.raw.len(), name.clone(), role));
        }
        Ok((name, role, false))
    }

    /// Where field `i`'s bytes start in `raw`: where the one before ends.
    fn start(&self, i: usize) -> usize {
        i.checked_sub(1)
            .and_then(|p| self.parsed.get(p))
            .map_or(0, |p| p.0)
    }

    /// Field `i`'s name as parsed before and its role, if its bytes were `raw`.
    fn kept(&self, i: usize, raw: &[u8]) -> Option<(&HeaderName, Role)> {
        let start = self.start(i);
        self.parsed
            .get(i)
            .filter(|(end, ..)| self.raw.get(start..*end) == Some(raw))
            .map(|(_, name, role)| (name, *role))
    }

    /// A copy of the template, if there is one and `raw` are exactly the names it was
    /// made for.
    fn template_for<'a>(
        &self,
        mut raw: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Option<HeaderMap> {
        let template = self.template.as_ref()?;
        let same = raw.len() == self.parsed.len()
            && raw
                .by_ref()
                .enumerate()
                .all(|(i, r)| self.kept(i, r).is_some());
        same.then(|| template.clone())
    }
}

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// A response read until the upstream closes.
    UntilClose,
}

/// A response head and how to read its body.
pub(super) struct Answer {
    pub response: Response<()>,
    body: Framing,
    /// The connection may carry another request after this response.
    reusable: bool,
    /// Hop-by-hop fields are still among the answer's (a `101`, or a `Connection` that
    /// names other fields); otherwise they were left out as the head was read.
    hop_fields_kept: bool,
}

/// Why an exchange failed, and whether sending the request again is safe.
#[derive(Debug)]
pub(super) struct Failure {
    pub reason: String,
    /// Nothing of a response arrived for a request without a body and with an idempotent
    /// method: a keep-alive connection the upstream closed as it was being reused.
    pub retryable: bool,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            retryable: false,
        }
    }
}

impl Conn {
    pub(super) fn new(io: Io) -> Self {
        Conn {
            io,
            input: BytesMut::new(),
            output: Vec::new(),
            names: Box::default(),
        }
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked (which would otherwise be read as the next response).
    pub(super) fn is_usable(&mut self) -> bool {
        if !self.input.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads what the socket has into `input`, after making room for `want` bytes.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.input.reserve(want);
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input)
    }

    /// Drops buffers a large message grew, before the connection idles.
    fn trim(&mut self) {
        if self.input.capacity() > KEEP_IDLE {
            self.input = BytesMut::new();
        }
        if self.output.capacity() > KEEP_IDLE {
            self.output = Vec::new();
        }
    }

    /// Sends the request (`head`'s own body is not read: `body` is sent) and reads the
    /// response head. `head` must already be the upstream's: origin-form target, `Host`
    /// set, hop-by-hop fields removed.
    pub(super) async fn exchange<B>(
        &mut self,
        head: &Request<B>,
        added: &[(HeaderName, FieldValue<'_>)],
        body: RequestBody,
    ) -> Result<Answer, Failure> {
        let framing = request_framing(head, &body);
        self.output.clear();
        write_head(&mut self.output, head, added, framing);
        let head_request = head.method() == Method::HEAD;
        let bodiless = matches!(framing, Framing::Empty | Framing::Length(0));
        let retryable = bodiless && head.method().is_idempotent();

        if let Err(e) = self.write_output().await {
            return Err(Failure {
                reason: format!("sending the request: {e}"),
                retryable,
            });
        }
        if bodiless {
            return read_head(&mut self.io, &mut self.input, &mut self.names, head_request)
                .await
                .map_err(|e| Failure {
                    retryable: retryable && !e.received(),
                    reason: e.to_string(),
                });
        }

        // The body goes out while the head is awaited: an upstream may answer before it
        // has read the whole body (a refusal), and must not be blocked writing to us.
        let Conn {
            io,
            input,
            output,
            names,
        } = self;
        let (mut reader, mut writer) = tokio::io::split(io);
        let sending = send_body(&mut writer, output, body, framing);
        let reading = read_head(&mut reader, input, names, head_request);
        tokio::pin!(sending, reading);
        let mut sent = false;
        let mut send_failed = None;
        let head = loop {
            tokio::select! {
                result = &mut sending, if !sent => {
                    sent = true;
                    match result {
                        Ok(()) => {}
                        // The upstream may have stopped reading to answer (and closed):
                        // its answer, if one comes, is what the client should see.
                        Err(SendError::Io(e)) => send_failed = Some(e),
                        Err(e) => return Err(Failure::new(format!("sending the request body: {e}"))),
                    }
                }
                head = &mut reading => break head,
            }
        };
        let mut answer = head.map_err(|e| match &send_failed {
            Some(send) => Failure::new(format!("sending the request body: {send}")),
            None => Failure::new(e.to_string()),
        })?;
        if !sent || send_failed.is_some() {
            // The rest of the request body would be taken as the next request.
            answer.reusable = false;
        }
        Ok(answer)
    }

    async fn write_output(&mut self) -> io::Result<()> {
        self.io.write_all(&self.output).await?;
        self.io.flush().await
    }
}

/// How the request body is sent: as the client framed it where the body knows its
/// length, else chunked. The client's own `Content-Length` is not copied; the one written
/// is the body's, and sending more or fewer bytes than that fails the request.
fn request_framing<B>(head: &Request<B>, body: &RequestBody) -> Framing {
    if body.is_end_stream() {
        let expects_body = matches!(*head.method(), Method::POST | Method::PUT | Method::PATCH)
            || head.headers().contains_key(header::CONTENT_LENGTH);
        return if expects_body {
            Framing::Length(0)
        } else {
            Framing::Empty
        };
    }
    match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

fn write_head<B>(
    out: &mut Vec<u8>,
    head: &Request<B>,
    added: &[(HeaderName, FieldValue<'_>)],
    framing: Framing,
) {
    out.extend_from_slice(head.method().as_str().as_bytes());
    out.push(b' ');
    let target = head.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let own = head
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING);
    let added = added.iter().map(|(n, v)| (n, v.as_bytes()));
    for (name, value) in own.map(|(n, v)| (n, v.as_bytes())).chain(added) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("reading the client's body: {0}")]
    Client(hyper::Error),
    #[error("the body is longer than its declared length")]
    TooLong,
    #[error("the body ended before its declared length")]
    TooShort,
}

async fn send_body<W: AsyncWrite + Unpin>(
    io: &mut W,
    scratch: &mut Vec<u8>,
    mut body: RequestBody,
    framing: Framing,
) -> Result<(), SendError> {
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(SendError::Client)?;
        let data = match frame.into_data() {
            Ok(data) => data,
            // Request trailers have no place in a fixed-length body; a chunked one ends
            // without them, as most servers ignore them.
            Err(_) => continue,
        };
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(SendError::TooLong)?;
                io.write_all(&data).await?;
            }
            None => {
                scratch.clear();
                let _ = write!(scratch, "{:x}\r\n", data.len());
                scratch.extend_from_slice(&data);
                scratch.extend_from_slice(b"\r\n");
                io.write_all(scratch).await?;
            }
        }
    }
    match left {
        Some(0) => {}
        Some(_) => return Err(SendError::TooShort),
        None => io.write_all(b"0\r\n\r\n").await?,
    }
    io.flush().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("reading the response: {error}")]
    Io { error: io::Error, received: bool },
    #[error("the upstream closed the connection before answering")]
    Closed { received: bool },
    #[error("the upstream's response head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the upstream sent more than {MAX_INTERIM} interim responses")]
    TooManyInterim,
    #[error("malformed response from the upstream: {0}")]
    Malformed(String),
}

impl HeadError {
    /// Whether any byte of a response had arrived.
    fn received(&self) -> bool {
        match self {
            HeadError::Io { received, .. } | HeadError::Closed { received } => *received,
            _ => true,
        }
    }
}

/// Reads the final response head, passing over interim (1xx) responses.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    input: &mut BytesMut,
    names: &mut FieldNames,
    head_request: bool,
) -> Result<Answer, HeadError> {
    let mut interim = 0;
    let mut received = false;
    loop {
        if !input.is_empty() {
            match parse_head(input, names, head_request)? {
                Parsed::Final(answer) => return Ok(answer),
                Parsed::Interim => {
                    interim += 1;
                    received = true;
                    if interim > MAX_INTERIM {
                        return Err(HeadError::TooManyInterim);
                    }
                    continue;
                }
                Parsed::Partial if input.len() >= MAX_HEAD_BYTES => {
                    return Err(HeadError::TooLarge);
                }
                Parsed::Partial => {}
            }
        }
        input.reserve(READ);
        let received_before = received || !input.is_empty();
        match tokio::io::AsyncReadExt::read_buf(io, input).await {
            Ok(0) if received_before => {
                return Err(HeadError::Malformed("the response head ended early".into()));
            }
            Ok(0) => return Err(HeadError::Closed { received: false }),
            Ok(_) => {}
            Err(error) => {
                return Err(HeadError::Io {
                    error,
                    received: received_before,
                });
            }
        }
    }
}

enum Parsed {
    Final(Answer),
    Interim,
    Partial,
}

/// Parses a response head at the start of `input` and takes it off.
fn parse_head(
    input: &mut BytesMut,
    names: &mut FieldNames,
    head_request: bool,
) -> Result<Parsed, HeadError> {
    // The connection's list of spans, reused from answer to answer.
    let mut spans = std::mem::take(&mut names.spans);
    spans.clear();
    let parsed = parse_head_into(input, names, head_request, &mut spans);
    names.spans = spans;
    parsed
}

fn parse_head_into(
    input: &mut BytesMut,
    names: &mut FieldNames,
    head_request: bool,
    spans: &mut Vec<Span>,
) -> Result<Parsed, HeadError> {
    // Names and values are kept as slices of the head's bytes, without a copy each.
    let replayed = replay(input, names, spans);
    let (len, code, minor) = match replayed {
        Some(read) => read,
        None => {
            spans.clear();
            match read_fields(input, spans)? {
                Some(read) => read,
                None => return Ok(Parsed::Partial),
            }
        }
    };
    if (100..200).contains(&code) && code != 101 {
        input.advance(len);
        return Ok(Parsed::Interim);
    }
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Malformed(format!("status {code}")))?;
    let version = match minor {
        1 => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let spans = &spans[..];
    let count = spans.len();
    // The next answer is compared with this one's status line.
    if let Some(&(first, ..)) = spans.first() {
        let status_line = &input[..first as usize];
        if names.status != status_line && status_line.len() <= STATUS_KEPT {
            names.status.clear();
            names.status.extend_from_slice(status_line);
            (names.code, names.minor) = (code, minor);
        }
    }
    let head = input.split_to(len).freeze();
    let raw_name = |&(ns, ne, _, _): &Span| &head[ns as usize..ne as usize];
    let value_of = |name: &HeaderName, &(_, _, vs, ve): &Span| {
        HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| HeadError::Malformed(format!("the value of {name}")))
    };
    let name_of = |names: &mut FieldNames, i: usize, raw: &[u8]| {
        names.name(i, raw).map_err(|_| {
            HeadError::Malformed(format!("field name {:?}", String::from_utf8_lossy(raw)))
        })
    };

    // The fixed hop-by-hop set (`Connection`, `Transfer-Encoding`, `Keep-Alive`, ...)
    // never goes to the client, so it is left out of the map here rather than added and
    // removed again, unless the answer switches protocols (the switch is checked against
    // them) or `Connection` names other fields (which the proxy then removes with the
    // rest).
    let mut facts = Facts::default();
    let mut filled = None;
    // The usual answer: the same names as the last ones, their values filled into a copy
    // of the map those were read into.
    let template = if replayed.is_some() {
        // The names were just compared with the kept ones.
        names.template.clone()
    } else {
        names.template_for(spans.iter().map(raw_name))
    };
    if let Some(mut map) = template {
        let mut slots = map.values_mut();
        let mut fits = true;
        for ((_, name, role), span) in names.parsed.iter().zip(spans) {
            let value = value_of(name, span)?;
            if facts.observe(*role, &value) {
                match slots.next() {
                    Some(slot) => *slot = value,
                    None => fits = false,
                }
            }
        }
        // Never the case (the names are those the template was made of), but a value of
        // an earlier answer must never be passed on: start again without the template.
        fits &= slots.next().is_none();
        if fits {
            filled = Some(map);
        } else {
            names.template = None;
            facts = Facts::default();
        }
    }
    let mut headers = match filled {
        Some(map) => map,
        None => {
            let mut map = HeaderMap::with_capacity(count);
            let mut all_kept = true;
            for (i, span) in spans.iter().enumerate() {
                let (name, role, kept) = name_of(names, i, raw_name(span))?;
                all_kept &= kept;
                let value = value_of(&name, span)?;
                if facts.observe(role, &value) {
                    map.append(name, value);
                }
            }
            // The second answer in a row with these names makes the template.
            if all_kept && names.parsed.len() == count && map.len() == map.keys_len() {
                let mut template = map.clone();
                for value in template.values_mut() {
                    *value = HeaderValue::from_static("");
                }
                names.template = Some(template);
            }
            map
        }
    };
    let hop_fields_kept =
        facts.held_back && (facts.lists_others || status == StatusCode::SWITCHING_PROTOCOLS);
    if hop_fields_kept {
        for (i, span) in spans.iter().enumerate() {
            let (name, role, _) = name_of(names, i, raw_name(span))?;
            if role != Role::Plain {
                let value = value_of(&name, span)?;
                headers.append(name, value);
            }
        }
    }

    let mut reusable = version == Version::HTTP_11 && !facts.close;
    let body = if status == StatusCode::SWITCHING_PROTOCOLS {
        // What follows is another protocol's.
        reusable = false;
        Framing::Empty
    } else if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if facts.has_coding {
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            // Both: the transfer coding wins, and the connection is not trusted after.
            reusable = false;
        }
        if facts.last_coding_chunked && version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            reusable = false;
            Framing::UntilClose
        }
    } else if facts.has_length {
        match facts.length() {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => {
                return Err(HeadError::Malformed(
                    "invalid or conflicting Content-Length".into(),
                ));
            }
        }
    } else {
        reusable = false;
        Framing::UntilClose
    };

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(Answer {
        response,
        body,
        reusable,
        hop_fields_kept,
    }))
}

/// Reads a response head with httparse: its length, its status code and HTTP minor
/// version (its fields' spans pushed onto `spans`); `None` while incomplete.
fn read_fields(input: &[u8], spans: &mut Vec<Span>) -> Result<Option<(usize, u16, u8)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(input) {
        // However the head arrived: in one read or many.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let base = input.as_ptr() as usize;
    for field in parsed.headers.iter() {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        // Offsets within a head of at most MAX_HEAD_BYTES (plus one read) fit.
        spans.push((
            name as u32,
            (name + field.name.len()) as u32,
            value as u32,
            (value + field.value.len()) as u32,
        ));
    }
    let code = parsed.code.unwrap_or(0);
    let minor = parsed.version.unwrap_or(0);
    Ok(Some((len, code, minor)))
}

/// Reads a response head that repeats the shape of the last one on its connection: the
/// same bytes up to the first field (the status line), then the same field names in the
/// same order, each right before its `:`, every line ended by CRLF. An upstream's
/// answers mostly look like that, and comparing bytes costs a fraction of parsing them.
/// What it returns is what [`read_fields`] returns for the same bytes (the status line
/// was read by httparse before, the names are ones it accepted, and each value is held
/// to httparse's rule: no control character but tab, surrounding spaces and tabs not
/// part of it). Anything else (another status, another or one more name, a folded or
/// bare-LF line, a head not complete yet) is `None`: httparse reads that head.
fn replay(input: &[u8], names: &FieldNames, spans: &mut Vec<Span>) -> Option<(usize, u16, u8)> {
    if names.status.is_empty() || !input.starts_with(&names.status) {
        return None;
    }
    let mut at = names.status.len();
    let mut start = 0;
    for &(end, ..) in &names.parsed {
        let name = &names.raw[start..end];
        start = end;
        let rest = input.get(at..)?;
        if !(rest.starts_with(name) && rest.get(name.len()) == Some(&b':')) {
            return None;
        }
        let name_start = at;
        at += name.len() + 1;
        while matches!(input.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        // The value runs to the first byte httparse does not take in one, which must
        // start the CRLF.
        let end = value_end(input, at)?;
        if input.get(end..end + 2) != Some(b"\r\n") {
            return None;
        }
        let line = &input[at..end];
        let kept = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |last| last + 1);
        let value = &line[..kept];
        // Offsets within a head of at most MAX_HEAD_BYTES fit.
        spans.push((
            name_start as u32,
            (name_start + name.len()) as u32,
            at as u32,
            (at + value.len()) as u32,
        ));
        at = end + 2;
    }
    if input.get(at..at + 2) != Some(b"\r\n") || at + 2 > MAX_HEAD_BYTES {
        return None;
    }
    Some((at + 2, names.code, names.minor))
}

/// Where a field value that starts at `at` ends: the first byte from there that httparse
/// does not take in a value (it takes tab, visible ASCII and space, and 0x80 up). Sixteen
/// bytes are looked at together, each judged without a branch (a few vector
/// instructions), the rest of the head one by one.
fn value_end(input: &[u8], at: usize) -> Option<usize> {
    let stops = |b: u8| !redact::is_field_value_byte(b);
    let mut from = at;
    while let Some(chunk) = input.get(from..from + 16) {
        let mask = chunk
            .iter()
            .enumerate()
            .fold(0u32, |mask, (i, &b)| mask | (u32::from(stops(b)) << i));
        if mask != 0 {
            return Some(from + mask.trailing_zeros() as usize);
        }
        from += 16;
    }
    input
        .get(from..)?
        .iter()
        .position(|&b| stops(b))
        .map(|i| from + i)
}

/// A field's name and value, as offsets into the head (name start and end, value start
/// and end).
type Span = (u32, u32, u32, u32);

/// What frames an answer, read from its fields as they go by (comparing standard names
/// is one byte each).
#[derive(Default)]
struct Facts {
    has_length: bool,
    /// The one length every `Content-Length` value states, while they agree.
    length: Option<u64>,
    /// A `Content-Length` value that is not a number, or disagrees with another.
    bad_length: bool,
    has_coding: bool,
    /// The last `Transfer-Encoding` field's last coding is `chunked` (the one that frames
    /// the body).
    last_coding_chunked: bool,
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists fields outside the fixed hop-by-hop set.
    lists_others: bool,
    /// A field of the fixed hop-by-hop set was left out of the map.
    held_back: bool,
}

/// What a field does in an answer, as far as reading it goes: found once per name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Length,
    Coding,
    Connection,
    /// Another field of the fixed hop-by-hop set.
    Hop,
    /// A field passed on to the client.
    Plain,
}

impl Role {
    fn of(name: &HeaderName) -> Role {
        if name == header::CONTENT_LENGTH {
            Role::Length
        } else if name == header::TRANSFER_ENCODING {
            Role::Coding
        } else if name == header::CONNECTION {
            Role::Connection
        } else if hop::always_hop_by_hop(name) {
            Role::Hop
        } else {
            Role::Plain
        }
    }
}

impl Facts {
    /// Takes note of one field; whether it goes into the answer's map (the fixed
    /// hop-by-hop set does not).
    fn observe(&mut self, role: Role, value: &HeaderValue) -> bool {
        let bytes = value.as_bytes();
        match role {
            Role::Length => {
                self.has_length = true;
                for part in bytes.split(|b| *b == b',') {
                    let part = part.trim_ascii();
                    // At most 19 digits: always within a u64.
                    if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                        self.bad_length = true;
                        continue;
                    }
                    let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                    self.bad_length |= self.length.is_some_and(|l| l != n);
                    self.length = Some(n);
                }
                true
            }
            Role::Coding => {
                self.has_coding = true;
                self.last_coding_chunked = bytes
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                self.held_back = true;
                false
            }
            Role::Connection => {
                // An upstream's usual `keep-alive` is known without taking it apart (it
                // is in the fixed set: it names no other field).
                if !bytes.eq_ignore_ascii_case(b"keep-alive") {
                    self.close |= lists_token(bytes, b"close");
                    self.lists_others |= hop::lists_other_fields(bytes);
                }
                self.held_back = true;
                false
            }
            Role::Hop => {
                self.held_back = true;
                false
            }
            Role::Plain => true,
        }
    }

    /// The length the `Content-Length` fields state, or `None` when one is not a number
    /// or they disagree.
    fn length(&self) -> Option<u64> {
        self.length.filter(|_| !self.bad_length)
    }
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// One step of decoding a chunked body from `input`.
#[derive(Debug)]
enum Step {
    Data(Bytes),
    /// More input is needed.
    More,
    /// The body ended, with its trailers if it had any.
    End(Option<HeaderMap>),
}

#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body from the upstream: {0}")]
pub struct ChunkError(&'static str);

fn decode_chunk(state: &mut Chunk, input: &mut BytesMut) -> Result<Step, ChunkError> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(lf) = input.iter().position(|b| *b == b'\n') else {
                    if input.len() > MAX_CHUNK_LINE {
                        return Err(ChunkError("chunk-size line too long"));
                    }
                    return Ok(Step::More);
                };
                if lf > MAX_CHUNK_LINE {
                    return Err(ChunkError("chunk-size line too long"));
                }
                let line = &input[..lf];
                let line = line
                    .strip_suffix(b"\r")
                    .ok_or(ChunkError("chunk-size line without CR"))?;
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let rest = line[digits..].trim_ascii_start();
                if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                    return Err(ChunkError("invalid chunk size"));
                }
                let size = line[..digits]
                    .iter()
                    .fold(0u64, |n, d| (n << 4) | u64::from(hex_value(*d)));
                input.advance(lf + 1);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if input.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let data = input.split_to(take).freeze();
                let left = left - take as u64;
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                return Ok(Step::Data(data));
            }
            Chunk::DataEnd => {
                if input.len() < 2 {
                    return Ok(Step::More);
                }
                if &input[..2] != b"\r\n" {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                input.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                return match httparse::parse_headers(input, &mut fields) {
                    Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILER_BYTES => {
                        Err(ChunkError("trailers too large"))
                    }
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for field in fields.iter() {
                            let name = HeaderName::from_bytes(field.name.as_bytes())
                                .map_err(|_| ChunkError("invalid trailer name"))?;
                            let value = HeaderValue::from_bytes(field.value)
                                .map_err(|_| ChunkError("invalid trailer value"))?;
                            trailers.append(name, value);
                        }
                        input.advance(len);
                        Ok(Step::End((!trailers.is_empty()).then_some(trailers)))
                    }
                    Ok(httparse::Status::Partial) if input.len() > MAX_TRAILER_BYTES => {
                        Err(ChunkError("trailers too large"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::More),
                    Err(_) => Err(ChunkError("malformed trailers")),
                };
            }
        }
    }
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// For the fuzz target: `bytes` read as an upstream's response to a GET, its first
/// `split` bytes arriving before the rest. The status and the body's data, or an error
/// (also when the bytes end before the response does); bytes past the response are
/// ignored.
#[cfg(feature = "fuzzing")]
pub fn read_response(bytes: &[u8], split: usize) -> Result<(u16, Vec<u8>), String> {
    let split = split.min(bytes.len());
    let mut input = BytesMut::from(&bytes[..split]);
    let mut rest = Some(&bytes[split..]);
    let mut more = |input: &mut BytesMut| match rest.take() {
        Some(r) => {
            input.extend_from_slice(r);
            Ok(())
        }
        None => Err("the response ended early".to_string()),
    };
    let mut names = FieldNames::default();
    let answer = loop {
        match parse_head(&mut input, &mut names, false).map_err(|e| e.to_string())? {
            Parsed::Final(answer) => break answer,
            Parsed::Interim => {}
            Parsed::Partial => more(&mut input)?,
        }
    };
    let status = answer.response.status().as_u16();
    let mut data = Vec::new();
    match answer.body {
        Framing::Empty => {}
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            while input.len() < n {
                more(&mut input)?;
            }
            data.extend_from_slice(&input[..n]);
        }
        Framing::Chunked => {
            let mut state = Chunk::Size;
            loop {
                match decode_chunk(&mut state, &mut input).map_err(|e| e.to_string())? {
                    Step::Data(d) => data.extend_from_slice(&d),
                    Step::More => more(&mut input)?,
                    Step::End(_) => break,
                }
            }
        }
        Framing::UntilClose => {
            let _ = more(&mut input);
            data.extend_from_slice(&input);
        }
    }
    Ok((status, data))
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the upstream's body: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before the end of the body")]
    Truncated,
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// Where a response body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// The upstream's response body, read from its connection as the client's side polls
/// it. Read to its end, the connection goes back to its pool if it may carry another
/// request; dropped before (the client went away), the connection closes, since the rest
/// of the body would have to be read and thrown away first.
pub struct UpstreamBody {
    conn: Option<Conn>,
    reading: Reading,
    /// Where the connection goes back; `None` when it must not be reused.
    pool: Option<Arc<Pool>>,
}

impl Answer {
    /// Whether hop-by-hop fields are still among the answer's fields.
    pub(super) fn hop_fields_kept(&self) -> bool {
        self.hop_fields_kept
    }

    /// The response head and its body, read from `conn`. The connection returns to
    /// `pool` after the body, if there is one and this answer allows its reuse.
    pub(super) fn into_response(
        self,
        conn: Conn,
        pool: Option<Arc<Pool>>,
    ) -> Response<UpstreamBody> {
        let reading = match self.body {
            Framing::Empty => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Chunk::Size),
            Framing::UntilClose => Reading::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            reading,
            pool: pool.filter(|_| self.reusable),
        };
        if reading == Reading::Done {
            body.end();
        }
        self.response.map(|()| body)
    }

    /// The status answered.
    pub(super) fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The head of a `101`, and the connection's bytes past it, which already belong to
    /// the switched protocol.
    pub(super) fn switched(self, conn: Conn) -> (Response<()>, Io, Bytes) {
        (self.response, conn.io, conn.input.freeze())
    }
}

impl UpstreamBody {
    /// The body was read to its end: the connection goes back if nothing is left over.
    fn end(&mut self) {
        self.reading = Reading::Done;
        if let Some(mut conn) = self.conn.take()
            && let Some(pool) = self.pool.take()
            && conn.input.is_empty()
        {
            conn.trim();
            pool.checkin(conn);
        }
    }

    fn fail(&mut self, error: ReadError) -> Poll<Option<Result<Frame<Bytes>, ReadError>>> {
        self.conn = None;
        self.reading = Reading::Done;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReadError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.reading {
                Reading::Done => {
                    this.end();
                    return Poll::Ready(None);
                }
                Reading::Length(left) => {
                    if conn.input.is_empty() {
                        let want = usize::try_from(left).unwrap_or(MAX_READ).clamp(1, MAX_READ);
                        match ready!(conn.poll_fill(cx, want)) {
                            Ok(0) => return this.fail(ReadError::Truncated),
                            Ok(_) => {}
                            Err(e) => return this.fail(e.into()),
                        }
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(conn.input.len());
                    let data = conn.input.split_to(take).freeze();
                    let left = left - take as u64;
                    if left == 0 {
                        this.end();
                    } else {
                        this.reading = Reading::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Chunked(mut state) => {
                    let step = decode_chunk(&mut state, &mut conn.input);
                    this.reading = Reading::Chunked(state);
                    match step {
                        Err(e) => return this.fail(e.into()),
                        Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Step::End(trailers)) => {
                            this.end();
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Ok(Step::More) => {
                            let want = match state {
                                Chunk::Data(left) => usize::try_from(left)
                                    .unwrap_or(MAX_READ)
                                    .clamp(READ, MAX_READ),
                                _ => READ,
                            };
                            match ready!(conn.poll_fill(cx, want)) {
                                Ok(0) => return this.fail(ReadError::Truncated),
                                Ok(_) => {}
                                Err(e) => return this.fail(e.into()),
                            }
                        }
                    }
                }
                Reading::UntilClose => {
                    if !conn.input.is_empty() {
                        let data = conn.input.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, READ)) {
                        Ok(0) => {
                            this.end();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(e.into()),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done | Reading::Length(0))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.reading {
            Reading::Done => http_body::SizeHint::with_exact(0),
            Reading::Length(n) => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::super::pool::Endpoint;
    use super::*;

    #[test]
    fn field_names_kept_from_answer_to_answer_are_the_names_read() {
        let long = "x".repeat(1500);
        let pool: [&[u8]; 10] = [
            b"Content-Type",
            b"content-type",
            b"Content-Length",
            b"Server",
            b"X-App-Field",
            b"x-app-field",
            b"Bad Name",
            b"",
            b"ETag",
            long.as_bytes(),
        ];
        let mut names = FieldNames::default();
        // A fixed pseudo-random walk: answers of 0 to 7 fields, often repeating the last.
        let mut next = draws(7);
        let mut last: Vec<&[u8]> = Vec::new();
        for _ in 0..2_000 {
            let answer: Vec<&[u8]> = if next(3) == 0 {
                last.clone()
            } else {
                (0..next(8)).map(|_| pool[next(10) as usize]).collect()
            };
            for (i, raw) in answer.iter().enumerate() {
                let expected = HeaderName::from_bytes(raw).ok();
                let got = names.name(i, raw).ok().map(|(name, ..)| name);
                assert_eq!(got, expected, "field {i} {raw:?}");
            }
            assert!(names.raw.len() <= NAMES_KEPT);
            last = answer;
        }
    }

    /// Pseudo-random draws below `n`, the same sequence for the same seed.
    fn draws(mut seed: u32) -> impl FnMut(u32) -> u32 {
        move |n| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) % n
        }
    }

    #[test]
    fn a_connection_value_is_judged_the_same_whether_usual_or_not() {
        for value in [
            "close",
            "CLOSE",
            "Close",
            "keep-alive",
            "Keep-Alive",
            "KEEP-ALIVE",
            " close",
            "close ",
            "keep-alive, close",
            "close, X-Hop",
            "X-Hop",
            "keep-alive, X-Hop",
            "keep-alive,",
            "upgrade",
            "",
        ] {
            let mut facts = Facts::default();
            assert!(!facts.observe(Role::Connection, &HeaderValue::from_static(value)));
            let read_apart = (
                lists_token(value.as_bytes(), b"close"),
                hop::lists_other_fields(value.as_bytes()),
            );
            assert_eq!((facts.close, facts.lists_others), read_apart, "{value:?}");
        }
    }

    #[test]
    fn a_head_read_by_comparison_with_the_last_is_read_as_httparse_reads_it() {
        // Heads of the same shape as the one before, most with a byte or two changed to
        // something a parser must notice: line ends, controls, folding, colons, spaces.
        let bytes: [u8; 16] = [
            b'\r', b'\n', 0, 0x7f, b' ', b'\t', b':', 0x0c, 0x80, 0xff, b'a', b'-', b'\x0b', b'H',
            b'1', b'/',
        ];
        let names_pool = [
            "Content-Type",
            "Cache-Control",
            "Server",
            "Date",
            "X-A",
            "ETag",
        ];
        let mut next = draws(7);
        let (mut replayed, mut declined) = (0, 0);
        for round in 0..3_000 {
            let count = next(6) as usize;
            let names: Vec<&str> = (0..count)
                .map(|_| names_pool[next(names_pool.len() as u32) as usize])
                .collect();
            let status = [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found",
                "HTTP/1.0 200",
                "\r\nHTTP/1.1 302 Found",
            ][next(4) as usize];
            let head = |n: usize| {
                let mut raw = format!("{status}\r\n");
                for (i, name) in names.iter().enumerate() {
                    let pad = ["", " ", "\t", "  "][(n + i) % 4];
                    raw.push_str(&format!("{name}:{pad}v{n}-{i}{pad}\r\n"));
                }
                raw.push_str("\r\n");
                raw.into_bytes()
            };
            // The connection reads a first answer of that shape.
            let mut fields = FieldNames::default();
            let first = head(0);
            let mut input = BytesMut::from(&first[..]);
            assert!(matches!(
                parse_head(&mut input, &mut fields, false),
                Ok(Parsed::Final(_))
            ));
            for n in 1..8 {
                let mut raw = head(n);
                for _ in 0..next(3) {
                    if raw.is_empty() {
                        break;
                    }
                    let at = next(raw.len() as u32) as usize;
                    let byte = bytes[next(bytes.len() as u32) as usize];
                    match next(4) {
                        0 => raw[at] = byte,
                        1 => raw.insert(at, byte),
                        2 => {
                            raw.remove(at);
                        }
                        _ => raw.truncate(at),
                    }
                }
                let (mut quick, mut full) = (Vec::new(), Vec::new());
                let by_httparse = read_fields(&raw, &mut full);
                let Some(read) = replay(&raw, &fields, &mut quick) else {
                    declined += 1;
                    continue;
                };
                replayed += 1;
                let expected = by_httparse.ok().flatten();
                assert_eq!(Some(read), expected, "round {round}: {raw:?}");
                let text = |spans: &[Span]| {
                    spans
                        .iter()
                        .map(|&(ns, ne, vs, ve)| {
                            (
                                raw[ns as usize..ne as usize].to_vec(),
                                raw[vs as usize..ve as usize].to_vec(),
                            )
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(text(&quick), text(&full), "round {round}: {raw:?}");
            }
        }
        // Both ways are walked often.
        assert!(
            replayed > 5_000 && declined > 5_000,
            "{replayed} {declined}"
        );
    }

    #[test]
    fn answers_read_after_others_on_a_connection_are_read_as_if_they_came_first() {
        // Fields from which answers are drawn: repeats, hop-by-hop ones, a Connection that
        // lists another field, framing, and names whose bytes differ only in case.
        let pool = [
            "Content-Type: text/html",
            "content-type: text/plain",
            "Content-Length: 5",
            "Content-Length: 5, 5",
            "Content-Length: 6",
            "Content-Length: x",
            "Set-Cookie: a=1",
            "Set-Cookie: b=2",
            "Server: app",
            "X-Hop: 1",
            "Connection: keep-alive",
            "Connection: X-Hop",
            "Connection: close",
            "Keep-Alive: timeout=5",
            "Transfer-Encoding: chunked",
            "ETag: \"v\"",
            "Date: Tue, 01 Dec 2026 00:00:00 GMT",
        ];
        let mut next = draws(11);
        let mut names = FieldNames::default();
        let mut last: Vec<&str> = Vec::new();
        let (mut filled, mut answers) = (0, 0);
        for n in 0..5_000 {
            // Often the same names again, with new values: the case the template is for.
            let fields: Vec<String> = if next(3) > 0 && !last.is_empty() {
                last.iter()
                    .map(|f| format!("{}: {n}", f.split(':').next().unwrap_or_default()))
                    .collect()
            } else {
                last = (0..next(7))
                    .map(|_| pool[next(pool.len() as u32) as usize])
                    .collect();
                last.iter().map(|f| f.to_string()).collect()
            };
            let status = ["200 OK", "101 Switching Protocols", "204 No Content"][next(3) as usize];
            let raw = format!(
                "HTTP/1.1 {status}\r\n{}\r\n",
                fields
                    .iter()
                    .map(|f| format!("{f}\r\n"))
                    .collect::<String>()
            );
            let had_template = names.template.is_some();
            let mut input = BytesMut::from(raw.as_str());
            let kept = parse_head(&mut input, &mut names, false);
            let fresh = head(&raw, false);
            match (kept, fresh) {
                (Ok(Parsed::Final(a)), Ok(b)) => {
                    answers += 1;
                    filled += usize::from(had_template && names.template.is_some());
                    assert_eq!(a.response.headers(), b.response.headers(), "{raw:?}");
                    let order = |a: &Answer| {
                        a.response
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(order(&a), order(&b), "{raw:?}");
                    assert_eq!(
                        (a.body, a.reusable, a.hop_fields_kept),
                        (b.body, b.reusable, b.hop_fields_kept),
                        "{raw:?}"
                    );
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{raw:?}: {:?} against {:?}", a.is_ok(), b.is_ok()),
            }
        }
        // The walk does go through the template, most of the time.
        assert!(filled > answers / 5, "{filled} of {answers}");
    }

    fn head(raw: &str, head_request: bool) -> Result<Answer, HeadError> {
        let mut input = BytesMut::from(raw);
        let mut names = FieldNames::default();
        loop {
            match parse_head(&mut input, &mut names, head_request)? {
                Parsed::Final(answer) => return Ok(answer),
                Parsed::Interim => continue,
                Parsed::Partial => panic!("partial head"),
            }
        }
    }

    #[test]
    fn the_fixed_hop_by_hop_set_stays_out_of_the_answer_unless_needed() {
        let names = |a: &Answer| {
            let mut names: Vec<String> =
                a.response.headers().keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        // An upstream's usual answer: its framing and keep-alive fields are read, not kept.
        let a = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Chunked, true));
        assert_eq!(names(&a), ["x-app"]);
        // The last field's last coding frames the body, and a close in any field counts.
        let a = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\
             Connection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::UntilClose, false));
        // A Connection that names other fields: all is kept, for the proxy to strip.
        let a = head(
            "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Content-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            names(&a),
            ["connection", "content-length", "keep-alive", "x-hop"]
        );
        let mut headers = a.response.headers().clone();
        hop::strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-length"]
        );
        // A switch of protocols is checked against its Upgrade and Connection fields.
        let a = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(names(&a), ["connection", "upgrade"]);
        assert!(a.hop_fields_kept());
        // What the proxy does not strip again (hop_fields_kept false) has nothing to strip.
        for raw in [
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, TE\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTrailer: x\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nServer: app\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
        ] {
            let a = head(raw, false).unwrap();
            let mut stripped = a.response.headers().clone();
            hop::strip_hop_by_hop(&mut stripped);
            assert_eq!(
                a.hop_fields_kept(),
                &stripped != a.response.headers(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn the_framing_of_a_response_follows_rfc_9112_and_doubt_closes_the_connection() {
        let a = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Length(5), true));
        let a = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Length(5), true));
        let a = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Chunked, true));
        // Both: chunked wins, the length is not passed on, the connection is not reused.
        let a = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Chunked, false));
        assert!(!a.response.headers().contains_key(header::CONTENT_LENGTH));
        let a = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((a.body, a.reusable), (Framing::UntilClose, false));
        let a = head("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((a.body, a.reusable), (Framing::UntilClose, false));
        let a = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false).unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Length(2), false));
        let a = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!a.reusable);
        // No body, whatever the fields say.
        let a = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert_eq!((a.body, a.reusable), (Framing::Empty, true));
        assert_eq!(a.response.headers()[header::CONTENT_LENGTH], "9");
        for status in [204, 304] {
            let a = head(&format!("HTTP/1.1 {status} X\r\n\r\n"), false).unwrap();
            assert_eq!((a.body, a.reusable), (Framing::Empty, true));
        }
        // Interim responses are passed over.
        let a = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(a.response.status(), 201);
        assert!(!a.response.headers().contains_key("link"));

        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, false), Err(HeadError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
    }

    /// Decodes `wire` fed one byte at a time: the data, and the trailers.
    fn dechunk(wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, usize), ChunkError> {
        let mut state = Chunk::Size;
        let mut input = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunk(&mut state, &mut input)? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::End(trailers) => return Ok((data, trailers, input.len())),
                Step::More => {
                    let Some(byte) = wire.get(fed) else {
                        return Err(ChunkError("input ended"));
                    };
                    input.extend_from_slice(&[*byte]);
                    fed += 1;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split_and_malformed_ones_are_refused() {
        let (data, trailers, left) =
            dechunk(b"5;name=\"v\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n").unwrap();
        assert_eq!(data, b"hello0123456789");
        assert_eq!(trailers.unwrap()["x-sum"], "1");
        assert_eq!(left, 0);
        let (data, trailers, _) = dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!((data.as_slice(), trailers.is_none()), (&b"abc"[..], true));

        let long_line = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        let long_trailer = format!("0\r\nx: {}\r\n\r\n", "y".repeat(MAX_TRAILER_BYTES));
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"5\n",
            b"-1\r\n",
            b"5 x\r\n",
            b"11111111111111111\r\nx",
            b"3\r\nabcX",
            long_line.as_bytes(),
            long_trailer.as_bytes(),
        ] {
            assert!(
                dechunk(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A scripted upstream: on each connection in turn, answers each request (once its
    /// head and `Content-Length` body have arrived) with the next scripted bytes, and
    /// closes the connection after its last answer. Returns what it read.
    async fn upstream(
        script: Vec<Vec<&'static [u8]>>,
    ) -> (Arc<Pool>, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool_at(listener.local_addr().unwrap().port(), None);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answers in script {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                for answer in answers {
                    let request = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                            if buf.len() >= end + 4 + length {
                                let all: Vec<u8> = buf.drain(..end + 4 + length).collect();
                                break String::from_utf8_lossy(&all).to_string();
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        let n = socket.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the client closed early");
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    seen.push(request);
                    socket.write_all(answer).await.unwrap();
                }
            }
            seen
        });
        (pool, task)
    }

    /// A pool for an upstream on loopback at `port`.
    fn pool_at(
        port: u16,
        tls: Option<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
    ) -> Arc<Pool> {
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls,
            connect_timeout: Duration::from_secs(5),
        };
        Pool::new(endpoint, 8, Duration::from_secs(60))
    }

    fn get(path: &str) -> Request<()> {
        http::Request::get(path)
            .header(header::HOST, "app")
            .body(())
            .unwrap()
    }

    async fn fetch(
        pool: &Arc<Pool>,
        parts: &Request<()>,
        body: RequestBody,
    ) -> (Response<()>, Bytes) {
        let mut conn = match pool.checkout(Instant::now()) {
            Some(conn) => conn,
            None => Conn::new(pool.connect().await.unwrap()),
        };
        let answer = conn.exchange(parts, &[], body).await.unwrap();
        let (head, body) = answer.into_response(conn, Some(pool.clone())).into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(head, ()), body)
    }

    fn idle(pool: &Pool) -> usize {
        let mut n = 0;
        while let Some(conn) = pool.checkout(Instant::now()) {
            n += 1;
            drop(conn);
        }
        n
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_after_a_cleanly_ended_response() {
        let (pool, peer) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            // One byte too many: the connection must not carry another request.
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok!",
        ]])
        .await;
        let (_, body) = fetch(&pool, &get("/a"), RequestBody::empty()).await;
        assert_eq!(body, "hello");
        let (_, body) = fetch(&pool, &get("/b"), RequestBody::empty()).await;
        assert_eq!(body, "hi");
        let (_, body) = fetch(&pool, &get("/c"), RequestBody::empty()).await;
        assert_eq!(body, "ok");
        assert_eq!(idle(&pool), 0, "the connection with a stray byte was kept");
        let seen = peer.await.unwrap();
        assert_eq!(seen.len(), 3, "all three went over the one connection");
        assert!(
            seen[0].starts_with("GET /a HTTP/1.1\r\nhost: app\r\n\r\n"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_or_wrote_to_is_passed_over() {
        let (pool, peer) = upstream(vec![
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"],
        ])
        .await;
        let (_, body) = fetch(&pool, &get("/a"), RequestBody::empty()).await;
        assert_eq!(body, "a");
        // The upstream closes the connection after its answer: it is not handed out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            pool.checkout(Instant::now()).is_none(),
            "a closed connection was handed out"
        );
        let (_, body) = fetch(&pool, &get("/b"), RequestBody::empty()).await;
        assert_eq!(body, "b");
        assert_eq!(peer.await.unwrap().len(), 2);

        // Bytes nobody asked for, sent while the connection idles.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rogue = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let pool = pool_at(port, None);
        let (_, body) = fetch(&pool, &get("/a"), RequestBody::empty()).await;
        assert_eq!(body, "a");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            pool.checkout(Instant::now()).is_none(),
            "a connection with unasked bytes was handed out"
        );
        rogue.abort();
    }

    #[tokio::test]
    async fn an_upstream_that_answers_before_reading_the_body_is_heard_and_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
                .await
                .unwrap();
            // Reads nothing more, and keeps the connection open a while.
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let pool = pool_at(port, None);
        let mut parts = get("/upload");
        *parts.method_mut() = Method::POST;
        // Far more than the socket buffers hold: sending all of it would block.
        let body = RequestBody::full(vec![b'x'; 64 * 1024 * 1024]);
        let (head, body) =
            tokio::time::timeout(Duration::from_secs(10), fetch(&pool, &parts, body))
                .await
                .expect("blocked sending a body nobody reads");
        assert_eq!((head.status().as_u16(), &body[..]), (413, &b"big"[..]));
        assert_eq!(idle(&pool), 0);
        peer.abort();
    }

    #[tokio::test]
    async fn a_request_body_is_sent_with_its_own_length_not_the_clients() {
        let (pool, peer) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ]])
        .await;
        let mut post = get("/form");
        *post.method_mut() = Method::POST;
        // The client's own length is not trusted: the body's is written.
        post.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        fetch(&pool, &post, RequestBody::full("a=1")).await;
        post.headers_mut().remove(header::CONTENT_LENGTH);
        fetch(&pool, &post, RequestBody::empty()).await;
        let seen = peer.await.unwrap();
        assert!(
            seen[0].ends_with("content-length: 3\r\n\r\na=1"),
            "{}",
            seen[0]
        );
        assert!(!seen[0].contains("999"));
        assert!(
            seen[1].ends_with("content-length: 0\r\n\r\n"),
            "{}",
            seen[1]
        );
    }

    #[tokio::test]
    async fn a_truncated_or_oversized_response_is_an_error_not_a_short_answer() {
        let (pool, _peer) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ]])
        .await;
        let mut conn = Conn::new(pool.connect().await.unwrap());
        let answer = conn
            .exchange(&get("/"), &[], RequestBody::empty())
            .await
            .unwrap();
        let body = answer.into_response(conn, Some(pool.clone())).into_body();
        assert!(body.collect().await.is_err());
        assert_eq!(idle(&pool), 0);

        let huge: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
                "a".repeat(MAX_HEAD_BYTES)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (pool, _peer) = upstream(vec![vec![huge]]).await;
        let mut conn = Conn::new(pool.connect().await.unwrap());
        let failure = conn
            .exchange(&get("/"), &[], RequestBody::empty())
            .await
            .err()
            .unwrap();
        assert!(failure.reason.contains("larger than"), "{}", failure.reason);
    }

    /// A certificate authority and a certificate for localhost it signed, made with
    /// `openssl`: (CA certificate, server certificate, server key), in PEM.
    fn certificates() -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-h1-tls-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &str| {
            std::process::Command::new("openssl")
                .args(args.split(' '))
                .current_dir(&dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=ca -keyout ca.key -out ca.pem",
        ) && openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        ) && openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out server.pem",
        );
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let found = made.then(|| (read("ca.pem"), read("server.pem"), read("server.key")));
        let _ = std::fs::remove_dir_all(&dir);
        found
    }

    #[tokio::test]
    async fn an_https_upstream_keeps_its_connection_and_its_close_notify_is_seen() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let Some((ca, cert, key)) = certificates() else {
            eprintln!("skipped: openssl is not installed");
            return;
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(&cert).unwrap()],
                PrivateKeyDer::from_pem_slice(&key).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n",
            ];
            let mut buf = Vec::new();
            for answer in answers {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = tls.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.clear();
                tls.write_all(answer).await.unwrap();
            }
            // close_notify, with the TCP connection still open.
            tls.shutdown().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = pool_at(
            port,
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(client)),
                ServerName::try_from("localhost").unwrap(),
            )),
        );
        let both = async {
            let (_, first) = fetch(&pool, &get("/1"), RequestBody::empty()).await;
            // The peer accepts one connection only: this must reuse it.
            let (_, second) = fetch(&pool, &get("/2"), RequestBody::empty()).await;
            (first, second)
        };
        let (first, second) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the second request did not reuse the TLS connection");
        assert_eq!((&first[..], &second[..]), (&b"first"[..], &b"second"[..]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            pool.checkout(Instant::now()).is_none(),
            "a connection the upstream closed with close_notify was handed out"
        );
        peer.abort();
    }
}
