//! The one handler logic, written for duet's trait, for tonic's trait, and as raw byte echo.

use bytes::Bytes;
use duet::{Request, Response, Status, Streaming};
use futures_util::{Stream, StreamExt};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};

use crate::pb::{Blob, Size};

/// ALPN of the raw ceiling: no encoding at all.
pub const RAW_ALPN: &[u8] = b"duet-bench/raw/1";
/// ALPN of the HTTP/2-over-Iroh bridge.
pub const BRIDGE_ALPN: &[u8] = b"duet-bench/bridge/1";

/// The lengths of the messages that stream `total` bytes in `chunk`-byte messages (the last may be
/// shorter).
pub fn chunk_lengths(total: u64, chunk: u32) -> impl Iterator<Item = usize> {
    let chunk = u64::from(chunk.max(1));
    (0..total.div_ceil(chunk)).map(move |i| chunk.min(total - i * chunk) as usize)
}

fn chunks(total: u64, chunk: u32) -> impl Iterator<Item = Blob> {
    let data = Bytes::from(vec![7u8; chunk.max(1) as usize]);
    chunk_lengths(total, chunk).map(move |len| Blob { data: data.slice(..len) })
}

/// The handler, on duet's trait (served natively on gRPC and Iroh).
#[derive(Debug, Clone, Default)]
pub struct DuetBench;

#[duet::service]
impl crate::pb::Bench for DuetBench {
    async fn unary(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn download(
        &self,
        request: Request<Size>,
    ) -> Result<Response<impl Stream<Item = Result<Blob, Status>> + Send + 'static>, Status> {
        let size = request.into_inner();
        Ok(Response::new(futures_util::stream::iter(chunks(size.total, size.chunk).map(Ok))))
    }

    async fn upload(&self, request: Request<Streaming<Blob>>) -> Result<Response<Size>, Status> {
        let mut stream = request.into_inner();
        let mut total = 0u64;
        while let Some(blob) = stream.message().await? {
            total += blob.data.len() as u64;
        }
        Ok(Response::new(Size { total, chunk: 0 }))
    }
}

/// The same handler on tonic's own trait, for the plain tonic and bridge contenders.
#[derive(Debug, Clone, Default)]
pub struct TonicBench;

#[tonic::async_trait]
impl crate::pb::bench_server::Bench for TonicBench {
    async fn unary(&self, request: tonic::Request<Blob>) -> Result<tonic::Response<Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }

    type DownloadStream = duet::BoxStream<Blob>;

    async fn download(
        &self,
        request: tonic::Request<Size>,
    ) -> Result<tonic::Response<Self::DownloadStream>, tonic::Status> {
        let size = request.into_inner();
        Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(chunks(size.total, size.chunk).map(Ok)))))
    }

    async fn upload(
        &self,
        request: tonic::Request<tonic::Streaming<Blob>>,
    ) -> Result<tonic::Response<Size>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut total = 0u64;
        while let Some(blob) = stream.next().await.transpose()? {
            total += blob.data.len() as u64;
        }
        Ok(tonic::Response::new(Size { total, chunk: 0 }))
    }
}

/// The ceiling: a bi-stream per call, bytes echoed with no framing or encoding. The first byte says
/// what to do: 0 echo, 1 download (8-byte length follows), 2 upload (the server answers the count).
#[derive(Debug, Clone)]
pub struct RawEcho;

impl ProtocolHandler for RawEcho {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut op = [0u8; 1];
                if recv.read_exact(&mut op).await.is_err() {
                    return;
                }
                match op[0] {
                    0 => {
                        let Ok(body) = recv.read_to_end(64 << 20).await else { return };
                        let _ = send.write_all(&body).await;
                    }
                    1 => {
                        let mut len = [0u8; 8];
                        if recv.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let total = u64::from_be_bytes(len);
                        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                        let mut sent = 0u64;
                        while sent < total {
                            let n = (total - sent).min(chunk.len() as u64) as usize;
                            if send.write_chunk(chunk.slice(..n)).await.is_err() {
                                return;
                            }
                            sent += n as u64;
                        }
                    }
                    _ => {
                        let mut total = 0u64;
                        while let Ok(Some(c)) = recv.read_chunk(1 << 20).await {
                            total += c.len() as u64;
                        }
                        let _ = send.write_all(&total.to_be_bytes()).await;
                    }
                }
                let _ = send.finish();
                let _ = send.stopped().await;
            });
        }
        Ok(())
    }
}
