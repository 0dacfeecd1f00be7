//! The byte format of the durable Raft stores' files, kept apart from openraft's traits so it can be
//! read and tested on its own.
//!
//! Every file starts with an 8-byte magic naming what it holds and the format version, then records.
//! A record is a 16-byte header — the payload's length (u32 LE), the BLAKE3 of those 4 bytes cut to 4
//! bytes, the BLAKE3 of the payload cut to 8 bytes — and the postcard payload. The length carries its
//! own check so that a damaged length (an error) is told apart from a record a crash cut short (which
//! is dropped): without it, a flipped bit in a length in the middle of the log would look like a tail
//! running past the end of the file and silently take every later record with it.
//!
//! Small files (the vote, the committed log id, the snapshot) hold one record and are replaced
//! atomically — written to a temporary file, fsynced, renamed over the old one, the directory
//! fsynced — so a crash leaves the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest record payload written or believed, so a damaged length can't make a reader allocate
/// more than this.
pub const MAX_RECORD: usize = 64 << 20;

/// Length, length check, payload check.
const HEADER: usize = 4 + 4 + 8;

/// Magic and format version of a file.
pub type Magic = [u8; 8];

fn check<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..N]);
    out
}

/// An `InvalidData` error: the bytes on disk are not what this format writes.
pub fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Appends `value` as one record (header and postcard payload) to `out`.
pub fn encode_record<T: Serialize>(out: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    if let Err(e) = postcard::to_io(value, &mut *out) {
        out.truncate(start);
        return Err(invalid(format!("encoding: {e}")));
    }
    let len = out.len() - start - HEADER;
    if len > MAX_RECORD {
        out.truncate(start);
        return Err(invalid(format!("a {len}-byte record is over the {MAX_RECORD}-byte limit")));
    }
    let len_bytes = (len as u32).to_le_bytes();
    let payload_check = check::<8>(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&check::<4>(&len_bytes));
    out[start + 8..start + HEADER].copy_from_slice(&payload_check);
    Ok(())
}

/// Decodes a record's postcard payload, all of it; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(payload: &[u8], what: &str) -> io::Result<T> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(invalid(format!("{what}: {} bytes left over after decoding", rest.len()))),
        Err(e) => Err(invalid(format!("{what}: {e}"))),
    }
}

/// Fsyncs a directory, so a file created, renamed or removed in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `contents`, atomically and durably.
pub fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Replaces `dir/name` with a file of one record holding `value`.
pub fn write_value<T: Serialize>(dir: &Path, name: &str, magic: &Magic, value: &T) -> io::Result<()> {
    let mut bytes = magic.to_vec();
    encode_record(&mut bytes, value)?;
    replace_file(dir, name, &bytes)
}

/// Reads a file [`write_value`] wrote; `None` if there is none. Since such files are replaced
/// atomically, anything but one whole, intact record is an error.
pub fn read_value<T: DeserializeOwned>(path: &Path, magic: &Magic) -> io::Result<Option<T>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut records = RecordReader::new(file, magic)?;
    let what = path.display().to_string();
    let payload = match records.next()? {
        Next::Record(payload) => payload,
        Next::End | Next::Torn => return Err(invalid(format!("{what}: no whole record"))),
    };
    if !matches!(records.next()?, Next::End) {
        return Err(invalid(format!("{what}: bytes after its record")));
    }
    decode(&payload, &what).map(Some)
}

/// What [`RecordReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// An intact record's payload.
    Record(Vec<u8>),
    /// The end of the file, right after the last record.
    End,
    /// What a crash in the middle of an append leaves: a record cut short, or zeros, running to the end
    /// of the file. [`RecordReader::good_len`] is where it starts.
    Torn,
}

/// Reads a file's records in order, checking each.
#[derive(Debug)]
pub struct RecordReader {
    reader: BufReader<File>,
    /// The end of the last intact record.
    pos: u64,
    len: u64,
}

