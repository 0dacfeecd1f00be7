//! Image storage and the chunked, BLAKE3-checked transfer format shared by upload, fetch and pull.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use duet::Status;
use futures_util::{Stream, StreamExt};

use crate::pb::orchestrator::v1::{ImageChunk, ImageHeader};

/// Size of the chunks images travel in: well under the default 4 MiB message limit.
pub const CHUNK_SIZE: usize = 1 << 20;

/// How far ahead of the bytes that arrived a receiver reserves memory, so a size claim alone can't
/// make it allocate the whole image.
const RESERVE_AHEAD: usize = 8 * CHUNK_SIZE;

/// An image held by this node, verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// Name.
    pub name: String,
    /// Content.
    pub bytes: Bytes,
    /// BLAKE3 of `bytes`.
    pub blake3: [u8; 32],
}

impl Image {
    /// An image from its content.
    pub fn new(name: impl Into<String>, bytes: Bytes) -> Self {
        let blake3 = *blake3::hash(&bytes).as_bytes();
        Self { name: name.into(), bytes, blake3 }
    }

    /// The image as chunks, the first carrying its header.
    pub fn chunks(&self) -> impl Stream<Item = ImageChunk> + Send + 'static {
        let header = ImageHeader {
            name: self.name.clone(),
            size: self.bytes.len() as u64,
            blake3: Bytes::copy_from_slice(&self.blake3),
        };
        let bytes = self.bytes.clone();
        let count = bytes.len().div_ceil(CHUNK_SIZE).max(1);
        futures_util::stream::iter(0..count).map(move |i| {
            let start = i * CHUNK_SIZE;
            let data = bytes.slice(start..(start + CHUNK_SIZE).min(bytes.len()));
            ImageChunk {
                header: (i == 0).then(|| header.clone()),
                offset: start as u64,
                chunk_blake3: Bytes::copy_from_slice(blake3::hash(&data).as_bytes()),
                data,
            }
        })
    }
}

/// The images this node holds, in memory (a real node would keep them on disk; the trade-off is the
/// same). Cloning shares the store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    images: Arc<Mutex<BTreeMap<String, Image>>>,
    max_bytes: u64,
}

impl ImageStore {
    /// An empty store accepting images up to `max_bytes` each.
    pub fn new(max_bytes: u64) -> Self {
        Self { images: Default::default(), max_bytes }
    }

    /// The largest image accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// An image by name.
    pub fn get(&self, name: &str) -> Option<Image> {
        self.images.lock().expect("image store lock").get(name).cloned()
    }

    /// Keeps a verified image.
    pub fn insert(&self, image: Image) {
        self.images.lock().expect("image store lock").insert(image.name.clone(), image);
    }

    /// Receives an image from chunks, checking each chunk's hash as it comes (a corrupted chunk fails
    /// the transfer at once with `DATA_LOSS`), the offsets, the size against the header and the limit,
    /// and the whole image's hash at the end.
    pub async fn receive<S>(&self, mut chunks: S) -> Result<Image, Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        let first = chunks.next().await.ok_or_else(|| Status::invalid_argument("empty upload: no chunks"))??;
        let header = first.header.clone().ok_or_else(|| Status::invalid_argument("the first chunk has no header"))?;
        if header.name.is_empty() {
            return Err(Status::invalid_argument("the image header has no name"));
        }
        if header.size > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "image {:?} is {} bytes; this node accepts at most {} (node.max_image_bytes)",
                header.name, header.size, self.max_bytes
            )));
        }
        let expected: [u8; 32] =
            header.blake3.as_ref().try_into().map_err(|_| {
                Status::invalid_argument(format!("header blake3 is {} bytes, not 32", header.blake3.len()))
            })?;
        let size = header.size as usize;
        let mut buf = BytesMut::with_capacity(size.min(RESERVE_AHEAD));
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match chunks.next().await {
                    Some(c) => c?,
                    None => break,
                },
            };
            if chunk.header.is_some() && !buf.is_empty() {
                return Err(Status::invalid_argument("a header on a chunk other than the first"));
            }
            if chunk.offset != buf.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} but {} bytes received so far",
                    chunk.offset,
                    buf.len()
                )));
            }
            if chunk.data.len() > size - buf.len() {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} runs past the image's size {size}",
                    chunk.offset
                )));
            }
            if blake3::hash(&chunk.data).as_bytes()[..] != chunk.chunk_blake3[..] {
                return Err(Status::data_loss(format!(
                    "chunk at offset {} of image {:?} failed its BLAKE3 check",
                    chunk.offset, header.name
                )));
            }
            if buf.capacity() - buf.len() < chunk.data.len() {
                buf.reserve((size - buf.len()).min(RESERVE_AHEAD));
            }
            buf.extend_from_slice(&chunk.data);
        }
        if buf.len() != size {
            return Err(Status::invalid_argument(format!(
                "image {:?} ended after {} of {size} bytes",
                header.name,
                buf.len()
            )));
        }
        let image = Image::new(header.name, buf.freeze());
        if image.blake3 != expected {
            return Err(Status::data_loss(format!(
                "image {:?}: BLAKE3 of the whole image is {}, the header says {}",
                image.name,
                hex(&image.blake3),
                hex(&expected)
            )));
        }
        Ok(image)
    }
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Image {
        Image::new("img", Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>()))
    }

    async fn receive(store: &ImageStore, chunks: Vec<ImageChunk>) -> Result<Image, Status> {
        store.receive(futures_util::stream::iter(chunks.into_iter().map(Ok))).await
    }

    #[tokio::test]
    async fn round_trips_through_chunks() {
        let img = image(3 * CHUNK_SIZE + 5);
        let chunks: Vec<_> = img.chunks().collect().await;
        assert_eq!(chunks.len(), 4);
        let got = receive(&ImageStore::new(1 << 30), chunks).await.expect("image received");
        assert_eq!(got.bytes, img.bytes);
        assert_eq!(got.blake3, img.blake3);
    }

    #[tokio::test]
    async fn refuses_corruption_truncation_and_oversize() {
        let store = ImageStore::new(1 << 30);
        let img = image(2 * CHUNK_SIZE);
        let mut chunks: Vec<_> = img.chunks().collect().await;
        let mut corrupted = chunks.clone();
        let mut data = corrupted[1].data.to_vec();
        data[7] ^= 1;
        corrupted[1].data = data.into();
        assert_eq!(receive(&store, corrupted).await.unwrap_err().code(), duet::Code::DataLoss);
        let mut wrong_whole = chunks.clone();
        wrong_whole[0].header.as_mut().unwrap().blake3 = vec![0; 32].into();
        assert_eq!(receive(&store, wrong_whole).await.unwrap_err().code(), duet::Code::DataLoss);
        chunks.pop();
        assert_eq!(receive(&store, chunks).await.unwrap_err().code(), duet::Code::InvalidArgument);
        let small = ImageStore::new(10);
        let chunks: Vec<_> = img.chunks().collect().await;
        assert_eq!(receive(&small, chunks).await.unwrap_err().code(), duet::Code::ResourceExhausted);
    }
}
