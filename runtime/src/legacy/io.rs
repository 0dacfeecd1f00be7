//! One QUIC bidirectional stream as one byte stream, for hyper and tonic.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use iroh::EndpointId;
use iroh::endpoint::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A QUIC stream pair seen as one connection, carrying HTTP/2.
#[derive(Debug)]
pub struct IrohIo {
    send: SendStream,
    recv: RecvStream,
    peer: EndpointId,
}

impl IrohIo {
    /// Joins the two halves of a bidirectional stream to `peer`.
    pub fn new(send: SendStream, recv: RecvStream, peer: EndpointId) -> Self {
        Self { send, recv, peer }
    }
}

impl AsyncRead for IrohIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for IrohIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// The caller's endpoint id, in the request extensions of a legacy tonic handler
/// (`request.extensions().get::<duet::legacy::IrohConnectInfo>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrohConnectInfo {
    /// The caller's endpoint id.
    pub peer: EndpointId,
}

impl tonic::transport::server::Connected for IrohIo {
    type ConnectInfo = IrohConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        IrohConnectInfo { peer: self.peer }
    }
}
