//! The last word on every gRPC error answer, whichever layer or handler made it:
//!
//! - a request that is not a valid protobuf message of its method is `INVALID_ARGUMENT` (tonic
//!   answers `INTERNAL`, as if the server were at fault);
//! - a message longer than [`switchboard_core::MAX_ERROR_MESSAGE_BYTES`] is cut, so an error
//!   that quotes a megabyte-long field still fits the `grpc-message` header and reaches the
//!   client as its code instead of a transport error.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use switchboard_core::{MAX_ERROR_MESSAGE_BYTES, cap_message};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// How prost's decode errors begin (tonic-prost passes them on as `INTERNAL`).
const DECODE_ERROR: &str = "failed to decode Protobuf message";

/// Applies [`shape`] to every response.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusShapeLayer;

impl<S> Layer<S> for StatusShapeLayer {
    type Service = StatusShape<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusShape { inner }
    }
}

/// The service made by [`StatusShapeLayer`].
#[derive(Debug, Clone)]
pub struct StatusShape<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for StatusShape<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move { call.await.map(shape) })
    }
}

/// An error answer made in the response head (a "trailers-only" response, as tonic sends every
/// error that comes before the first message) with the right code and a bounded message.
pub fn shape<R: Default>(response: http::Response<R>) -> http::Response<R> {
    let encoded_len = response
        .headers()
        .get("grpc-message")
        .map_or(0, http::HeaderValue::len);
    let Some(status) = response
        .headers()
        .get("grpc-status")
        .is_some()
        .then(|| Status::from_header_map(response.headers()))
        .flatten()
    else {
        return response;
    };
    let not_protobuf =
        status.code() == Code::Internal && status.message().starts_with(DECODE_ERROR);
    // Percent-encoding at most triples a message's length.
    if !not_protobuf && encoded_len <= MAX_ERROR_MESSAGE_BYTES * 3 {
        return response;
    }
    let (code, message) = if not_protobuf {
        (
            Code::InvalidArgument,
            format!(
                "the request is not a valid protobuf message for this method ({}); check the \
                 client's .proto",
                status.message()
            ),
        )
    } else {
        (status.code(), status.message().to_owned())
    };
    Status::new(code, cap_message(&message)).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(response: &http::Response<()>) -> Status {
        Status::from_header_map(response.headers()).expect("a status")
    }

    #[test]
    fn decode_errors_become_invalid_argument() {
        let response =
            Status::internal(format!("{DECODE_ERROR}: invalid wire type")).into_http::<()>();
        let status = status_of(&shape(response));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("invalid wire type"), "{status:?}");
    }

    #[test]
    fn long_messages_are_cut_and_keep_their_code() {
        let response = Status::not_found(format!("no conversation x/{}", "y".repeat(3 << 20)))
            .into_http::<()>();
        let shaped = shape(response);
        let status = status_of(&shaped);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < MAX_ERROR_MESSAGE_BYTES + 64);
        assert!(status.message().starts_with("no conversation x/yyy"));
    }

    #[test]
    fn other_answers_pass_unchanged() {
        let response = Status::internal("the store failed").into_http::<()>();
        assert_eq!(status_of(&shape(response)).code(), Code::Internal);
        let ok = http::Response::new(());
        assert!(shape(ok).headers().is_empty());
    }
}
