//! [`VendorRequest`] (a builder) and the retry policy that runs it.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_core::{Error, ErrorCode, Secret};
use tokio::time::Instant;
use tracing::debug;

use crate::VendorClient;
use crate::error::{redact, seconds, status_error, vendor_message};

/// A vendor's answer: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct VendorResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl VendorResponse {
    /// The body parsed as JSON; a body of another shape is `Unavailable` (the vendor answered
    /// something this version does not understand).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|error| {
            Error::unavailable(format!(
                "the vendor's answer (HTTP {}) is not the expected JSON ({error}): check the \
                 connection's base_url and the vendor's API version",
                self.status
            ))
        })
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

enum Auth {
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

/// One call to the vendor, built from [`VendorClient::request`] and run by one of the `send`
/// methods, which wait on the connection's rate limiter before every attempt and retry
/// (exponential backoff with full jitter, or the vendor's `Retry-After`) until `max_attempts` or
/// the deadline.
///
/// What is retried depends on whether the request is idempotent. `GET`, `HEAD`, `PUT`,
/// `DELETE`, `OPTIONS` and `TRACE` are; `POST` and `PATCH` are not, unless marked with
/// [`idempotent`](VendorRequest::idempotent) (a read-only or naturally idempotent `POST`).
/// - An idempotent request is retried on 429, 5xx, timeouts and connection errors.
/// - Any other request is retried only when it certainly did not reach the vendor's logic: on
///   429 (the vendor refused it) and when the connection could not be opened (nothing was
///   sent). A timeout, a connection lost after sending or a 5xx ends it at once: the vendor may
///   have acted on it (created a ticket), and sending it again could do it twice.
///
/// `Debug` shows the method, the path and the names of the query parameters and headers,
/// never their values, the credentials or the body.
pub struct VendorRequest {
    client: VendorClient,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    auth: Option<Auth>,
    /// Secrets this request carries, removed from any message.
    secrets: Vec<Secret>,
    body: Option<(HeaderValue, Bytes)>,
    /// Whether sending it twice has the effect of sending it once (see the type's docs).
    idempotent: bool,
    /// The first mistake made while building; `send` returns it.
    problem: Option<Error>,
}

impl fmt::Debug for VendorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Some(Auth::Basic { .. }) => Some("basic [redacted]"),
            Some(Auth::Bearer(_)) => Some("bearer [redacted]"),
            None => None,
        };
        f.debug_struct("VendorRequest")
            .field("connection", &self.client.inner.connection)
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &self
                    .query
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "headers",
                &self
                    .headers
                    .keys()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("auth", &auth)
            .field("body_bytes", &self.body.as_ref().map(|(_, b)| b.len()))
            .finish_non_exhaustive()
    }
}

/// What one attempt ended with.
enum Outcome {
    Response(VendorResponse),
    Timeout,
    /// A transport error; `sent` is false when the connection could not even be opened, so the
    /// vendor certainly did not see the request.
    Unreachable {
        reason: String,
        sent: bool,
    },
}

impl Outcome {
    fn status_label(&self) -> String {
        match self {
            Outcome::Response(response) => response.status.to_string(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Unreachable { .. } => "unreachable".to_owned(),
        }
    }

    /// Whether another attempt may follow: a failure that certainly never reached the vendor's
    /// logic (429, a connection never opened) always, any other transient failure (5xx,
    /// timeout, connection lost after sending) only for an idempotent request.
    fn retryable(&self, idempotent: bool) -> bool {
        match self {
            Outcome::Response(response) => {
                response.status == 429 || (idempotent && (500..600).contains(&response.status))
            }
            Outcome::Unreachable { sent: false, .. } => true,
            Outcome::Timeout | Outcome::Unreachable { sent: true, .. } => idempotent,
        }
    }
}

/// Methods whose repetition has the effect of one call (RFC 9110, 9.2.2).
fn idempotent_method(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ]
    .contains(method)
}

impl VendorRequest {
    pub(crate) fn new(client: VendorClient, method: Method, path: &str) -> VendorRequest {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        VendorRequest {
            client,
            idempotent: idempotent_method(&method),
            method,
            path,
            query: Vec::new(),
            headers: HeaderMap::new(),
            auth: None,
            secrets: Vec::new(),
            body: None,
            problem: None,
        }
    }

