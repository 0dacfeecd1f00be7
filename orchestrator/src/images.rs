//! Image storage and the chunked, BLAKE3-checked transfer format shared by upload, fetch and pull.

mod files;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use duet::Status;
use futures_util::{Stream, StreamExt};

use self::files::ImageDir;
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

/// The longest image name accepted, in bytes: well under file systems' 255-byte name limit, with room
/// for the suffixes image files carry.
pub const MAX_NAME_BYTES: usize = 200;

/// Checks an image name: not empty, at most [`MAX_NAME_BYTES`], and no `/`, `..` or NUL, so that it is
/// safe as a file name on every node (`INVALID_ARGUMENT` otherwise).
pub fn check_name(name: &str) -> Result<(), Status> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "is longer than 200 bytes"
    } else if name.contains('/') || name.contains("..") || name.contains('\0') {
        "contains `/`, `..` or NUL"
    } else {
        return Ok(());
    };
    Err(Status::invalid_argument(format!("image name {name:?} {why}")))
}

/// The images this node holds, in memory ([`ImageStore::new`]) or as files ([`ImageStore::open`]).
/// Cloning shares the store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    images: Arc<Mutex<BTreeMap<String, Held>>>,
    max_bytes: u64,
    dir: Option<Arc<ImageDir>>,
    /// Transfers being received at once: each holds up to `max_bytes` in memory until verified.
    receiving: Arc<tokio::sync::Semaphore>,
}

/// Images a node receives at once (uploads and pulls); more wait their turn, so memory stays within
/// this many times `node.max_image_bytes`.
pub const CONCURRENT_TRANSFERS: usize = 4;

/// One image of the store.
#[derive(Debug, Clone)]
enum Held {
    Memory(Image),
    /// In the store's directory; its BLAKE3, to check what is read back.
    File([u8; 32]),
}

impl ImageStore {
    /// An empty in-memory store accepting images up to `max_bytes` each.
    pub fn new(max_bytes: u64) -> Self {
        Self { images: Default::default(), max_bytes, dir: None, receiving: Self::transfer_slots() }
    }

    /// A store keeping images as files in `dir` (created if missing), holding the images already
    /// there. They are read, and their BLAKE3 checked, when asked for.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> io::Result<Self> {
        let dir = ImageDir::open(dir.as_ref())?;
        let found = dir.list(|name| check_name(name).is_ok())?;
        let images = found.into_iter().map(|(name, blake3)| (name, Held::File(blake3))).collect();
        Ok(Self {
            images: Arc::new(Mutex::new(images)),
            max_bytes,
            dir: Some(Arc::new(dir)),
            receiving: Self::transfer_slots(),
        })
    }

    fn transfer_slots() -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(CONCURRENT_TRANSFERS))
    }

    /// The largest image accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether the store holds an image of this name with this BLAKE3, without reading it.
    pub fn holds(&self, name: &str, blake3: &[u8; 32]) -> bool {
        match self.images.lock().expect("image store lock").get(name) {
            Some(Held::Memory(image)) => image.blake3 == *blake3,
            Some(Held::File(hash)) => hash == blake3,
            None => false,
        }
    }

    /// An image by name. An image file that can't be read or fails its BLAKE3 check counts as
    /// missing (logged), so the node fetches it again rather than serve bad bytes.
    pub fn get(&self, name: &str) -> Option<Image> {
        let held = self.images.lock().expect("image store lock").get(name).cloned()?;
        match (held, &self.dir) {
            (Held::Memory(image), _) => Some(image),
            (Held::File(blake3), Some(dir)) => match blocking_io(|| dir.read(name, &blake3, self.max_bytes)) {
                Ok(image) => Some(image),
                Err(e) => {
                    tracing::error!(image = name, error = %e, "cannot read a stored image; treating it as missing");
                    None
                }
            },
            (Held::File(_), None) => None,
        }
    }

    /// Keeps a verified image. A file store that can't write it (or its name, which [`check_name`]
    /// refuses) keeps it in memory instead, so the node still serves it until it restarts.
    pub fn insert(&self, image: Image) {
        let name = image.name.clone();
        let held = match &self.dir {
            Some(dir) if check_name(&name).is_ok() => match blocking_io(|| dir.write(&image)) {
                Ok(()) => Held::File(image.blake3),
                Err(e) => {
                    tracing::error!(image = %name, error = %e, "cannot store an image file; keeping it in memory");
                    Held::Memory(image)
                }
            },
            _ => Held::Memory(image),
        };
        self.images.lock().expect("image store lock").insert(name, held);
    }

    /// Receives an image from chunks, checking each chunk's hash as it comes (a corrupted chunk fails
    /// the transfer at once with `DATA_LOSS`), the offsets, the size against the header and the limit,
    /// and the whole image's hash at the end.
    pub async fn receive<S>(&self, mut chunks: S) -> Result<Image, Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        let _slot = self.receiving.acquire().await.map_err(|_| Status::unavailable("the image store is closed"))?;
        let first = chunks.next().await.ok_or_else(|| Status::invalid_argument("empty upload: no chunks"))??;
        let header = first.header.clone().ok_or_else(|| Status::invalid_argument("the first chunk has no header"))?;
        check_name(&header.name)?;
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

/// Runs file IO from sync code that may be on an async worker: on a multi-threaded runtime the worker
/// hands its other tasks off first, so a large image read or fsync does not stall them.
fn blocking_io<T>(io: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(io)
        }
        _ => io(),
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

    #[tokio::test]
    async fn unsafe_names_are_refused_at_receive() {
        let store = ImageStore::new(1 << 30);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for name in ["", "a/b", "..", "a..b", "nul\0", long.as_str()] {
            let chunks: Vec<_> = Image::new(name, Bytes::from_static(b"data")).chunks().collect().await;
            let err = receive(&store, chunks).await.expect_err(name);
            assert_eq!(err.code(), duet::Code::InvalidArgument, "{name:?}: {err}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name("ubuntu-24.04.img").is_ok());
    }

    #[tokio::test]
    async fn a_file_store_keeps_images_across_reopens_and_refuses_rotten_ones() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(CHUNK_SIZE + 3);
        {
            let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
            assert!(store.get("img").is_none());
            store.insert(img.clone());
            assert_eq!(store.get("img").unwrap().bytes, img.bytes);
        }
        std::fs::write(dir.path().join("leftover.img.3.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
        let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
        let got = store.get("img").expect("the image survives a reopen");
        assert_eq!((got.bytes, got.blake3), (img.bytes.clone(), img.blake3));
        assert!(!dir.path().join("leftover.img.3.tmp").exists());
        assert!(ImageStore::open(dir.path(), 10).unwrap().get("img").is_none(), "over max_bytes");

        let path = dir.path().join("img.img");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(store.get("img").is_none(), "a rotten image is not served");
    }
}
