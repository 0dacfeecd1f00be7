//! Images kept as files, one per image, read and written a chunk at a time.
//!
//! A file holds an 8-byte magic, the image's BLAKE3, its size (u64, little-endian), a table of the
//! BLAKE3 of each [`CHUNK_SIZE`] chunk (32 bytes each, one at least), then the image's bytes. The
//! table lets a reader check each chunk as it reads it, before sending it on, and lets a receiver
//! trust the prefix of a partial download it kept after a crash. Files of the first format (magic,
//! BLAKE3, bytes, no size or table) are still read; their chunks are hashed as they are read.
//!
//! A received image is written to a temporary name and, whole and verified, fsynced and renamed into
//! place, so an image is either whole on disk or absent. Uploads write `<name>.img.<n>.tmp`, removed
//! if the upload fails and at the next start; pulls write `<name>.img.partial`, kept when a pull
//! fails so the next one resumes from it (see [`ImageDir::resume`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{CHUNK_SIZE, Image};

const MAGIC_V1: &[u8; 8] = b"duetimg\x01";
const MAGIC: &[u8; 8] = b"duetimg\x02";
/// What image files end with; temporary files end with [`TMP`] instead, partial pulls with [`PARTIAL`].
const EXTENSION: &str = ".img";
const TMP: &str = ".tmp";
const PARTIAL: &str = ".partial";
const CHUNK: u64 = CHUNK_SIZE as u64;

/// What an image file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    blake3: [u8; 32],
    size: u64,
    /// Whether the file has a chunk table (the second format).
    table: bool,
}

impl Header {
    fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK).max(1)
    }

    /// Where the chunk table starts.
    fn table_start(&self) -> u64 {
        (MAGIC.len() + 32 + 8) as u64
    }

    /// Where the image's bytes start.
    fn data_start(&self) -> u64 {
        if self.table { self.table_start() + 32 * self.chunks() } else { (MAGIC_V1.len() + 32) as u64 }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.table_start() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.blake3);
        out.extend_from_slice(&self.size.to_le_bytes());
        out
    }
}

/// A directory of image files.
#[derive(Debug)]
pub struct ImageDir {
    path: PathBuf,
    /// Numbers temporary files, so that two writes of one image never share one.
    next_tmp: AtomicU64,
}

impl ImageDir {
    /// Opens `path`, creating it if needed.
    pub fn open(path: &Path) -> io::Result<Self> {
        fs::create_dir_all(path)?;
        Ok(Self { path: path.to_owned(), next_tmp: AtomicU64::new(0) })
    }

    /// The images in the directory, with the hash each file claims, after removing temporary files a
    /// crash left and partial pulls of images held whole. Files that are not images, or whose names
    /// no longer pass `valid_name`, are skipped with a warning.
    pub fn list(&self, valid_name: impl Fn(&str) -> bool) -> io::Result<Vec<(String, [u8; 32])>> {
        let mut images = Vec::new();
        let mut partials = Vec::new();
        for dirent in fs::read_dir(&self.path)? {
            let dirent = dirent?;
            let file_name = dirent.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if file_name.ends_with(TMP) {
                fs::remove_file(dirent.path())?;
                continue;
            }
            if let Some(name) = file_name.strip_suffix(PARTIAL).and_then(|n| n.strip_suffix(EXTENSION)) {
                partials.push((name.to_owned(), dirent.path()));
                continue;
            }
            let Some(name) = file_name.strip_suffix(EXTENSION).filter(|name| valid_name(name)) else {
                tracing::warn!(file = %dirent.path().display(), "not an image file; skipped");
                continue;
            };
            match File::open(dirent.path()).and_then(|mut f| read_header(&mut f, &dirent.path())) {
                Ok(header) => images.push((name.to_owned(), header.blake3)),
                Err(e) => tracing::warn!(file = %dirent.path().display(), error = %e, "unreadable image file; skipped"),
            }
        }
        for (name, path) in partials {
            if images.iter().any(|(held, _)| *held == name) || !valid_name(&name) {
                fs::remove_file(path)?;
            }
        }
        Ok(images)
    }

    /// Writes `image`, durably, replacing any file of the same name. The name must have been checked.
    pub fn write(&self, image: &Image) -> io::Result<()> {
        let mut writer = self.create(&image.name, image.bytes.len() as u64, image.blake3)?;
        for data in image.bytes.chunks(CHUNK_SIZE) {
            writer.write_chunk(data, blake3::hash(data).as_bytes())?;
        }
        if image.bytes.is_empty() {
            writer.write_chunk(&[], blake3::hash(&[]).as_bytes())?;
        }
        writer.commit()
    }