impl RecordReader {
    /// Starts reading `file`, which must begin with `magic`.
    pub fn new(file: File, magic: &Magic) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut found = [0; 8];
        if len < found.len() as u64 {
            return Err(invalid(format!("{len} bytes: too short to be this file")));
        }
        reader.read_exact(&mut found)?;
        if &found != magic {
            return Err(invalid(format!(
                "starts with {:?}, not {:?}: not this kind of file, or a version this build can't read",
                found.escape_ascii().to_string(),
                magic.escape_ascii().to_string()
            )));
        }
        Ok(Self { reader, pos: found.len() as u64, len })
    }

    /// The length of the file up to the end of the last intact record read.
    pub fn good_len(&self) -> u64 {
        self.pos
    }

    /// The next record, the end, a torn tail, or an error if a record is damaged.
    pub fn next(&mut self) -> io::Result<Next> {
        let rest = self.len - self.pos;
        if rest == 0 {
            return Ok(Next::End);
        }
        if rest < HEADER as u64 {
            return Ok(Next::Torn);
        }
        let mut header = [0; HEADER];
        self.reader.read_exact(&mut header)?;
        let len_bytes: [u8; 4] = header[..4].try_into().expect("4 bytes");
        if header[4..8] != check::<4>(&len_bytes) {
            return if header.iter().all(|b| *b == 0) && self.rest_is_zeros(rest - HEADER as u64)? {
                Ok(Next::Torn)
            } else {
                Err(self.damaged("its length fails its check"))
            };
        }
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > MAX_RECORD {
            return Err(self.damaged(&format!("it claims {len} bytes, over the {MAX_RECORD}-byte limit")));
        }
        let end = HEADER as u64 + len as u64;
        if end > rest {
            return Ok(Next::Torn);
        }
        let mut payload = vec![0; len];
        self.reader.read_exact(&mut payload)?;
        if header[8..] != check::<8>(&payload) {
            // A crash can leave a record's length on disk but not all of its bytes; only the last record
            // can be in that state, so anywhere else this is damage.
            return if end == rest { Ok(Next::Torn) } else { Err(self.damaged("its payload fails its check")) };
        }
        self.pos += end;
        Ok(Next::Record(payload))
    }

    fn rest_is_zeros(&mut self, mut left: u64) -> io::Result<bool> {
        let mut buf = [0; 8192];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.reader.read_exact(&mut buf[..n])?;
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(false);
            }
            left -= n as u64;
        }
        Ok(true)
    }

    fn damaged(&self, why: &str) -> io::Error {
        invalid(format!("the record at byte {} is damaged: {why}", self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &Magic = b"duettst\x01";

    fn file_of(dir: &Path, bytes: &[u8]) -> File {
        let path = dir.join("f");
        fs::write(&path, bytes).unwrap();
        File::open(path).unwrap()
    }

    fn records(values: &[&str]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for value in values {
            encode_record(&mut bytes, value).unwrap();
        }
        bytes
    }

    fn read_all(dir: &Path, bytes: &[u8]) -> io::Result<(Vec<String>, Next, u64)> {
        let mut reader = RecordReader::new(file_of(dir, bytes), MAGIC)?;
        let mut out = Vec::new();
        loop {
            match reader.next()? {
                Next::Record(payload) => out.push(decode(&payload, "test")?),
                other => return Ok((out, other, reader.good_len())),
            }
        }
    }

    #[test]
    fn reads_back_records_and_drops_only_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let whole = records(&["one", "two", "three"]);
        let (values, end, len) = read_all(dir.path(), &whole).unwrap();
        assert_eq!(
            (values, end, len),
            (vec!["one".into(), "two".into(), "three".into()], Next::End, whole.len() as u64)
        );

        let two = records(&["one", "two"]).len();
        for cut in two + 1..whole.len() {
            let (values, end, len) = read_all(dir.path(), &whole[..cut]).unwrap();
            assert_eq!((values.len(), end, len), (2, Next::Torn, two as u64), "cut at {cut}");
        }
        let mut zeros = whole.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(read_all(dir.path(), &zeros).unwrap().1, Next::Torn);
        let mut last_damaged = whole.clone();
        *last_damaged.last_mut().unwrap() ^= 1;
        assert_eq!(read_all(dir.path(), &last_damaged).unwrap().1, Next::Torn);
    }

    #[test]
    fn damage_before_the_tail_and_huge_lengths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let whole = records(&["one", "two", "three"]);
        for at in 8..records(&["one", "two"]).len() {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x40;
            let err = read_all(dir.path(), &damaged).expect_err(&format!("byte {at} flipped"));
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }
        let mut huge = MAGIC.to_vec();
        let len = (MAX_RECORD as u32 + 1).to_le_bytes();
        huge.extend_from_slice(&len);
        huge.extend_from_slice(&check::<4>(&len));
        huge.extend_from_slice(&[0; 8]);
        assert!(read_all(dir.path(), &huge).unwrap_err().to_string().contains("limit"));
        assert!(read_all(dir.path(), b"notmagic").is_err());
    }

    #[test]
    fn values_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        assert_eq!(read_value::<u64>(&path, MAGIC).unwrap(), None);
        write_value(dir.path(), "v", MAGIC, &7u64).unwrap();
        write_value(dir.path(), "v", MAGIC, &8u64).unwrap();
        assert_eq!(read_value::<u64>(&path, MAGIC).unwrap(), Some(8));
        let mut bytes = fs::read(&path).unwrap();
        bytes.pop();
        fs::write(&path, &bytes).unwrap();
        assert!(read_value::<u64>(&path, MAGIC).is_err());
    }
}
