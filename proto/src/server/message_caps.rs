//! The message-size cap of every service a server serves (threat V4), as one
//! layer around all routes, health and reflection included: a gRPC message
//! longer than the cap is refused with RESOURCE_EXHAUSTED, in either
//! direction, and no status message longer than [`MAX_STATUS_MESSAGE`] leaves
//! the server.
//!
//! tonic's own per-service limits answer OUT_OF_RANGE, and a service built
//! without them takes 4 MiB. This layer reads the length prefix of each
//! message as the body streams through, so it refuses before tonic buffers
//! anything, whatever the service was built with. Where a service's own
//! limit fires first (its encoder checks before the body reaches us), the
//! layer re-codes that status.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::{Code, Status};
use tower_layer::Layer;

/// A status message longer than this many bytes is cut to it, with a note of
/// its full length. Even percent-encoded it stays well under the 8–16 kB
/// header limits of common clients, so an error is read as the error it is
/// and never as a metadata-size failure.
pub const MAX_STATUS_MESSAGE: usize = 1024;

/// A gRPC message's prefix: one compression flag byte, four length bytes.
const PREFIX: usize = 5;

/// Wraps every route in a [`MessageCap`] of `max` bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct MessageCapLayer {
    pub(super) max: usize,
}

impl<S> Layer<S> for MessageCapLayer {
    type Service = MessageCap<S>;
    fn layer(&self, inner: S) -> MessageCap<S> {
        MessageCap {
            inner,
            max: self.max,
        }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub(super) struct MessageCap<S> {
    inner: S,
    max: usize,
}

impl<S> Service<Request<Body>> for MessageCap<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let max = self.max;
        let request = request.map(|body| Body::new(CappedBody::new(body, max, Direction::In)));
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A trailers-only response (every unary error) carries its status here.
            fix_status(response.headers_mut());
            Ok(response.map(|body| Body::new(CappedBody::new(body, max, Direction::Out))))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// A request body, read by the service.
    In,
    /// A response body, sent to the client.
    Out,
}

/// A body whose messages are checked against the cap as they pass.
struct CappedBody {
    inner: Body,
    lengths: MessageLengths,
    max: usize,
    direction: Direction,
    ended: bool,
}

impl CappedBody {
    fn new(inner: Body, max: usize, direction: Direction) -> Self {
        Self {
            inner,
            lengths: MessageLengths::default(),
            max,
            direction,
            ended: false,
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        if let Some(data) = frame.data_ref() {
            let Some(len) = this.lengths.feed(data, this.max) else {
                return Poll::Ready(Some(Ok(frame)));
            };
            this.ended = true;
            let what = match this.direction {
                Direction::In => "request",
                Direction::Out => "response",
            };
            let status = Status::resource_exhausted(format!(
                "{what} message of {len} bytes is over the limit of {} bytes",
                this.max
            ));
            return Poll::Ready(Some(match this.direction {
                // The service's decoder reports it to the client.
                Direction::In => Err(status),
                // Headers are gone already: the status goes in the trailers
                // (an error here would reset the stream without one).
                Direction::Out => {
                    tracing::warn!(%status, "response not sent");
                    let mut trailers = HeaderMap::new();
                    status
                        .add_header(&mut trailers)
                        .map(|()| Frame::trailers(trailers))
                }
            }));
        }
        Poll::Ready(Some(Ok(match frame.into_trailers() {
            Ok(mut trailers) => {
                fix_status(&mut trailers);
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Never exact: the body may be cut short.
        SizeHint::default()
    }
}

/// Follows the message prefixes of a gRPC body across data frames.
#[derive(Debug, Default)]
struct MessageLengths {
    prefix: [u8; PREFIX],
    have: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl MessageLengths {
    /// Reads `chunk`; returns the length of the first message that declares
    /// more than `max` bytes, before any byte of it is passed on.
    fn feed(&mut self, mut chunk: &[u8], max: usize) -> Option<usize> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len());
                self.remaining -= n;
                chunk = &chunk[n..];
                continue;
            }
            let n = (PREFIX - self.have).min(chunk.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&chunk[..n]);
            self.have += n;
            chunk = &chunk[n..];
            if self.have == PREFIX {
                self.have = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > max {
                    return Some(len);
                }
                self.remaining = len;
            }
        }
        None
    }
}

/// Re-codes tonic's own size-limit status (OUT_OF_RANGE) as RESOURCE_EXHAUSTED
/// and cuts a status message over [`MAX_STATUS_MESSAGE`]; leaves anything else.
fn fix_status(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    // tonic says "Error, decoded (or encoded) message length too large: ...".
    let over_limit =
        status.code() == Code::OutOfRange && status.message().contains("message length too large");
    let long = status.message().len() > MAX_STATUS_MESSAGE;
    if !over_limit && !long {
        return;
    }
    let code = if over_limit {
        Code::ResourceExhausted
    } else {
        status.code()
    };
    let mut message = status.message().to_string();
    if long {
        // A handler echoed too much: a bug to fix there, contained here.
        tracing::warn!(
            code = ?status.code(),
            bytes = message.len(),
            start = %permafrost_core::error::preview(&message),
            "status message cut to {MAX_STATUS_MESSAGE} bytes"
        );
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = format!("{}… ({} bytes)", &message[..end], message.len());
    }
    let fixed = Status::with_details(code, message, Bytes::copy_from_slice(status.details()));
    let mut fresh = HeaderMap::new();
    if fixed.add_header(&mut fresh).is_err() {
        return;
    }
    for name in [
        Status::GRPC_STATUS,
        Status::GRPC_MESSAGE,
        Status::GRPC_STATUS_DETAILS,
    ] {
        match fresh.remove(&name) {
            Some(value) => headers.insert(name, value),
            None => headers.remove(&name),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.resize(PREFIX + len as usize, 7);
        m
    }

    #[test]
    fn v4_lengths_are_followed_across_frames() {
        let mut body = message(10);
        body.extend(message(3));
        let mut over = message(0);
        over.truncate(PREFIX);
        over[1..].copy_from_slice(&11u32.to_be_bytes());
        body.extend(over);
        // Split everywhere, prefixes included: the third message is caught.
        for cut in 1..body.len() {
            let mut lengths = MessageLengths::default();
            let first = lengths.feed(&body[..cut], 10);
            let second = lengths.feed(&body[cut..], 10);
            assert_eq!(first.or(second), Some(11), "cut at {cut}");
        }
        // At the cap exactly, nothing is refused.
        let mut lengths = MessageLengths::default();
        assert_eq!(lengths.feed(&message(10), 10), None);
        assert_eq!(lengths.feed(&message(11), 10), Some(11));
    }

    #[test]
    fn v4_tonic_size_limit_becomes_resource_exhausted() {
        let mut headers = HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes",
        )
        .add_header(&mut headers)
        .expect("headers");
        fix_status(&mut headers);
        let status = Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("2000000 bytes"), "{status}");
    }

    #[test]
    fn v4_other_statuses_are_left_alone_and_long_messages_cut() {
        let mut headers = HeaderMap::new();
        Status::out_of_range("page 9 of 3")
            .add_header(&mut headers)
            .expect("headers");
        let before = headers.clone();
        fix_status(&mut headers);
        assert_eq!(headers, before);

        let mut headers = HeaderMap::new();
        Status::invalid_argument(format!("request_id: {}", "é".repeat(10_000)))
            .add_header(&mut headers)
            .expect("headers");
        fix_status(&mut headers);
        let status = Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE + 32);
        assert!(status.message().starts_with("request_id: éé"));
        assert!(status.message().ends_with("… (20012 bytes)"), "{status}");
    }
}