    /// A new temporary file for image `name` (checked) of `size` bytes hashing to `blake3`, removed
    /// unless committed.
    pub fn create(&self, name: &str, size: u64, blake3: [u8; 32]) -> io::Result<Writer> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{name}{EXTENSION}.{n}{TMP}"));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        self.start(file, path, name, Header { blake3, size, table: true }, false)
    }

    /// The partial pull of image `name` (checked), resumed: if `<name>.img.partial` is there and its
    /// header names this `size` and `blake3` (the cluster's record), the longest prefix of whole
    /// chunks that match the file's chunk table is kept, the rest cut off; otherwise the file is
    /// started afresh. Returns the writer, positioned after the kept prefix, and the BLAKE3 state of
    /// that prefix.
    ///
    /// The prefix is rehashed from disk rather than the hasher's state saved: `blake3::Hasher` has no
    /// stable serialized form, reading back runs at disk speed (far faster than the network the rest
    /// comes over), and it checks the kept chunks again, so a chunk the disk damaged since is fetched
    /// anew instead of failing the whole image's hash at the end.
    pub fn resume(&self, name: &str, size: u64, blake3: [u8; 32]) -> io::Result<(Writer, blake3::Hasher)> {
        let path = self.path.join(format!("{name}{EXTENSION}{PARTIAL}"));
        let wanted = Header { blake3, size, table: true };
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(mut file) => match verified_prefix(&mut file, &path, &wanted) {
                Ok(Some((len, hasher))) => {
                    file.set_len(wanted.data_start() + len)?;
                    let writer = Writer {
                        file,
                        path,
                        target: self.file(name),
                        dir: self.path.clone(),
                        header: wanted,
                        written: len,
                        keep: true,
                        done: false,
                    };
                    return Ok((writer, hasher));
                }
                Ok(None) => {
                    tracing::info!(file = %path.display(), "a partial image for other content; starting afresh")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable partial image; starting afresh")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok((self.start(file, path, name, wanted, true)?, blake3::Hasher::new()))
    }

    fn start(&self, file: File, path: PathBuf, name: &str, header: Header, keep: bool) -> io::Result<Writer> {
        // Built first, so a failure below removes the file (unless kept, and then it is resumed).
        let mut writer = Writer {
            file,
            path,
            target: self.file(name),
            dir: self.path.clone(),
            header,
            written: 0,
            keep,
            done: false,
        };
        writer.file.write_all(&header.encode())?;
        // The table stays a hole until chunks fill it: zeros match no chunk's hash.
        writer.file.set_len(header.data_start())?;
        Ok(writer)
    }

    /// Reads image `name` whole, refusing a file over `max_bytes` or whose bytes don't hash to `blake3`.
    pub fn read(&self, name: &str, blake3: &[u8; 32], max_bytes: u64) -> io::Result<Image> {
        let mut reader = self.reader(name, blake3, max_bytes)?;
        let mut bytes = Vec::with_capacity(reader.size() as usize);
        while let Some((_, data, _)) = reader.next_chunk()? {
            bytes.extend_from_slice(&data);
        }
        Ok(Image { name: name.to_owned(), bytes: bytes.into(), blake3: *blake3 })
    }

    /// A reader of image `name` from its start, refusing a file over `max_bytes` or whose header does
    /// not claim `blake3`.
    pub fn reader(&self, name: &str, blake3: &[u8; 32], max_bytes: u64) -> io::Result<Reader> {
        let path = self.file(name);
        let mut file = File::open(&path)?;
        let header = read_header(&mut file, &path)?;
        let size = file.metadata()?.len().saturating_sub(header.data_start());
        if size > max_bytes {
            return Err(invalid(format!("{size} bytes, over node.max_image_bytes ({max_bytes})")));
        }
        if header.blake3 != *blake3 || (header.table && header.size != size) {
            return Err(invalid(format!("{}: not the image it was stored as", path.display())));
        }
        let header = Header { size, ..header };
        Ok(Reader { file, path, header, pos: 0, whole: Some(blake3::Hasher::new()), ended: false })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{EXTENSION}"))
    }
}

/// An image file being written, a chunk at a time, each the chunk after the last.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    header: Header,
    /// Bytes written so far: whole chunks, then the last one.
    written: u64,
    /// Whether the file stays when the writer is dropped uncommitted (a partial pull does).
    keep: bool,
    done: bool,
}

