//! What the server sees of every request, in one tower layer in front of all its services: a
//! tracing span per request (`rpc`, `peer`, and, once the handler knows them, `principal` and
//! `resource`), a log line when it is answered (debug; warn for codes that mean the broker is
//! at fault), and, when metrics are on, its count and latency by rpc and status code.
//!
//! The status code of a gRPC answer is in its headers when the answer is an error before any
//! message ("trailers-only"), else in the trailers after the last message: the response body is
//! wrapped to read them. A stream whose client goes away before the trailers counts as
//! CANCELLED.

use super::{ConnInfo, metrics::Metrics, metrics::Rpc};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};
use tonic::{
    Code, Status,
    body::Body,
    codegen::{Service, http},
};
use tracing::{Instrument, Span, field};

/// The layer: spans and logs always, metrics when `metrics` is set.
#[derive(Debug, Clone)]
pub(super) struct Observe {
    metrics: Option<Arc<Metrics>>,
}

impl Observe {
    pub(super) fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Observe { metrics }
    }
}

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service whose requests are observed.
#[derive(Debug, Clone)]
pub(super) struct Observed<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Observed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let rpc = self.metrics.as_ref().map(|m| m.rpc(path).clone());
        let method = path.rsplit('/').next().unwrap_or(path);
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.remote_addr);
        let span = tracing::info_span!(
            "rpc",
            rpc = method,
            peer = field::Empty,
            principal = field::Empty,
            resource = field::Empty,
        );
        if let Some(peer) = peer {
            span.record("peer", field::display(peer));
        }
        let answered = Answered {
            metrics: self.metrics.clone().zip(rpc),
            started: Instant::now(),
            span: span.clone(),
        };
        // The service that was polled ready handles this request; its clone takes the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(request).instrument(span);
        Box::pin(async move {
            let response = future.await?;
            if let Some(status) = Status::from_header_map(response.headers()) {
                answered.done(status.code());
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = ObservedBody {
                inner: body,
                answered: Some(answered),
            };
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// What to record once a request's status code is known.
struct Answered {
    metrics: Option<(Arc<Metrics>, Rpc)>,
    started: Instant,
    span: Span,
}

impl Answered {
    fn done(self, code: Code) {
        let took = self.started.elapsed();
        if let Some((metrics, rpc)) = &self.metrics {
            metrics.answered(rpc, code, took);
        }
        let code = super::metrics::code_label(code);
        let ms = took.as_secs_f64() * 1e3;
        if matches!(code, "INTERNAL" | "DATA_LOSS" | "UNKNOWN") {
            tracing::warn!(parent: &self.span, code, ms, "answered");
        } else {
            tracing::debug!(parent: &self.span, code, ms, "answered");
        }
    }
}

/// A response body that reads the status code from the trailers as they pass.
struct ObservedBody {
    inner: Body,
    /// Taken when the code is known.
    answered: Option<Answered>,
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = Status::from_header_map(trailers).map_or(Code::Ok, |s| s.code());
                    if let Some(a) = self.answered.take() {
                        a.done(code);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(a) = self.answered.take() {
                    a.done(status.code());
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: not a gRPC answer we know the code of.
                if let Some(a) = self.answered.take() {
                    a.done(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away (or the connection closed) before the answer ended.
        if let Some(a) = self.answered.take() {
            a.done(Code::Cancelled);
        }
    }
}
