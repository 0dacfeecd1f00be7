//! Arbitrary bytes through duet's frame decoder (`duet::iroh::frame::FrameDecoder`), fed in chunks
//! whose sizes come from the input, the way `FramedRead` drives it over a QUIC stream.
//!
//! Input: `[max_message][n][n % 16 chunk sizes][stream...]`, so the message limit is 0..=255 bytes
//! (header frames keep their 64 KiB limit); chunk sizes are used in turn (0 = decode again with no new
//! bytes), no sizes = the whole stream at once.
//!
//! Checked, for the input's split and for the whole stream in one piece:
//! - no panic (overflow checks are on in this build; allocations are under AddressSanitizer's and
//!   libFuzzer's limits);
//! - the frames and the way the stream ends (clean, `TooLarge`, `UnknownKind`, `BadLength`,
//!   `Truncated`) are exactly those of an independent parser of the spec, so they do not depend on
//!   how the bytes were split;
//! - no frame's body is over the limit of its kind (`max_message`, or `MAX_HEADER_FRAME` for headers
//!   and trailers), and each body is the bytes the stream holds at that place;
//! - `Ok(None)` consumes nothing; it reserves nothing while the length and kind are incomplete, and
//!   otherwise at most what the frame (limit + 11 bytes of head) needs, amortised;
//! - a refused frame reserves nothing (a claimed 4 GiB costs nothing; `Truncated` at the end of the
//!   stream may keep what was reserved while waiting), and every error maps to the status the call
//!   would end with (`RESOURCE_EXHAUSTED` for `TooLarge`, `INTERNAL` otherwise);
//! - every frame re-encoded with `encode_frame` decodes to itself.
#![no_main]

use bytes::BytesMut;
use duet::Code;
use duet::iroh::frame::{Decoder, Frame, FrameDecoder, FrameError, encode_frame, frame_prefix};
use duet_fuzz::{Head, RefEnd, RefFrame, frame_seeds, limit_of, read_head, reference_parse, seed_empty_corpora};
use libfuzzer_sys::fuzz_target;

/// Most bytes a frame head takes: a 10-byte varint and the kind byte.
const HEAD_MAX: usize = 11;

fuzz_target!(
    init: seed_empty_corpora(&frame_seeds()),
    |data: &[u8]| {
        let (&max_message, rest) = data.split_first().unwrap_or((&16, &[]));
        let max_message = usize::from(max_message);
        let (&n, rest) = rest.split_first().unwrap_or((&0, &[]));
        let n = usize::from(n % 16).min(rest.len());
        let (sizes, stream) = rest.split_at(n);

        let (expected, end) = reference_parse(stream, max_message);
        run(stream, max_message, sizes, &expected, end);
        if !sizes.is_empty() {
            run(stream, max_message, &[], &expected, end);
        }
    }
);

fn end_of(e: &FrameError) -> RefEnd {
    match *e {
        FrameError::TooLarge { kind, len, limit } => RefEnd::TooLarge { kind, len, limit },
        FrameError::UnknownKind(b) => RefEnd::UnknownKind(b),
        FrameError::BadLength => RefEnd::BadLength,
        FrameError::Truncated => RefEnd::Truncated,
        FrameError::Io(ref e) => panic!("I/O error from an in-memory decode: {e}"),
    }
}

struct Driver<'a> {
    stream: &'a [u8],
    max_message: usize,
    dec: FrameDecoder,
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    pos: usize,
    /// Bytes of the stream put into `buf` so far.
    fed: usize,
    /// Largest capacity `buf` has had.
    peak: usize,
    expected: &'a [RefFrame],
    got: usize,
}

