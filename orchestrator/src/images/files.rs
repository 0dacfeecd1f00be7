//! Images kept as files, one per image: an 8-byte magic, the image's BLAKE3, then its bytes.
//!
//! A file is written to a temporary name, fsynced and renamed into place, so an image is either whole
//! on disk or absent. Its hash is checked every time it is read, since a disk can rot what it was
//! given: a damaged image is not served, and the node can pull it from a peer again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::Image;

const MAGIC: &[u8; 8] = b"duetimg\x01";
const HEADER: usize = MAGIC.len() + 32;
/// What image files end with; temporary files end with [`TMP`] instead.
const EXTENSION: &str = ".img";
const TMP: &str = ".tmp";

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
    /// crash left. Files that are not images, or whose names no longer pass `valid_name`, are skipped
    /// with a warning.
    pub fn list(&self, valid_name: impl Fn(&str) -> bool) -> io::Result<Vec<(String, [u8; 32])>> {
        let mut images = Vec::new();
        for dirent in fs::read_dir(&self.path)? {
            let dirent = dirent?;
            let file_name = dirent.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if file_name.ends_with(TMP) {
                fs::remove_file(dirent.path())?;
                continue;
            }
            let Some(name) = file_name.strip_suffix(EXTENSION).filter(|name| valid_name(name)) else {
                tracing::warn!(file = %dirent.path().display(), "not an image file; skipped");
                continue;
            };
            match read_header(&dirent.path()) {
                Ok((blake3, _)) => images.push((name.to_owned(), blake3)),
                Err(e) => tracing::warn!(file = %dirent.path().display(), error = %e, "unreadable image file; skipped"),
            }
        }
        Ok(images)
    }

    /// Writes `image`, durably, replacing any file of the same name. The name must have been checked.
    pub fn write(&self, image: &Image) -> io::Result<()> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.path.join(format!("{}{EXTENSION}.{n}{TMP}", image.name));
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&image.blake3)?;
            file.write_all(&image.bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, self.file(&image.name))?;
            File::open(&self.path)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads image `name`, refusing a file over `max_bytes` or whose bytes don't hash to `blake3`.
    pub fn read(&self, name: &str, blake3: &[u8; 32], max_bytes: u64) -> io::Result<Image> {
        let path = self.file(name);
        let (claimed, mut file) = read_header(&path)?;
        let size = file.metadata()?.len().saturating_sub(HEADER as u64);
        if size > max_bytes {
            return Err(invalid(format!("{size} bytes, over node.max_image_bytes ({max_bytes})")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes)?;
        let image = Image::new(name, Bytes::from(bytes));
        if claimed != *blake3 || image.blake3 != *blake3 {
            return Err(invalid(format!("{}: its bytes do not hash to the BLAKE3 it was stored with", path.display())));
        }
        Ok(image)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{EXTENSION}"))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Opens an image file and reads its header: the hash it claims, and the file positioned at the bytes.
fn read_header(path: &Path) -> io::Result<([u8; 32], File)> {
    let mut file = File::open(path)?;
    let mut header = [0; HEADER];
    file.read_exact(&mut header).map_err(|e| invalid(format!("{}: no whole header: {e}", path.display())))?;
    if header[..MAGIC.len()] != MAGIC[..] {
        return Err(invalid(format!("{}: not an image file", path.display())));
    }
    let mut blake3 = [0; 32];
    blake3.copy_from_slice(&header[MAGIC.len()..]);
    Ok((blake3, file))
}
