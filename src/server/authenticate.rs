//! Authentication before a request's body is read: a tower layer in front of the request budget
//! names every request's principal from its headers (bearer token) and connection (client
//! certificate), so that a client without valid credentials is refused UNAUTHENTICATED at once
//! and never holds room in the budget (or makes tonic buffer its message) that authenticated
//! clients wait for. The principal goes into the request's extensions, where the handlers take
//! it (`Service::who`) to check their rules. Health and reflection stay open.

use super::{ConnInfo, auth::Auth};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
    metadata::MetadataMap,
};

/// The layer.
#[derive(Clone)]
pub(super) struct Authenticate {
    auth: Arc<Auth>,
}

impl Authenticate {
    pub(super) fn new(auth: Arc<Auth>) -> Self {
        Authenticate { auth }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// A service whose requests carry their principal.
#[derive(Clone)]
pub(super) struct Authenticated<S> {
    inner: S,
    auth: Arc<Auth>,
}

/// Paths that need no credentials: health checks and reflection.
fn open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Authenticated<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if self.auth.enabled() && !open(request.uri().path()) {
            // The headers move into a MetadataMap and back: no copy.
            let metadata = MetadataMap::from_headers(std::mem::take(request.headers_mut()));
            let who = self
                .auth
                .authenticate(&metadata, request.extensions().get::<ConnInfo>());
            *request.headers_mut() = metadata.into_headers();
            match who {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(e) => {
                    let status = Status::from(e);
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        // The service that was polled ready handles this request; its clone takes the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}
