//! The broker's connection limit: each accepted TCP connection takes a slot for as long as it is
//! open; a connection accepted while every slot is taken is closed at once. This bounds the
//! descriptors and per-connection state clients can pin (an idle HTTP/2 connection costs ~30 KiB).
//! A connection that sends nothing at all within the handshake timeout is closed, so that silent
//! connections cannot hold every slot.

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

/// An accepted connection holding one of the limit's slots until it is dropped.
pub(super) struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the client's first byte arrives: when it must have arrived by.
    first_byte_deadline: Option<Pin<Box<Sleep>>>,
}

/// Hands out slots to accepted connections.
#[derive(Clone)]
pub(super) struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    handshake_timeout: Duration,
}

impl ConnectionLimit {
    pub(super) fn new(max: usize, handshake_timeout: Duration) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            handshake_timeout,
        }
    }

    /// The connection with a slot, or `None` (the connection is dropped, so closed) if every
    /// slot is taken.
    pub(super) fn admit(&self, stream: TcpStream) -> Option<Counted> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(Counted {
                stream,
                _slot: slot,
                first_byte_deadline: Some(Box::pin(tokio::time::sleep(self.handshake_timeout))),
            });
        }
        tracing::warn!(
            max_connections = self.max,
            peer = ?stream.peer_addr().ok(),
            "connection refused: the broker has max_connections open"
        );
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
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_byte_deadline {
            match read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    this.first_byte_deadline = None;
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    tracing::debug!(peer = ?this.stream.peer_addr().ok(), "closing a connection that sent nothing");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within the handshake timeout",
                    )));
                }
                _ => {}
            }
        }
        read
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
