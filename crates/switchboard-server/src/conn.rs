//! Connections of both front doors: an idle limit on every connection, and the HTTP server
//! loop with hyper's own protections switched on (a header-read timeout for HTTP/1, a cap on
//! concurrent HTTP/2 streams, HTTP/2 keepalive pings).
//!
//! A connection over which nothing is read or written for the idle limit is closed, whatever
//! state it is in: one that never sends a byte, a keep-alive connection left open, a dead peer.
//! HTTP/2 keepalive pings count as traffic, so a live client that keeps a connection open
//! while idle answers them and stays; a vanished one does not.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;
use tracing::debug;

/// An IO that fails with [`io::ErrorKind::TimedOut`] once nothing was read or written for its
/// idle limit (the connection is then closed by whoever serves it).
#[derive(Debug)]
pub struct IdleTimeout<T> {
    inner: T,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: T, limit: Duration) -> Self {
        IdleTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.limit);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// A write's outcome: bytes written restart the idle clock; a write still pending past
    /// the idle limit fails.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(self.timed_out())),
            other => other,
        }
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no traffic for {} ms: connection closed",
                self.limit.as_millis()
            ),
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for IdleTimeout<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// How the HTTP front door treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConnLimits {
    /// An HTTP/1 request's headers must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// HTTP/2 keepalive ping interval (the answer must come within the same time).
    pub http2_keepalive_interval: Duration,
}

/// The peer of an HTTP request (a request extension set by [`serve_http`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests. Aborting the returned future's task closes every connection.
pub async fn serve_http<L>(
    mut listener: L,
    router: Router,
    limits: HttpConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_interval);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Owned here: when this task is aborted (the end of the shutdown grace), every connection
    // task goes with it.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished connections as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let io = TokioIo::new(IdleTimeout::new(io, limits.idle_timeout));
        let service = router.clone().map_request(with_peer(peer));
        let connection = builder
            .serve_connection_with_upgrades(io, TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Marks each request with the connection's peer.
fn with_peer<B>(peer: SocketAddr) -> impl Fn(http::Request<B>) -> http::Request<B> + Clone {
    move |mut request| {
        request.extensions_mut().insert(Peer(peer));
        request
    }
}

/// Bounds how many webhook bodies one peer address may be sending at once, so that slow
/// senders from one address cannot hold every slot of the server.
#[derive(Debug, Clone)]
pub struct PeerBodyReads {
    max: usize,
    reading: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One body read in progress; dropping it frees the peer's slot.
#[derive(Debug)]
pub struct BodyReadSlot {
    ip: IpAddr,
    reading: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerBodyReads {
    /// At most `max` body reads per peer address at once.
    pub fn new(max: usize) -> Self {
        PeerBodyReads {
            max,
            reading: Arc::default(),
        }
    }

    /// The most body reads per peer.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more body read from `ip`, or `None` if it has its maximum already.
    pub fn try_start(&self, ip: IpAddr) -> Option<BodyReadSlot> {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let count = reading.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(BodyReadSlot {
            ip,
            reading: self.reading.clone(),
        })
    }
}

impl Drop for BodyReadSlot {
    fn drop(&mut self) {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = reading.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                reading.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_and_traffic_keeps_one_open() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        let mut client = client;
        let mut buf = [0u8; 8];
        // Traffic every 3 s keeps it open past 5 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        }
        // Then silence: the read fails after the idle limit.
        let error = server.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn each_peer_has_its_own_slots() {
        let reads = PeerBodyReads::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = reads.try_start(a).unwrap();
        let _second = reads.try_start(a).unwrap();
        assert!(reads.try_start(a).is_none());
        assert!(reads.try_start(b).is_some());
        drop(first);
        assert!(reads.try_start(a).is_some());
    }
}
