//! Image storage and the chunked, BLAKE3-checked transfer format shared by upload, fetch and pull.
//!
//! Images stream: a receiver checks each chunk and writes it (to a file, with `node.data_dir`) as it
//! arrives, hashing the whole image as it goes; a sender reads a chunk from the file as its stream
//! is polled. Memory per transfer stays at a few chunks whatever the image's size. A pull keeps the
//! chunks it verified when it fails, and the next attempt, from the same holder or another, asks for
//! the rest only (`FetchImageRequest.offset`).

mod files;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use duet::{BoxStream, Status};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};

use self::files::{ImageDir, Writer};
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
        self.chunks_from(0)
    }

    /// The chunks from byte `offset` on (a multiple of [`CHUNK_SIZE`], at most the size), the first
    /// carrying the header; from the end, one empty chunk carrying it.
    fn chunks_from(&self, offset: usize) -> impl Stream<Item = ImageChunk> + Send + 'static {
        let header = ImageHeader {
            name: self.name.clone(),
            size: self.bytes.len() as u64,
            blake3: Bytes::copy_from_slice(&self.blake3),
        };
        let bytes = self.bytes.clone();
        let first = offset / CHUNK_SIZE;
        let count = bytes.len().div_ceil(CHUNK_SIZE).max(first + 1);
        futures_util::stream::iter(first..count).map(move |i| {
            let start = i * CHUNK_SIZE;
            let data = bytes.slice(start..(start + CHUNK_SIZE).min(bytes.len()));
            ImageChunk {
                header: (i == first).then(|| header.clone()),
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
    /// Transfers being received at once.
    receiving: Arc<tokio::sync::Semaphore>,
    /// One pull per image name at a time: a pull writes the image's one partial file.
    pulling: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Images a node receives at once (uploads and pulls); more wait their turn. An in-memory store holds
/// up to `node.max_image_bytes` per transfer until it is verified, so memory stays within this many
/// times that; a file store holds a few chunks per transfer.
pub const CONCURRENT_TRANSFERS: usize = 4;

/// One image of the store.
#[derive(Debug, Clone)]
enum Held {
    Memory(Image),
    /// In the store's directory; its BLAKE3, to check what is read back.
    File([u8; 32]),
}

/// An image the store verified and keeps, as the cluster records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub name: String,
    pub size: u64,
    pub blake3: [u8; 32],
}

impl ImageStore {
    /// An empty in-memory store accepting images up to `max_bytes` each.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            images: Default::default(),
            max_bytes,
            dir: None,
            receiving: Self::transfer_slots(),
            pulling: Default::default(),
        }
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
            pulling: Default::default(),
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
        self.held_blake3(name).is_some_and(|held| held == *blake3)
    }

    fn held_blake3(&self, name: &str) -> Option<[u8; 32]> {
        match self.images.lock().expect("image store lock").get(name)? {
            Held::Memory(image) => Some(image.blake3),
            Held::File(hash) => Some(*hash),
        }
    }

    /// An image by name, read whole into memory. An image file that can't be read or fails its
    /// BLAKE3 check counts as missing (logged), so the node fetches it again rather than serve bad
    /// bytes. Transfers use [`ImageStore::fetch`], which streams.
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

    /// Image `name` as chunks from byte `offset` on, the first carrying the header (from the end, one
    /// empty chunk carrying it), read from its file as the stream is polled, a chunk at a time, each
    /// checked against the hash stored with it (and the whole image's, read from the start) before it
    /// is sent: a damaged file ends the stream with `DATA_LOSS`. `None` if the store holds no such
    /// image, or its file can't be read (logged). An `offset` that is not a multiple of
    /// [`CHUNK_SIZE`], or past the end, is `INVALID_ARGUMENT`.
    pub fn fetch(&self, name: &str, offset: u64) -> Result<Option<BoxStream<ImageChunk>>, Status> {
        let Some(held) = self.images.lock().expect("image store lock").get(name).cloned() else { return Ok(None) };
        let check_offset = |size: u64| {
            if !offset.is_multiple_of(CHUNK_SIZE as u64) || offset > size {
                return Err(Status::invalid_argument(format!(
                    "offset {offset} into image {name:?} ({size} bytes) is not a multiple of {CHUNK_SIZE} at most its size"
                )));
            }
            Ok(())
        };
        let (blake3, dir) = match (held, &self.dir) {
            (Held::Memory(image), _) => {
                check_offset(image.bytes.len() as u64)?;
                return Ok(Some(Box::pin(image.chunks_from(offset as usize).map(Ok))));
            }
            (Held::File(blake3), Some(dir)) => (blake3, dir),
            (Held::File(_), None) => return Ok(None),
        };
        let mut reader = match blocking_io(|| dir.reader(name, &blake3, self.max_bytes)) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!(image = name, error = %e, "cannot read a stored image; treating it as missing");
                return Ok(None);
            }
        };
        check_offset(reader.size())?;
        if let Err(e) = blocking_io(|| reader.skip_to(offset)) {
            tracing::error!(image = name, error = %e, "cannot read a stored image; treating it as missing");
            return Ok(None);
        }
        let header =
            ImageHeader { name: name.to_owned(), size: reader.size(), blake3: Bytes::copy_from_slice(&blake3) };
        let name = name.to_owned();
        let stream = futures_util::stream::unfold(Some((reader, Some(header))), move |state| {
            let name = name.clone();
            async move {
                let (mut reader, mut header) = state?;
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = reader.next_chunk();
                    (reader, chunk)
                })
                .await;
                let (reader, chunk) = match read {
                    Ok(read) => read,
                    Err(e) => return Some((Err(Status::internal(format!("reading image {name:?}: {e}"))), None)),
                };
                match chunk {
                    Ok(Some((offset, data, hash))) => {
                        let chunk = ImageChunk {
                            header: header.take(),
                            offset,
                            data,
                            chunk_blake3: Bytes::copy_from_slice(&hash),
                        };
                        Some((Ok(chunk), Some((reader, None))))
                    }
                    // Nothing left after the offset: the header still goes out, on an empty chunk.
                    Ok(None) => header.map(|header| {
                        let chunk = ImageChunk {
                            header: Some(header),
                            offset: reader.size(),
                            data: Bytes::new(),
                            chunk_blake3: Bytes::copy_from_slice(blake3::hash(&[]).as_bytes()),
                        };
                        (Ok(chunk), None)
                    }),
                    Err(e) => {
                        tracing::error!(image = %name, error = %e, "a stored image failed its check while being sent");
                        Some((
                            Err(Status::data_loss(format!("this node's copy of image {name:?} is damaged: {e}"))),
                            None,
                        ))
                    }
                }
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    /// Receives an image from chunks into memory, without keeping it: each chunk's hash checked as it
    /// comes (a corrupted chunk fails the transfer at once with `DATA_LOSS`), the offsets, the size
    /// against the header and the limit, and the whole image's hash at the end.
    pub async fn receive<S>(&self, chunks: S) -> Result<Image, Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        let download = self.receive_all(chunks, true, |_| Ok(())).await?;
        download.check_whole()?;
        let Download { name, blake3, sink: Sink::Memory(bytes), .. } = download else {
            unreachable!("received into memory")
        };
        Ok(Image { name, bytes: bytes.freeze(), blake3 })
    }

    /// Receives an upload and keeps it, checked as [`ImageStore::receive`] does, and written to a
    /// temporary file as it comes with a data dir. `check` may refuse the image by its header, before
    /// anything is stored, and again before the image is kept.
    pub(crate) async fn upload<S>(
        &self,
        chunks: S,
        check: impl Fn(&ImageHeader) -> Result<(), Status>,
    ) -> Result<Stored, Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        let download = self.receive_all(chunks, false, &check).await?;
        let header = download.header();
        self.keep(download, || check(&header)).await
    }

    /// Takes the slot, then the chunks, into a new download.
    async fn receive_all<S>(
        &self,
        mut chunks: S,
        to_memory: bool,
        check: impl Fn(&ImageHeader) -> Result<(), Status>,
    ) -> Result<Download, Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        let slot = self.slot().await?;
        let first = chunks.next().await.ok_or_else(|| Status::invalid_argument("empty upload: no chunks"))??;
        let header = first.header.clone().ok_or_else(|| Status::invalid_argument("the first chunk has no header"))?;
        let (size, blake3) = self.check_header(&header)?;
        check(&header)?;
        let sink = match &self.dir {
            Some(dir) if !to_memory => Sink::File(
                blocking_io(|| dir.create(&header.name, size, blake3)).map_err(|e| store_error(&header.name, e))?,
            ),
            _ => Sink::memory(size),
        };
        let mut download = Download::new(header.name, size, blake3, sink, blake3::Hasher::new(), slot, None);
        download.receive(futures_util::stream::iter([Ok(first)]).chain(chunks)).await?;
        Ok(download)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.receiving.clone().acquire_owned().await.map_err(|_| Status::unavailable("the image store is closed"))
    }

    /// Checks a header's name, size and hash length; returns its size and hash.
    fn check_header(&self, header: &ImageHeader) -> Result<(u64, [u8; 32]), Status> {
        check_name(&header.name)?;
        self.check_size(&header.name, header.size)?;
        let blake3 =
            header.blake3.as_ref().try_into().map_err(|_| {
                Status::invalid_argument(format!("header blake3 is {} bytes, not 32", header.blake3.len()))
            })?;
        Ok((header.size, blake3))
    }

    fn check_size(&self, name: &str, size: u64) -> Result<(), Status> {
        if size > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "image {name:?} is {size} bytes; this node accepts at most {} (node.max_image_bytes)",
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// Starts (or resumes) pulling image `name` of `size` bytes hashing to `blake3`, as the cluster
    /// recorded it: with a data dir, the chunks a previous pull verified and left in its partial file
    /// are kept if that file is for this very image (see [`files::ImageDir::resume`]), and only the
    /// rest needs fetching. `None` if the store holds the image by the time it is this pull's turn
    /// (one pull per name at a time).
    pub(crate) async fn begin_pull(&self, name: &str, size: u64, blake3: [u8; 32]) -> Result<Option<Download>, Status> {
        check_name(name)?;
        self.check_size(name, size)?;
        let lock = self.pulling.lock().expect("pull locks").entry(name.to_owned()).or_default().clone();
        let turn = lock.lock_owned().await;
        if self.holds(name, &blake3) {
            return Ok(None);
        }
        let slot = self.slot().await?;
        let (sink, hasher) = match &self.dir {
            Some(dir) => {
                let (writer, hasher) =
                    blocking_io(|| dir.resume(name, size, blake3)).map_err(|e| store_error(name, e))?;
                if writer.written() > 0 {
                    tracing::info!(image = name, verified = writer.written(), size, "resuming a partial pull");
                }
                (Sink::File(writer), hasher)
            }
            None => (Sink::memory(size), blake3::Hasher::new()),
        };
        Ok(Some(Download::new(name.to_owned(), size, blake3, sink, hasher, slot, Some(turn))))
    }

    /// Keeps a download that is complete: the whole image's hash checked (on a mismatch the partial
    /// is discarded, since no chunk can be blamed, and that is `DATA_LOSS`), then, unless the store
    /// holds other content under its name or `check` refuses, made the store's image, durably.
    pub(crate) async fn keep(
        &self,
        download: Download,
        check: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Stored, Status> {
        if let Err(e) = download.check_whole() {
            if let Sink::File(writer) = download.sink {
                writer.discard();
            }
            return Err(e);
        }
        let stored = Stored { name: download.name.clone(), size: download.size, blake3: download.blake3 };
        if let Some(held) = self.held_blake3(&stored.name)
            && held != stored.blake3
        {
            return Err(Status::already_exists(format!(
                "this node holds image {:?} with other content (BLAKE3 {})",
                stored.name,
                hex(&held)
            )));
        }
        check()?;
        let held = match download.sink {
            Sink::Memory(bytes) => {
                Held::Memory(Image { name: stored.name.clone(), bytes: bytes.freeze(), blake3: stored.blake3 })
            }
            Sink::File(writer) => {
                blocking_io(|| writer.commit()).map_err(|e| store_error(&stored.name, e))?;
                Held::File(stored.blake3)
            }
        };
        self.images.lock().expect("image store lock").insert(stored.name.clone(), held);
        Ok(stored)
    }
}

fn store_error(name: &str, e: io::Error) -> Status {
    let message = format!("this node cannot store image {name:?}: {e}");
    if e.kind() == io::ErrorKind::StorageFull { Status::resource_exhausted(message) } else { Status::internal(message) }
}

/// Where a download's verified chunks go.
#[derive(Debug)]
enum Sink {
    Memory(BytesMut),
    File(Writer),
}

impl Sink {
    /// A buffer reserving a little ahead of what arrived, so a size claim alone can't make the node
    /// allocate the whole image.
    fn memory(size: u64) -> Self {
        Sink::Memory(BytesMut::with_capacity((size as usize).min(RESERVE_AHEAD)))
    }
}

/// An image being received: its verified prefix (in memory or a file), the BLAKE3 state of that
/// prefix, and the bytes of a chunk still incomplete when a sender chunks other than by
/// [`CHUNK_SIZE`] (files and offsets go by whole chunks).
#[derive(Debug)]
pub(crate) struct Download {
    name: String,
    size: u64,
    blake3: [u8; 32],
    sink: Sink,
    hasher: blake3::Hasher,
    pending: BytesMut,
    _slot: OwnedSemaphorePermit,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Download {
    fn new(
        name: String,
        size: u64,
        blake3: [u8; 32],
        sink: Sink,
        hasher: blake3::Hasher,
        slot: OwnedSemaphorePermit,
        turn: Option<OwnedMutexGuard<()>>,
    ) -> Self {
        Self { name, size, blake3, sink, hasher, pending: BytesMut::new(), _slot: slot, _turn: turn }
    }

    fn header(&self) -> ImageHeader {
        ImageHeader { name: self.name.clone(), size: self.size, blake3: Bytes::copy_from_slice(&self.blake3) }
    }

    /// Bytes verified and kept: whole chunks, or the whole image. Where a resumed fetch starts.
    pub(crate) fn verified(&self) -> u64 {
        match &self.sink {
            Sink::Memory(bytes) => bytes.len() as u64,
            Sink::File(writer) => writer.written(),
        }
    }

    /// Whether every byte is here (the whole hash is checked by [`ImageStore::keep`]).
    pub(crate) fn is_complete(&self) -> bool {
        self.verified() == self.size
    }

    fn received(&self) -> u64 {
        self.verified() + self.pending.len() as u64
    }

    /// Takes chunks until the stream ends, which must be at the image's end. The first chunk must
    /// carry a header for this image and start where the verified prefix ends. A chunk failing its
    /// hash is `DATA_LOSS`; what came before it stays verified.
    pub(crate) async fn receive<S>(&mut self, mut chunks: S) -> Result<(), Status>
    where
        S: Stream<Item = Result<ImageChunk, Status>> + Unpin,
    {
        // Bytes short of a whole chunk from an earlier holder were never stored: this holder starts
        // again from what was.
        self.pending.clear();
        let mut first = true;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            match (&chunk.header, first) {
                (Some(header), true) if *header != self.header() => {
                    return Err(Status::data_loss(format!(
                        "the sender's image {:?} is {} bytes with BLAKE3 {}; expected {:?}, {} bytes, BLAKE3 {}",
                        header.name,
                        header.size,
                        hex(&header.blake3),
                        self.name,
                        self.size,
                        hex(&self.blake3)
                    )));
                }
                (None, true) => return Err(Status::invalid_argument("the first chunk has no header")),
                (Some(_), false) => return Err(Status::invalid_argument("a header on a chunk other than the first")),
                _ => {}
            }
            first = false;
            let received = self.received();
            // A holder of the first version ignores the offset asked for and sends from the start.
            if chunk.offset < received && chunk.offset.saturating_add(chunk.data.len() as u64) <= received {
                continue;
            }
            if chunk.offset != received {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} but {received} bytes received so far",
                    chunk.offset
                )));
            }
            if chunk.data.len() as u64 > self.size - received {
                return Err(Status::invalid_argument(format!(
                    "chunk at offset {} runs past the image's size {}",
                    chunk.offset, self.size
                )));
            }
            let hash = *blake3::hash(&chunk.data).as_bytes();
            if hash[..] != chunk.chunk_blake3[..] {
                return Err(Status::data_loss(format!(
                    "chunk at offset {} of image {:?} failed its BLAKE3 check",
                    chunk.offset, self.name
                )));
            }
            self.absorb(chunk.data, hash)?;
        }
        if self.received() != self.size {
            return Err(Status::invalid_argument(format!(
                "image {:?} ended after {} of {} bytes",
                self.name,
                self.received(),
                self.size
            )));
        }
        Ok(())
    }

    /// Keeps verified bytes, a whole chunk at a time.
    fn absorb(&mut self, data: Bytes, hash: [u8; 32]) -> Result<(), Status> {
        let ends = self.verified() + data.len() as u64 == self.size;
        // Straight through only as one stored chunk: a whole one, or a short last one. A larger
        // chunk is regrouped, or its table entry would hash more than one stored chunk.
        if self.pending.is_empty() && (data.len() == CHUNK_SIZE || (ends && data.len() < CHUNK_SIZE)) {
            return self.keep_chunk(&data, &hash);
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = (CHUNK_SIZE - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == CHUNK_SIZE || self.received() == self.size {
                let chunk = self.pending.split().freeze();
                self.keep_chunk(&chunk, blake3::hash(&chunk).as_bytes())?;
            }
        }
        Ok(())
    }

    fn keep_chunk(&mut self, data: &[u8], hash: &[u8; 32]) -> Result<(), Status> {
        match &mut self.sink {
            Sink::Memory(bytes) => {
                if bytes.capacity() - bytes.len() < data.len() {
                    bytes.reserve((self.size as usize - bytes.len()).min(RESERVE_AHEAD));
                }
                bytes.extend_from_slice(data);
            }
            Sink::File(writer) => {
                blocking_io(|| writer.write_chunk(data, hash)).map_err(|e| store_error(&self.name, e))?;
            }
        }
        // After the write: the hasher covers exactly the kept prefix, which a failed write is not.
        self.hasher.update(data);
        Ok(())
    }

    /// Checks that every byte is here and the whole image hashes to what the header said.
    fn check_whole(&self) -> Result<(), Status> {
        if !self.is_complete() {
            return Err(Status::invalid_argument(format!(
                "image {:?} ended after {} of {} bytes",
                self.name,
                self.verified(),
                self.size
            )));
        }
        let whole = *self.hasher.finalize().as_bytes();
        if whole != self.blake3 {
            return Err(Status::data_loss(format!(
                "image {:?}: BLAKE3 of the whole image is {}, the header says {}",
                self.name,
                hex(&whole),
                hex(&self.blake3)
            )));
        }
        Ok(())
    }
}

