//! The request size limit's status code. tonic refuses a request larger than
//! `max_decoding_message_size` before any handler runs, with OUT_OF_RANGE; gRPC itself (and every
//! other Strata limit) uses RESOURCE_EXHAUSTED for "larger than the configured limit", so this
//! response layer rewrites that one status.

use tonic::codegen::http::{HeaderValue, Response};

/// tonic's message for an oversized request, as it appears (percent-encoded) in `grpc-message`.
const OVERSIZED: &str = "decoded%20message%20length%20too%20large";

/// Maps tonic's OUT_OF_RANGE for an oversized request to RESOURCE_EXHAUSTED; passes anything
/// else through untouched.
pub(super) fn oversized_request_is_resource_exhausted<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains(OVERSIZED));
    if oversized {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}