    /// Marks a `POST` or `PATCH` as safe to send more than once (a search, a list, a lookup),
    /// so that timeouts, 5xx and connection errors after sending are retried as for a `GET`.
    /// Never mark a call that creates or changes something: a retry after a slow answer could
    /// do it twice.
    pub fn idempotent(mut self) -> VendorRequest {
        self.idempotent = true;
        self
    }

    /// Adds query parameters (appended to those added before).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> VendorRequest {
        self.query.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Adds a header. A name or value that is not valid HTTP makes `send` fail.
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> VendorRequest {
        let value = value.as_ref();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.fail(format!("the header `{name}` is not valid HTTP")),
        }
        self
    }

    /// Adds a header whose value is a secret (e.g. `X-API-Key`): marked sensitive, never
    /// printed, and removed from error messages.
    pub fn secret_header(mut self, name: &str, value: &Secret) -> VendorRequest {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose()),
        ) {
            (Ok(name), Ok(mut header)) => {
                header.set_sensitive(true);
                self.headers.append(name, header);
                self.secrets.push(value.clone());
            }
            // The value is not shown: it is a secret.
            _ => self.fail(format!(
                "the header `{name}` or its secret value is not valid HTTP"
            )),
        }
        self
    }

    /// HTTP basic auth (replaces any auth set before).
    pub fn basic_auth(mut self, user: &str, password: &Secret) -> VendorRequest {
        self.secrets.push(password.clone());
        self.auth = Some(Auth::Basic {
            user: user.to_owned(),
            password: password.clone(),
        });
        self
    }

    /// `Authorization: Bearer <token>` (replaces any auth set before).
    pub fn bearer(mut self, token: &Secret) -> VendorRequest {
        self.secrets.push(token.clone());
        self.auth = Some(Auth::Bearer(token.clone()));
        self
    }

    /// A JSON body (`Content-Type: application/json`), replacing any body set before.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> VendorRequest {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Some((
                    HeaderValue::from_static("application/json"),
                    Bytes::from(bytes),
                ));
            }
            Err(error) => self.fail(format!("the JSON body cannot be serialized ({error})")),
        }
        self
    }

    /// A form body (`application/x-www-form-urlencoded`), replacing any body set before.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> VendorRequest {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        match serde_urlencoded::to_string(pairs) {
            Ok(text) => {
                self.body = Some((
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                    Bytes::from(text),
                ));
            }
            Err(error) => self.fail(format!("the form body cannot be encoded ({error})")),
        }
        self
    }

    /// Runs the call; a 2xx answer is `Ok`, any other final answer is mapped to an [`Error`]
    /// (see [`error_for`](crate::error_for)) naming the connection, vendor, status and the
    /// vendor's message.
    pub async fn send(self) -> Result<VendorResponse, Error> {
        let client = self.client.clone();
        let secrets = self.secret_values();
        let response = self.send_raw().await?;
        if response.is_success() {
            return Ok(response);
        }
        Err(final_status_error(&client, &secrets, &response))
    }

    /// [`send`](VendorRequest::send), then parses the 2xx body as JSON; a body of another shape
    /// is `Unavailable`.
    pub async fn send_json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let client = self.client.clone();
        let what = format!("{} {}", self.method, self.path);
        let response = self.send().await?;
        serde_json::from_slice(&response.body).map_err(|error| {
            Error::unavailable(format!(
                "{}: {} answered {what} with HTTP {} and a body that is not the expected JSON \
                 ({error}): check the connection's base_url and the vendor's API version",
                client.inner.who, client.inner.vendor, response.status
            ))
        })
    }

    /// Runs the call and returns the final answer whatever its status (after the retry policy:
    /// a 429 or 5xx is returned once retries or the deadline run out). Timeouts and connection
    /// errors that outlast the policy are `Unavailable`.
    pub async fn send_raw(self) -> Result<VendorResponse, Error> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        self.run().await
    }

    fn fail(&mut self, message: String) {
        if self.problem.is_none() {
            self.problem = Some(Error::invalid(format!(
                "{}: {message}",
                self.client.inner.who
            )));
        }
    }

    fn secret_values(&self) -> Vec<Secret> {
        let mut secrets = self.client.inner.secrets.clone();
        secrets.extend(self.secrets.iter().cloned());
        secrets
    }

    async fn run(self) -> Result<VendorResponse, Error> {
        let inner = &self.client.inner;
        let settings = &inner.settings;
        let started = Instant::now();
        let deadline = started + settings.deadline;
        let mut attempt: u32 = 0;
        let mut last: Option<Outcome> = None;
        loop {
            match inner.limiter.acquire_by(deadline).await {
                Ok(waited) => {
                    if !waited.is_zero() {
                        debug!(
                            connection = %inner.connection,
                            vendor = %inner.vendor,
                            method = %self.method,
                            path = %self.path,
                            waited_ms = millis(waited),
                            "vendor api call waited for the rate limit"
                        );
                        metrics::counter!(
                            "switchboard_vendor_rate_limited_waits_total",
                            "connection" => inner.connection.clone(),
                            "vendor" => inner.vendor.clone(),
                        )
                        .increment(1);
                    }
                }
                Err(ready_at) => {
                    return self.give_up(last, attempt, started, Some(ready_at));
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return self.give_up(last, attempt, started, None);
            }
            attempt += 1;
            let timeout = settings.request_timeout.min(remaining);
            let outcome = self.attempt(timeout, attempt, started).await;
            if !outcome.retryable(self.idempotent) {
                return self.finish(outcome, attempt, started);
            }
            if attempt >= settings.max_attempts {
                return self.finish(outcome, attempt, started);
            }
            let wait = match &outcome {
                Outcome::Response(response) => match retry_after(&response.headers) {
                    Some(wait) => {
                        inner.limiter.pause_until(Instant::now() + wait);
                        wait
                    }
                    None => backoff(settings.backoff_initial, settings.backoff_max, attempt),
                },
                Outcome::Timeout | Outcome::Unreachable { .. } => {
                    backoff(settings.backoff_initial, settings.backoff_max, attempt)
                }
            };
            if Instant::now() + wait > deadline {
                return self.finish(outcome, attempt, started);
            }
            metrics::counter!(
                "switchboard_vendor_api_retries_total",
                "connection" => inner.connection.clone(),
                "vendor" => inner.vendor.clone(),
            )
            .increment(1);
            debug!(
                connection = %inner.connection,
                vendor = %inner.vendor,
                method = %self.method,
                path = %self.path,
                attempt,
                wait_ms = millis(wait),
                "vendor api call will be retried"
            );
            tokio::time::sleep(wait).await;
            last = Some(outcome);
        }
    }

    async fn attempt(&self, timeout: Duration, attempt: u32, started: Instant) -> Outcome {
        let inner = &self.client.inner;
        let url = format!("{}{}", inner.settings.base_url, self.path);
        let mut builder = inner
            .http
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if !self.query.is_empty() {
            builder = builder.query(&self.query);
        }
        match &self.auth {
            Some(Auth::Basic { user, password }) => {
                builder = builder.basic_auth(user, Some(password.expose()));
            }
            Some(Auth::Bearer(token)) => builder = builder.bearer_auth(token.expose()),
            None => {}
        }
        if let Some((content_type, body)) = &self.body {
            builder = builder
                .header(CONTENT_TYPE, content_type.clone())
                .body(body.clone());
        }
        let begun = Instant::now();
        let call = async {
            let response = builder.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(VendorResponse {
                status,
                headers,
                body,
            })
        };
        let outcome = match tokio::time::timeout(timeout, call).await {
            Err(_) => Outcome::Timeout,
            Ok(Ok(response)) => Outcome::Response(response),
            // Checked first: a connect timeout never sent anything either.
            Ok(Err(error)) if error.is_connect() => Outcome::Unreachable {
                reason: describe(&error),
                sent: false,
            },
            Ok(Err(error)) if error.is_timeout() => Outcome::Timeout,
            Ok(Err(error)) => Outcome::Unreachable {
                reason: describe(&error),
                sent: true,
            },
        };
        let took = begun.elapsed();
        let status = outcome.status_label();
        metrics::counter!(
            "switchboard_vendor_api_calls_total",
            "connection" => inner.connection.clone(),
            "vendor" => inner.vendor.clone(),
            "status" => status.clone(),
        )
        .increment(1);
        metrics::histogram!(
            "switchboard_vendor_api_call_seconds",
            "vendor" => inner.vendor.clone(),
        )
        .record(took.as_secs_f64());
        debug!(
            connection = %inner.connection,
            vendor = %inner.vendor,
            method = %self.method,
            path = %self.path,
            status = %status,
            attempt,
            took_ms = millis(took),
            elapsed_ms = millis(started.elapsed()),
            "vendor api call"
        );
        outcome
    }

    /// Stops with the last outcome (or says why none was possible).
    fn give_up(
        &self,
        last: Option<Outcome>,
        attempts: u32,
        started: Instant,
        limiter_ready_at: Option<Instant>,
    ) -> Result<VendorResponse, Error> {
        if let Some(outcome) = last {
            return self.finish(outcome, attempts, started);
        }
        let inner = &self.client.inner;
        let limit = inner.limiter.limit();
        let wait = limiter_ready_at
            .map(|at| seconds(at.saturating_duration_since(Instant::now())))
            .unwrap_or_else(|| "0".to_owned());
        Err(Error::new(
            ErrorCode::ResourceExhausted,
            format!(
                "{}: the connection's rate limit of {} calls per {} s (or the vendor's \
                 Retry-After) allows no call to {} before the deadline of {} s (next in \
                 {wait} s): retry later, or raise deadline_ms or the rate_limit",
                inner.who,
                limit.calls,
                limit.per_seconds,
                inner.vendor,
                seconds(inner.settings.deadline),
            ),
        ))
    }

    /// The call's result from its final outcome.
    fn finish(
        &self,
        outcome: Outcome,
        attempts: u32,
        started: Instant,
    ) -> Result<VendorResponse, Error> {
        let inner = &self.client.inner;
        // A failure retried for an idempotent request but not for this one.
        let held_back = outcome.retryable(true) && !outcome.retryable(self.idempotent);
        let mut tries = if attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{attempts} attempts")
        };
        if held_back {
            tries = format!(
                "{tries}, not retried as {} is not idempotent and may have reached the vendor",
                self.method
            );
        }
        let elapsed = seconds(round_ms(started.elapsed()));
        match outcome {
            Outcome::Response(response) => Ok(response),
            Outcome::Timeout => Err(Error::unavailable(format!(
                "{}: {} did not answer {} {} within the request timeout of {} s ({tries} in \
                 {elapsed} s): retry later or raise request_timeout_ms",
                inner.who,
                inner.vendor,
                self.method,
                self.path,
                seconds(inner.settings.request_timeout),
            ))),
            Outcome::Unreachable { reason, .. } => {
                let secrets = self.secret_values();
                let secrets: Vec<&str> = secrets.iter().map(Secret::expose).collect();
                Err(Error::unavailable(redact(
                    format!(
                        "{}: cannot reach {} at {} ({reason}; {tries} in {elapsed} s): check \
                         base_url and the network, or retry later",
                        inner.who, inner.vendor, inner.settings.base_url,
                    ),
                    &secrets,
                )))
            }
        }
    }
}