/// The chunks of an upload of the file at `path` as image `name`, for
/// `ImageServiceClient::upload_image`. The file is read once first, a chunk at a time, to hash it
/// whole for the header; then again a chunk at a time as the stream is polled. Memory stays at a
/// chunk or two whatever the file's size.
///
/// Errors opening or reading the file in the first pass name the path (`cannot read image file
/// /x/y: No such file or directory (os error 2)`). A read failing later (the file shrank or went
/// away meanwhile) is logged and ends the stream early, which the node refuses as short; a file
/// changed meanwhile fails the node's BLAKE3 check (`DATA_LOSS`).
pub async fn upload_chunks_from_file(
    path: impl AsRef<Path>,
    name: impl Into<String>,
) -> io::Result<impl Stream<Item = ImageChunk> + Send + 'static> {
    let path = path.as_ref().to_owned();
    let named = {
        let path = path.clone();
        move |e: io::Error| io::Error::new(e.kind(), format!("cannot read image file {}: {e}", path.display()))
    };
    let hashing = {
        let path = path.clone();
        move || -> io::Result<(std::fs::File, u64, [u8; 32])> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0; CHUNK_SIZE];
            let mut size = 0u64;
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        size += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // The same handle, rewound: a file renamed over this path meanwhile is not mixed in.
            io::Seek::rewind(&mut file)?;
            Ok((file, size, *hasher.finalize().as_bytes()))
        }
    };
    let (file, size, blake3) = tokio::task::spawn_blocking(hashing).await.map_err(io::Error::other)?.map_err(named)?;
    let header = ImageHeader { name: name.into(), size, blake3: Bytes::copy_from_slice(&blake3) };
    Ok(futures_util::stream::unfold(Some((file, 0u64, Some(header))), move |state| {
        let path = path.clone();
        async move {
            let (mut file, offset, mut header) = state?;
            if offset >= size && header.is_none() {
                return None;
            }
            let len = (CHUNK_SIZE as u64).min(size - offset) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut data = vec![0; len];
                let read = file.read_exact(&mut data).map(|()| {
                    let hash = Bytes::copy_from_slice(blake3::hash(&data).as_bytes());
                    (Bytes::from(data), hash)
                });
                (file, read)
            })
            .await;
            match read {
                Ok((file, Ok((data, chunk_blake3)))) => {
                    let chunk = ImageChunk { header: header.take(), offset, data, chunk_blake3 };
                    Some((chunk, Some((file, offset + len as u64, None))))
                }
                Ok((_, Err(e))) => {
                    tracing::error!(file = %path.display(), offset, error = %e, "cannot read image file; the upload ends short");
                    None
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "reading image file failed; the upload ends short");
                    None
                }
            }
        }
    }))
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

    /// A pull of `img` into `store` fed the chunks from `from` to `to` (indexes), as a holder that
    /// dies after chunk `to` would; returns where it got to.
    async fn pull_part(store: &ImageStore, img: &Image, from: usize, to: usize) -> u64 {
        let mut download = store.begin_pull(&img.name, img.bytes.len() as u64, img.blake3).await.unwrap().unwrap();
        assert_eq!(download.verified(), (from * CHUNK_SIZE) as u64, "resumed from the verified prefix");
        let chunks: Vec<_> = img.chunks_from(from * CHUNK_SIZE).take(to - from).map(Ok).collect().await;
        let result = download.receive(futures_util::stream::iter(chunks)).await;
        assert_eq!(result.is_ok(), download.is_complete());
        download.verified()
    }

    fn partial(dir: &Path) -> std::path::PathBuf {
        dir.join("img.img.partial")
    }

    #[tokio::test]
    async fn a_pull_resumes_from_the_verified_prefix_its_partial_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(5 * CHUNK_SIZE + 17);
        {
            let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
            assert_eq!(pull_part(&store, &img, 0, 3).await, 3 * CHUNK_SIZE as u64);
        }
        assert!(partial(dir.path()).exists(), "a failed pull keeps its partial");
        // Reopened (a restart): the partial survives, and the pull goes on from chunk 3.
        let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
        let mut download = store.begin_pull("img", img.bytes.len() as u64, img.blake3).await.unwrap().unwrap();
        assert_eq!(download.verified(), 3 * CHUNK_SIZE as u64);
        let rest: Vec<_> = img.chunks_from(3 * CHUNK_SIZE).map(Ok).collect().await;
        download.receive(futures_util::stream::iter(rest)).await.expect("the rest");
        store.keep(download, || Ok(())).await.expect("the whole hash holds");
        assert_eq!(store.get("img").unwrap().bytes, img.bytes);
        assert!(!partial(dir.path()).exists(), "the partial became the image");
        assert!(store.begin_pull("img", img.bytes.len() as u64, img.blake3).await.unwrap().is_none(), "held now");
    }

    #[tokio::test]
    async fn a_partial_that_does_not_match_the_record_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(4 * CHUNK_SIZE);
        let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(pull_part(&store, &img, 0, 2).await, 2 * CHUNK_SIZE as u64);
        // Another BLAKE3 or another size in the record: the partial is for other content.
        let other = store.begin_pull("img", img.bytes.len() as u64, [7; 32]).await.unwrap().unwrap();
        assert_eq!(other.verified(), 0);
        drop(other);
        assert_eq!(pull_part(&store, &img, 0, 2).await, 2 * CHUNK_SIZE as u64);
        let other = store.begin_pull("img", img.bytes.len() as u64 + 1, img.blake3).await.unwrap().unwrap();
        assert_eq!(other.verified(), 0);
        drop(other);

        // A chunk damaged on disk: the prefix ends before it.
        assert_eq!(pull_part(&store, &img, 0, 3).await, 3 * CHUNK_SIZE as u64);
        let mut bytes = std::fs::read(partial(dir.path())).unwrap();
        let at = bytes.len() - 2 * CHUNK_SIZE + 100;
        bytes[at] ^= 1;
        std::fs::write(partial(dir.path()), &bytes).unwrap();
        assert_eq!(pull_part(&store, &img, 1, 4).await, 4 * CHUNK_SIZE as u64);
        // A cut-off tail: whole chunks only.
        let file = std::fs::OpenOptions::new().write(true).open(partial(dir.path())).unwrap();
        file.set_len(file.metadata().unwrap().len() - 10).unwrap();
        drop(file);
        assert_eq!(pull_part(&store, &img, 3, 4).await, 4 * CHUNK_SIZE as u64);
        // Not a partial at all.
        std::fs::write(partial(dir.path()), b"garbage").unwrap();
        assert_eq!(pull_part(&store, &img, 0, 4).await, 4 * CHUNK_SIZE as u64);
        let download = store.begin_pull("img", img.bytes.len() as u64, img.blake3).await.unwrap().unwrap();
        store.keep(download, || Ok(())).await.expect("complete and whole");
        assert_eq!(store.get("img").unwrap().bytes, img.bytes);
    }

    #[tokio::test]
    async fn a_whole_hash_mismatch_discards_the_partial() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(2 * CHUNK_SIZE);
        let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
        // The chunks of other bytes, under the header (and the record) of `img`.
        let liar = image(2 * CHUNK_SIZE + 1);
        let liar = Image::new("img", liar.bytes.slice(1..));
        let mut chunks: Vec<_> = liar.chunks().collect().await;
        chunks[0].header = img.chunks().next().await.unwrap().header;
        let mut download = store.begin_pull("img", img.bytes.len() as u64, img.blake3).await.unwrap().unwrap();
        download.receive(futures_util::stream::iter(chunks.into_iter().map(Ok))).await.expect("chunks verify");
        let err = store.keep(download, || Ok(())).await.unwrap_err();
        assert_eq!(err.code(), duet::Code::DataLoss, "{err}");
        assert!(!partial(dir.path()).exists());
        assert!(store.get("img").is_none());
    }

    #[tokio::test]
    async fn fetch_streams_from_a_chunk_aligned_offset_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(3 * CHUNK_SIZE + 5);
        let stores = [ImageStore::new(1 << 30), ImageStore::open(dir.path(), 1 << 30).unwrap()];
        for store in &stores {
            store.insert(img.clone());
            for offset in [1, CHUNK_SIZE as u64 - 1, 4 * CHUNK_SIZE as u64] {
                let err = store.fetch("img", offset).err().expect("a bad offset");
                assert_eq!(err.code(), duet::Code::InvalidArgument, "{offset}: {err}");
            }
            assert!(store.fetch("nope", 0).unwrap().is_none());
            let chunks: Vec<_> = store.fetch("img", 2 * CHUNK_SIZE as u64).unwrap().unwrap().collect().await;
            let chunks: Vec<_> = chunks.into_iter().map(Result::unwrap).collect();
            assert_eq!(
                chunks.iter().map(|c| c.offset).collect::<Vec<_>>(),
                [2 * CHUNK_SIZE as u64, 3 * CHUNK_SIZE as u64]
            );
            assert!(chunks[0].header.is_some() && chunks[1].header.is_none());
            assert_eq!(chunks[1].data, img.bytes.slice(3 * CHUNK_SIZE..));
            let whole = store.receive(store.fetch("img", 0).unwrap().unwrap()).await.expect("whole");
            assert_eq!(whole.bytes, img.bytes);
        }
        // A chunk rotten on disk ends the stream with DATA_LOSS when it is reached.
        let path = dir.path().join("img.img");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 5 - CHUNK_SIZE + 9;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let got: Vec<_> = stores[1].fetch("img", CHUNK_SIZE as u64).unwrap().unwrap().collect().await;
        assert!(got[0].is_ok());
        assert_eq!(got[1].as_ref().unwrap_err().code(), duet::Code::DataLoss);
        assert_eq!(got.len(), 2, "the stream ends at the damage");
    }

    #[tokio::test]
    async fn chunks_of_other_sizes_are_stored_as_whole_chunks() {
        let img = image(2 * CHUNK_SIZE + 1000);
        // Smaller than a stored chunk, the whole image in one, and a chunk and a half.
        for step in [300_000, img.bytes.len(), CHUNK_SIZE * 3 / 2] {
            let dir = tempfile::tempdir().unwrap();
            let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
            let chunks: Vec<_> = (0..img.bytes.len())
                .step_by(step)
                .map(|start| {
                    let data = img.bytes.slice(start..(start + step).min(img.bytes.len()));
                    Ok(ImageChunk {
                        header: (start == 0).then(|| ImageHeader {
                            name: "img".into(),
                            size: img.bytes.len() as u64,
                            blake3: Bytes::copy_from_slice(&img.blake3),
                        }),
                        offset: start as u64,
                        chunk_blake3: Bytes::copy_from_slice(blake3::hash(&data).as_bytes()),
                        data,
                    })
                })
                .collect();
            let stored = store.upload(futures_util::stream::iter(chunks), |_| Ok(())).await.expect("uploaded");
            assert_eq!(stored.size, img.bytes.len() as u64);
            let served: Vec<_> = store.fetch("img", 0).unwrap().unwrap().map(Result::unwrap).collect().await;
            assert_eq!(
                served.iter().map(|c| c.data.len()).collect::<Vec<_>>(),
                [CHUNK_SIZE, CHUNK_SIZE, 1000],
                "{step}"
            );
            let back: Vec<u8> = served.iter().flat_map(|c| c.data.iter().copied()).collect();
            assert_eq!(back, img.bytes, "{step}");
        }
    }

    #[tokio::test]
    async fn uploads_stream_from_a_file_and_name_it_when_it_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(2 * CHUNK_SIZE + 3);
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, &img.bytes).unwrap();
        let chunks = upload_chunks_from_file(&path, "img").await.expect("readable");
        let got = receive(&ImageStore::new(1 << 30), chunks.collect().await).await.expect("verifies");
        assert_eq!((got.bytes, got.blake3), (img.bytes.clone(), img.blake3));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let chunks: Vec<_> = upload_chunks_from_file(&empty, "e").await.unwrap().collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(receive(&ImageStore::new(10), chunks).await.expect("an empty image").bytes.len(), 0);

        let missing = dir.path().join("nope.img");
        let err = upload_chunks_from_file(&missing, "x").await.err().expect("missing file").to_string();
        assert!(
            err.starts_with(&format!("cannot read image file {}: No such file or directory", missing.display())),
            "{err}"
        );
    }

    #[tokio::test]
    async fn image_files_of_the_first_format_are_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(2 * CHUNK_SIZE + 9);
        let mut file = b"duetimg\x01".to_vec();
        file.extend_from_slice(&img.blake3);
        file.extend_from_slice(&img.bytes);
        std::fs::write(dir.path().join("img.img"), &file).unwrap();
        let store = ImageStore::open(dir.path(), 1 << 30).unwrap();
        assert!(store.holds("img", &img.blake3));
        assert_eq!(store.get("img").unwrap().bytes, img.bytes);
        let rest: Vec<_> = store.fetch("img", CHUNK_SIZE as u64).unwrap().unwrap().map(Result::unwrap).collect().await;
        assert_eq!(rest.iter().map(|c| c.offset).collect::<Vec<_>>(), [CHUNK_SIZE as u64, 2 * CHUNK_SIZE as u64]);
        // Without a chunk table, damage shows in the whole hash, at the end of the stream.
        let at = file.len() - 3;
        file[at] ^= 1;
        std::fs::write(dir.path().join("img.img"), &file).unwrap();
        let got: Vec<_> = store.fetch("img", 0).unwrap().unwrap().collect().await;
        assert_eq!(got.last().unwrap().as_ref().unwrap_err().code(), duet::Code::DataLoss);
    }
}
