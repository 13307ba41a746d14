//! The node's listener: every accepted connection carries the incarnation's
//! cancellation token, and fails its reads and writes once the node is
//! killed, so the connection task ends and the TCP connection closes (an
//! upgraded websocket included, since hyper hands the same IO to it).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Binds `addr` with `SO_REUSEADDR`, so that a restart can take the same
/// port while old connections sit in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A listener whose connections die with the incarnation.
pub(crate) struct KillableListener {
    inner: TcpListener,
    cancel: CancellationToken,
}

impl KillableListener {
    pub(crate) fn new(inner: TcpListener, cancel: CancellationToken) -> Self {
        KillableListener { inner, cancel }
    }
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let io = KillableIo {
                        inner: stream,
                        cancel: self.cancel.clone(),
                        killed: Box::pin(self.cancel.clone().cancelled_owned()),
                    };
                    return (io, peer);
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly,
                    // as axum's own listener does.
                    tracing::debug!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that errors once its node is killed.
pub(crate) struct KillableIo {
    inner: TcpStream,
    cancel: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableIo {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.cancel.is_cancelled() || self.killed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "simulated node killed",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