impl Writer {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the next chunk, `CHUNK_SIZE` bytes (fewer for the image's last) whose BLAKE3 is `hash`.
    pub fn write_chunk(&mut self, data: &[u8], hash: &[u8; 32]) -> io::Result<()> {
        let index = self.written / CHUNK;
        self.file.seek(SeekFrom::Start(self.header.data_start() + self.written))?;
        self.file.write_all(data)?;
        // After the bytes: a crash between the two leaves a chunk the table does not vouch for yet,
        // which a resume cuts off (or, the content being fixed by the header, the right hash).
        self.file.seek(SeekFrom::Start(self.header.table_start() + 32 * index))?;
        self.file.write_all(hash)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Makes the file the image's, durably: fsynced, renamed into place, the directory fsynced.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, &self.target)?;
        self.done = true;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the file, kept or not.
    pub fn discard(mut self) {
        self.keep = false;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done && !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads an image file a chunk at a time, checking each chunk against the file's table and, when read
/// from the start, the whole image against its BLAKE3.
#[derive(Debug)]
pub struct Reader {
    file: File,
    path: PathBuf,
    header: Header,
    pos: u64,
    whole: Option<blake3::Hasher>,
    ended: bool,
}

impl Reader {
    /// The image's size.
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// Moves to `offset`, a multiple of [`CHUNK_SIZE`] at most the image's size, before any read.
    /// The chunks after it are checked against the table; without one (the first format) the bytes
    /// before it are read and hashed, so the whole image's hash is still checked at the end.
    pub fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if self.header.table {
            if offset > 0 {
                self.whole = None;
            }
            self.pos = offset;
        } else {
            while self.pos < offset {
                self.next_chunk()?;
            }
        }
        Ok(())
    }

    /// The next chunk, as (offset, bytes, BLAKE3), or `None` after the last. A chunk that does not
    /// match what the file recorded is an `InvalidData` error.
    pub fn next_chunk(&mut self) -> io::Result<Option<(u64, Bytes, [u8; 32])>> {
        if self.pos >= self.header.size {
            if !self.ended
                && let Some(whole) = self.whole.take()
                && *whole.finalize().as_bytes() != self.header.blake3
            {
                return Err(invalid(format!(
                    "{}: its bytes do not hash to the BLAKE3 it was stored with",
                    self.path.display()
                )));
            }
            self.ended = true;
            return Ok(None);
        }
        let len = CHUNK.min(self.header.size - self.pos) as usize;
        let mut data = vec![0; len];
        self.file.seek(SeekFrom::Start(self.header.data_start() + self.pos))?;
        self.file.read_exact(&mut data)?;
        let hash = *blake3::hash(&data).as_bytes();
        if self.header.table {
            let mut recorded = [0; 32];
            self.file.seek(SeekFrom::Start(self.header.table_start() + 32 * (self.pos / CHUNK)))?;
            self.file.read_exact(&mut recorded)?;
            if recorded != hash {
                return Err(invalid(format!(
                    "{}: the chunk at offset {} does not hash to the BLAKE3 it was stored with",
                    self.path.display(),
                    self.pos
                )));
            }
        }
        if let Some(whole) = &mut self.whole {
            whole.update(&data);
        }
        let offset = self.pos;
        self.pos += len as u64;
        Ok(Some((offset, data.into(), hash)))
    }
}

/// Of a partial file, the length of the prefix of whole chunks that match its table, and that
/// prefix's BLAKE3 state; `None` if its header is for another image.
fn verified_prefix(file: &mut File, path: &Path, wanted: &Header) -> io::Result<Option<(u64, blake3::Hasher)>> {
    let header = read_header(file, path)?;
    if header != *wanted {
        return Ok(None);
    }
    let available = file.metadata()?.len().saturating_sub(header.data_start());
    let mut hasher = blake3::Hasher::new();
    let mut data = vec![0; CHUNK_SIZE];
    let mut recorded = [0; 32];
    let mut pos = 0;
    while pos < header.size {
        let len = CHUNK.min(header.size - pos);
        if pos + len > available {
            break;
        }
        let data = &mut data[..len as usize];
        file.seek(SeekFrom::Start(header.data_start() + pos))?;
        file.read_exact(data)?;
        file.seek(SeekFrom::Start(header.table_start() + 32 * (pos / CHUNK)))?;
        file.read_exact(&mut recorded)?;
        if *blake3::hash(data).as_bytes() != recorded {
            break;
        }
        hasher.update(data);
        pos += len;
    }
    Ok(Some((pos, hasher)))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads an image file's header, leaving the file anywhere.
fn read_header(file: &mut File, path: &Path) -> io::Result<Header> {
    let mut start = [0; MAGIC.len() + 32 + 8];
    let got = read_up_to(file, &mut start)?;
    let no_header = || invalid(format!("{}: no whole header", path.display()));
    if got < MAGIC.len() + 32 {
        return Err(no_header());
    }
    let mut blake3 = [0; 32];
    blake3.copy_from_slice(&start[MAGIC.len()..MAGIC.len() + 32]);
    if start[..MAGIC.len()] == MAGIC_V1[..] {
        return Ok(Header { blake3, size: 0, table: false });
    }
    if start[..MAGIC.len()] != MAGIC[..] {
        return Err(invalid(format!("{}: not an image file", path.display())));
    }
    if got < start.len() {
        return Err(no_header());
    }
    let size = u64::from_le_bytes(start[MAGIC.len() + 32..].try_into().expect("8 bytes"));
    Ok(Header { blake3, size, table: true })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    file.seek(SeekFrom::Start(0))?;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}