impl Driver<'_> {
    /// One `decode` or `decode_eof` call with its invariants; `Ok(true)` when it yielded a frame.
    fn step(&mut self, eof: bool) -> Result<bool, RefEnd> {
        let cap_before = self.buf.capacity();
        let len_before = self.buf.len();
        debug_assert_eq!(len_before, self.fed - self.pos);
        let result = if eof { self.dec.decode_eof(&mut self.buf) } else { self.dec.decode(&mut self.buf) };
        let cap_after = self.buf.capacity();
        match result {
            Ok(Some(frame)) => {
                self.check_frame(&frame, len_before);
                self.peak = self.peak.max(cap_after);
                Ok(true)
            }
            Ok(None) => {
                assert_eq!(self.buf.len(), len_before, "Ok(None) consumed bytes");
                self.check_wait(cap_before, cap_after, len_before);
                Ok(false)
            }
            Err(e) => {
                assert_eq!(self.buf.len(), len_before, "an error consumed bytes");
                if eof && matches!(e, FrameError::Truncated) {
                    // `decode_eof` is `decode` (which may have reserved for the frame) then `Truncated`.
                    self.check_wait(cap_before, cap_after, len_before);
                } else {
                    assert_eq!(cap_after, cap_before, "reserved memory for a refused frame: {e}");
                }
                let status = e.to_status();
                let code =
                    if matches!(e, FrameError::TooLarge { .. }) { Code::ResourceExhausted } else { Code::Internal };
                assert_eq!(status.code(), code, "{e}");
                assert!(!status.message().is_empty());
                Err(end_of(&e))
            }
        }
    }

    /// The decoder waits for more bytes: what it may have reserved for that.
    fn check_wait(&mut self, cap_before: usize, cap_after: usize, len_before: usize) {
        match read_head(&self.stream[self.pos..self.fed], self.max_message) {
            Head::Incomplete => {
                assert_eq!(cap_after, cap_before, "reserved before the frame's length and kind were known")
            }
            Head::Head(kind, prefix, len) => {
                let total = prefix + 1 + len as usize;
                assert!(len_before < total, "a whole frame was buffered but not yielded");
                assert!(total <= HEAD_MAX + limit_of(kind, self.max_message));
                assert!(cap_after >= total, "the decoder did not reserve room for the frame it waits for");
                // Growth only for this frame: at most doubling what was there (amortised growth of the
                // buffer's Vec, which may keep consumed bytes in front) or the frame itself.
                let bound = cap_before.max(2 * (self.peak + self.fed)).max(self.fed + total);
                assert!(
                    cap_after <= bound,
                    "reserved {cap_after} bytes for a {kind:?} frame of {len} (limit {}), bound {bound}",
                    limit_of(kind, self.max_message)
                );
            }
            Head::Bad(end) => panic!("decoder waits for more bytes where the spec says {end:?}"),
        }
        self.peak = self.peak.max(cap_after);
    }

    fn check_frame(&mut self, frame: &Frame, len_before: usize) {
        let Some(&want) = self.expected.get(self.got) else {
            panic!("frame {} decoded where the spec sees none: {frame:?}", self.got)
        };
        assert_eq!(frame.kind, want.kind);
        assert!(frame.body.len() <= limit_of(frame.kind, self.max_message), "frame over its limit");
        assert_eq!(frame.body.len(), want.len);
        let consumed = len_before - self.buf.len();
        assert_eq!(consumed, want.prefix + 1 + want.len, "consumed bytes differ from the frame's size");
        let body_at = self.pos + want.prefix + 1;
        assert_eq!(&frame.body[..], &self.stream[body_at..body_at + want.len]);
        self.pos += consumed;
        self.got += 1;

        // The canonical encoding is at most as long and decodes to the same frame.
        assert!(frame_prefix(frame.kind, frame.body.len()).len() <= want.prefix + 1);
        let mut again = BytesMut::from(&encode_frame(frame.kind, &frame.body)[..]);
        let back = FrameDecoder::new(self.max_message).decode_eof(&mut again).expect("re-encoded frame decodes");
        assert_eq!(back.as_ref(), Some(frame));
        assert!(again.is_empty());
    }
}

/// Drives the decoder as `FramedRead` does: decode until `None`, read a chunk, repeat; at the end
/// `decode_eof` until `None`. Stops at the first error, as `FramedRead` does.
fn run(stream: &[u8], max_message: usize, sizes: &[u8], expected: &[RefFrame], end: RefEnd) {
    let mut d = Driver {
        stream,
        max_message,
        dec: FrameDecoder::new(max_message),
        buf: BytesMut::new(),
        pos: 0,
        fed: 0,
        peak: 0,
        expected,
        got: 0,
    };
    let progress = sizes.iter().any(|&s| s > 0);
    let mut next = sizes.iter().cycle();
    let outcome = 'read: loop {
        loop {
            match d.step(false) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => break 'read e,
            }
        }
        if d.fed == stream.len() {
            loop {
                match d.step(true) {
                    Ok(true) => {}
                    Ok(false) => break 'read RefEnd::Clean,
                    Err(e) => break 'read e,
                }
            }
        }
        let size = match next.next() {
            Some(&s) if progress => usize::from(s),
            _ => stream.len(),
        };
        let chunk = &stream[d.fed..(d.fed + size).min(stream.len())];
        d.buf.extend_from_slice(chunk);
        d.fed += chunk.len();
        d.peak = d.peak.max(d.buf.capacity());
    };
    assert_eq!(outcome, end, "stream ended differently from the spec (sizes {sizes:?})");
    assert_eq!(d.got, expected.len(), "frames decoded before the end");
    if end == RefEnd::Clean {
        assert!(d.buf.is_empty());
    }
}