/// The error for a final non-2xx answer, secrets removed.
pub(crate) fn final_status_error(
    client: &VendorClient,
    secrets: &[Secret],
    response: &VendorResponse,
) -> Error {
    let inner = &client.inner;
    let secrets: Vec<&str> = secrets.iter().map(Secret::expose).collect();
    let message = vendor_message(&response.body, &secrets);
    let retry_after = (response.status == 429)
        .then(|| retry_after(&response.headers))
        .flatten();
    let error = status_error(&inner.vendor, response.status, &message, retry_after);
    Error::new(
        error.code,
        redact(format!("{}: {}", inner.who, error.message), &secrets),
    )
}

/// The longest `Retry-After` taken at its word (15 minutes); a longer one is cut to this.
///
/// A `Retry-After` pauses the connection's shared rate limiter, so an absurd value (a day)
/// would stop every part of the connection for that long; past this cap the call is simply
/// tried again, and a vendor that still refuses answers 429 again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` as a wait: delta-seconds or an HTTP date (a past date is no wait), at most
/// [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Full jitter: a random wait in `[0, min(max, initial * 2^(attempt - 1))]`.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    let cap = initial.saturating_mul(factor).min(max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=cap_nanos))
}

/// A reqwest error as text, without the URL (its query may carry a secret).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.is_empty() {
        if error.is_connect() {
            "connection failed".to_owned()
        } else {
            "request failed".to_owned()
        }
    } else {
        text
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(millis(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_grows() {
        let initial = Duration::from_millis(250);
        let max = Duration::from_secs(10);
        for attempt in 1..40 {
            let cap = (initial * 2u32.pow(attempt.min(20) - 1)).min(max);
            for _ in 0..50 {
                assert!(backoff(initial, max, attempt) <= cap);
            }
        }
        // Full jitter: over many draws the waits spread over the range.
        let draws: Vec<Duration> = (0..200).map(|_| backoff(initial, max, 6)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(6)));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&in_a_minute).expect("valid"),
        );
        let wait = retry_after(&headers).expect("a date parses");
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999999999999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
