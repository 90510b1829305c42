//! The broker's connection limit: each accepted TCP connection takes a slot for as long as it is
//! open; a connection accepted while every slot is taken is closed at once. This bounds the
//! descriptors and per-connection state clients can pin (an idle HTTP/2 connection costs ~30 KiB).
//! A connection that has not sent the HTTP/2 preface within the handshake timeout (counted from
//! its accept, a TLS handshake included, the preface read after decryption) is closed, so that
//! silent connections cannot hold every slot, whether they speak TLS or not.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What a request's handler knows of its connection (in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// Under mutual TLS: the certificate chain the client presented, its own first.
    pub peer_certs: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
}

/// An accepted connection, plain or TLS, as HTTP/2 reads it: until the client's HTTP/2 preface
/// has arrived (decrypted, under TLS: a ClientHello is not a preface) by the deadline set when
/// the connection was accepted, a read past it fails and the connection closes.
pub(super) struct Conn {
    transport: Transport,
    preface: Option<Preface>,
}

enum Transport {
    /// Plaintext HTTP/2.
    Plain(Counted),
    /// HTTP/2 over TLS, the handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<Counted>>),
}

/// Until the client has sent the HTTP/2 connection preface: when it must have by, and the bytes
/// of it read so far.
struct Preface {
    deadline: Pin<Box<Sleep>>,
    read_bytes: usize,
}

impl Conn {
    pub(super) fn plain(mut counted: Counted) -> Conn {
        let preface = counted.take_preface();
        Conn {
            transport: Transport::Plain(counted),
            preface,
        }
    }

    pub(super) fn tls(mut stream: tokio_rustls::server::TlsStream<Counted>) -> Conn {
        let preface = stream.get_mut().0.take_preface();
        Conn {
            transport: Transport::Tls(Box::new(stream)),
            preface,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match &self.transport {
            Transport::Plain(c) => ConnInfo {
                remote_addr: c.stream.peer_addr().ok(),
                peer_certs: None,
            },
            Transport::Tls(t) => {
                let (c, session) = t.get_ref();
                ConnInfo {
                    remote_addr: c.stream.peer_addr().ok(),
                    peer_certs: session.peer_certificates().map(|certs| {
                        Arc::new(certs.iter().map(|c| c.clone().into_owned()).collect())
                    }),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = match &mut this.transport {
            Transport::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Transport::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        };
        if let Some(preface) = &mut this.preface {
            match read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    // A byte or two does not keep a slot: the whole preface must arrive in time.
                    preface.read_bytes += buf.filled().len() - before;
                    if preface.read_bytes >= HTTP2_PREFACE_BYTES {
                        this.preface = None;
                    }
                }
                Poll::Pending if preface.deadline.as_mut().poll(cx).is_ready() => {
                    tracing::debug!(peer = ?this.connect_info().remote_addr, "closing a connection that did not send the HTTP/2 preface in time");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not send the HTTP/2 preface within the handshake timeout",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Transport::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Transport::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(c) => c.is_write_vectored(),
            Transport::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(c) => Pin::new(c).poll_flush(cx),
            Transport::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Transport::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: what every HTTP/2 client sends first.
const HTTP2_PREFACE_BYTES: usize = 24;
/// Refused connections are logged at most this often (a flood must not flood the log).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted connection holding one of the limit's slots until it is dropped.
pub(super) struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// When the client must have sent the HTTP/2 preface by (the TLS handshake included),
    /// until the [`Conn`] made of it takes it to watch.
    handshake_deadline: Option<Pin<Box<Sleep>>>,
}

impl Counted {
    fn take_preface(&mut self) -> Option<Preface> {
        self.handshake_deadline.take().map(|deadline| Preface {
            deadline,
            read_bytes: 0,
        })
    }
}

/// Hands out slots to accepted connections.
#[derive(Clone)]
pub(super) struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    handshake_timeout: Duration,
    /// When a refusal was last logged, and how many since.
    refusals: Arc<std::sync::Mutex<(Option<std::time::Instant>, u64)>>,
}

impl ConnectionLimit {
    pub(super) fn new(max: usize, handshake_timeout: Duration) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            handshake_timeout,
            refusals: Arc::default(),
        }
    }

    /// Connections holding a slot now.
    pub(super) fn open(&self) -> usize {
        self.max
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.slots.available_permits())
    }

    /// The most connections open at once.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// The connection with a slot, or `None` (the connection is dropped, so closed) if every
    /// slot is taken.
    pub(super) fn admit(&self, stream: TcpStream) -> Option<Counted> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(Counted {
                stream,
                _slot: slot,
                handshake_deadline: Some(Box::pin(tokio::time::sleep(self.handshake_timeout))),
            });
        }
        let mut refusals = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        refusals.1 += 1;
        if refusals
            .0
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                max_connections = self.max,
                refused = refusals.1,
                peer = ?stream.peer_addr().ok(),
                "connections refused: the broker has max_connections open"
            );
            *refusals = (Some(std::time::Instant::now()), 0);
        }
        None
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
