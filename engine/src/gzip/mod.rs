//! Gzip content (FORMAT.md, "Gzip content"): a gzip file kept as its plaintext, chunked and
//! deduplicated like any other content, plus a recipe that re-creates the exact compressed
//! bytes from it. Registry layers are gzip streams named by the sha256 of their compressed
//! bytes; a layer rebuilt with three changed files shares nearly all of its plaintext with
//! the one before, and almost none of its compressed bytes.
//!
//! The deflate stream is split into pieces by `preflate-rs`, which finds how the encoder
//! chose its matches and Huffman trees and records, per piece, the corrections to its own
//! prediction. Each piece is re-created from its plaintext and corrections as soon as it is
//! split, exactly as a restore will do it, and compared with the original bytes: a stream
//! that does not come back exactly is never recorded as gzip content. Where that fails, the
//! file's remaining bytes are kept as they are (the "tail"); when no piece succeeded the
//! whole file is ordinary content.

use std::io::{self, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use preflate_rs::{ExitCode, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

use crate::error::{Error, Result};

/// The encoder of the recipes written here. A recipe names its encoder; one this build
/// cannot replay is refused (FORMAT.md, "Gzip content").
pub const ENCODER: &str = "preflate-rs 0.7";

/// Gzip header bytes looked at, at most (a header with a longer name or comment is
/// stored as ordinary content).
pub const HEADER_MAX: usize = 4096;
/// Compressed bytes given to the first piece: preflate-rs estimates the encoder's parameters
/// from the first piece only, and a small one misleads it.
const FIRST_FEED: usize = 4 << 20;
/// Compressed bytes given to each later piece.
const FEED: usize = 1 << 20;
/// A feed never grows past this while looking for a whole deflate block.
const FEED_MAX: usize = 32 << 20;
/// Plaintext of one piece, at most (bounds memory on highly compressed input; a single
/// deflate block of gzip -9 can hold 8 MiB).
const PLAIN_LIMIT: usize = 16 << 20;
/// Plaintext split into pieces, at most: preflate-rs keeps stream positions in an i32. The
/// rest of a longer stream is the tail. The margin covers one more piece: its plaintext
/// limit does not count stored blocks, which a whole feed may hold.
const PLAIN_MAX: u64 = i32::MAX as u64 - 2 * (PLAIN_LIMIT + FEED_MAX) as u64;

/// The length of the gzip member header (RFC 1952) at the start of `bytes`, or `None` when
/// `bytes` does not start with a complete deflate-gzip header.
pub fn header_len(bytes: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let (&[0x1f, 0x8b, 8, flags], rest) = bytes.split_first_chunk::<4>()? else {
        return None;
    };
    if flags & 0xe0 != 0 || rest.len() < 6 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let xlen = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += bytes.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= bytes.len()).then_some(at)
}

/// One piece of a deflate stream: how much plaintext it holds, how many compressed bytes it
/// re-creates, and the corrections that steer the re-creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub plain: u64,
    pub compressed: u64,
    pub corrections: Vec<u8>,
}

/// What re-creates a gzip file's compressed bytes: its header verbatim and the pieces of its
/// deflate stream. The plaintext and the tail are kept as content blobs beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub header: Vec<u8>,
    pub pieces: Vec<Piece>,
}

const MAGIC: &[u8; 8] = b"STWGZIP1";

impl Recipe {
    /// Bytes of the plaintext the pieces re-create.
    pub fn plain_len(&self) -> u64 {
        self.pieces.iter().map(|p| p.plain).sum()
    }

    /// Bytes the header and the pieces re-create.
    pub fn compressed_len(&self) -> u64 {
        self.header.len() as u64 + self.pieces.iter().map(|p| p.compressed).sum::<u64>()
    }

    /// The recipe as stored: magic, encoder, header, pieces (lengths little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let corrections: usize = self.pieces.iter().map(|p| p.corrections.len() + 20).sum();
        let mut out = Vec::with_capacity(64 + self.header.len() + corrections);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, ENCODER.as_bytes());
        put_bytes(&mut out, &self.header);
        out.extend_from_slice(&(self.pieces.len() as u32).to_le_bytes());
        for piece in &self.pieces {
            out.extend_from_slice(&piece.plain.to_le_bytes());
            out.extend_from_slice(&piece.compressed.to_le_bytes());
            put_bytes(&mut out, &piece.corrections);
        }
        out
    }

    /// Parses a stored recipe; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Recipe> {
        let bad = |detail: &str| Error::corrupt(what, format!("gzip recipe: {detail}"));
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("not a recipe"));
        }
        let encoder = r.bytes().ok_or_else(|| bad("cut short"))?;
        if encoder != ENCODER.as_bytes() {
            return Err(Error::Usage(format!(
                "{what}: gzip recipe made by {:?}, which this build cannot replay (it has {ENCODER})",
                String::from_utf8_lossy(encoder)
            )));
        }
        let header = r.bytes().ok_or_else(|| bad("cut short"))?.to_vec();
        let count = r.u32().ok_or_else(|| bad("cut short"))?;
        let mut pieces = Vec::new();
        for _ in 0..count {
            let piece = (|| {
                Some(Piece {
                    plain: r.u64()?,
                    compressed: r.u64()?,
                    corrections: r.bytes()?.to_vec(),
                })
            })()
            .ok_or_else(|| bad("cut short"))?;
            pieces.push(piece);
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Recipe { header, pieces })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Runs a preflate-rs call, turning a panic (the crate asserts on some inputs) into an error.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(format!("preflate-rs panicked: {why}"))
    })
}

/// The compressed bytes of the next piece of `recreate`'s stream.
fn recompress(
    recreate: &mut RecreateStreamProcessor,
    plain: &[u8],
    corrections: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    guarded(|| {
        recreate
            .recompress(&mut Cursor::new(plain), corrections)
            .map(|(bytes, _)| bytes)
            .map_err(|e| reason(&e))
    })
}

/// A preflate-rs error in one line (its message goes on with where it was raised).
fn reason(e: &preflate_rs::PreflateError) -> String {
    let message = e.message();
    let first = message.lines().next().unwrap_or_default().trim();
    format!("{:?}: {first}", e.exit_code())
}

/// Why splitting a stream stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The deflate stream ended; what follows it (the gzip trailer) is the tail.
    Complete,
    /// A piece could not be split or re-created exactly: the tail starts there.
    Failed(String),
}

/// What the splitting thread sends: pieces as split (not yet checked), then the end.
enum Split {
    Piece {
        plain: Vec<u8>,
        corrections: Vec<u8>,
        compressed: Vec<u8>,
    },
    /// Why splitting stopped (`None`: the stream ended), and the compressed bytes read but
    /// in no piece.
    End {
        why: Option<String>,
        leftover: Vec<u8>,
    },
}

/// Splits the deflate stream `input` (the gzip header already read) into pieces on a thread
/// of its own, while `consume` reads their plaintext from a [`Checked`] on this one: each
/// piece is re-created, as a restore will do it, and compared with its compressed bytes
/// before its plaintext is handed out. Returns what `consume` returned, the checked pieces,
/// why splitting stopped, and the compressed bytes in no checked piece (from the end of the
/// last one); the rest of the file is what `input` has left. Only reading `input` fails.
pub fn split<R: Read + Send, T>(
    input: &mut R,
    consume: impl FnOnce(&mut Checked) -> T,
) -> io::Result<(T, Vec<Piece>, Ending, Vec<u8>)> {
    let stop = &AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(1);
        // The sender goes with the thread: the receiver sees the end when it is done.
        let splitting = scope.spawn(move || split_pieces(input, &tx, stop));
        let mut checked = Checked::new(rx, stop);
        let consumed = consume(&mut checked);
        let finished = checked.finish();
        match (splitting.join(), finished) {
            (Ok(Ok(())), Some((pieces, ending, unchecked))) => {
                Ok((consumed, pieces, ending, unchecked))
            }
            (Ok(Err(e)), _) => Err(e),
            (Err(_), _) => Err(io::Error::other("the gzip splitting thread panicked")),
            // Its pieces would promise plaintext that was not taken.
            (_, None) => Err(io::Error::other("gzip plaintext not read to the end")),
        }
    })
}

/// The splitting thread: pieces to `tx` until the stream ends, a piece cannot be split, or
/// `stop` is set; then the end.
fn split_pieces(
    input: &mut impl Read,
    tx: &SyncSender<Split>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let config = PreflateConfig {
        plain_text_limit: PLAIN_LIMIT,
        // Each piece is re-created and compared by the reading side.
        verify_compression: false,
        ..PreflateConfig::default()
    };
    let mut processor = PreflateStreamProcessor::new(&config);
    let (mut pending, mut input_done) = (Vec::new(), false);
    let (mut feed, mut plain_total) = (FIRST_FEED, 0u64);
    let why = loop {
        if stop.load(Ordering::Relaxed) {
            break Some("stopped".to_string());
        }
        if plain_total > PLAIN_MAX {
            break Some(format!(
                "more than {} MiB of plaintext (preflate-rs keeps positions in 31 bits)",
                PLAIN_MAX >> 20
            ));
        }
        input_done |= fill(input, &mut pending, feed)?;
        let fed = &pending[..feed.min(pending.len())];
        // One guarded call: the crate asserts in places, and its positions overflow past
        // 2 GiB in builds with overflow checks.
        let result = guarded(|| match processor.decompress(fed) {
            Ok(r) => {
                let plain = processor.plain_text().text().to_vec();
                processor.shrink_to_dictionary();
                Ok(Some((
                    plain,
                    r.corrections,
                    r.compressed_size,
                    processor.is_done(),
                )))
            }
            Err(e) if e.exit_code() == ExitCode::ShortRead => Ok(None),
            Err(e) => Err(reason(&e)),
        });
        let (plain, corrections, used, done) = match result {
            Ok(Some(piece)) => piece,
            // No whole deflate block in the feed: feed more, unless there is no more.
            Ok(None) if feed < FEED_MAX && (!input_done || pending.len() > feed) => {
                feed *= 2;
                continue;
            }
            Ok(None) if input_done && pending.len() <= feed => {
                break Some("the deflate stream is cut short".into())
            }
            Ok(None) => break Some(format!("a deflate block over {} MiB", FEED_MAX >> 20)),
            Err(why) => break Some(why),
        };
        plain_total += plain.len() as u64;
        let piece = Split::Piece {
            plain,
            corrections,
            compressed: pending.drain(..used).collect(),
        };
        if tx.send(piece).is_err() {
            return Ok(()); // the reading side is gone
        }
        if done {
            break None;
        }
        feed = FEED;
    };
    let _ = tx.send(Split::End {
        why,
        leftover: pending,
    });
    Ok(())
}

/// Reads compressed input until `want` bytes are pending; whether the input ended.
fn fill(input: &mut impl Read, pending: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    while pending.len() < want {
        let at = pending.len();
        pending.resize(want, 0);
        let read = input.read(&mut pending[at..]);
        pending.truncate(at + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The plaintext of the pieces that re-create their compressed bytes exactly, in order. It
/// ends (reads 0) at the end of the stream or before the first piece that does not.
pub struct Checked<'a> {
    rx: Receiver<Split>,
    stop: &'a AtomicBool,
    check: RecreateStreamProcessor,
    /// The current piece's plaintext and how much of it was handed out.
    plain: Vec<u8>,
    handed: usize,
    pieces: Vec<Piece>,
    ending: Option<Ending>,
    /// Compressed bytes of pieces not taken, and what the splitter read beyond them.
    unchecked: Vec<u8>,
}

impl<'a> Checked<'a> {
    fn new(rx: Receiver<Split>, stop: &'a AtomicBool) -> Self {
        Checked {
            rx,
            stop,
            check: RecreateStreamProcessor::new(),
            plain: Vec::new(),
            handed: 0,
            pieces: Vec::new(),
            ending: None,
            unchecked: Vec::new(),
        }
    }

    /// Takes the next piece if it checks; else records why not and stops the splitter.
    fn next_piece(&mut self) {
        match self.rx.recv() {
            Ok(Split::Piece {
                plain,
                corrections,
                compressed,
            }) => match recompress(&mut self.check, &plain, &corrections) {
                Ok(bytes) if bytes == compressed => {
                    self.pieces.push(Piece {
                        plain: plain.len() as u64,
                        compressed: compressed.len() as u64,
                        corrections,
                    });
                    (self.plain, self.handed) = (plain, 0);
                }
                checked => {
                    let why = checked.err().unwrap_or("re-created bytes differ".into());
                    self.unchecked.extend_from_slice(&compressed);
                    self.ending = Some(Ending::Failed(why));
                    self.stop.store(true, Ordering::Relaxed);
                }
            },
            Ok(Split::End { why, leftover }) => {
                self.unchecked.extend_from_slice(&leftover);
                self.ending = Some(why.map_or(Ending::Complete, Ending::Failed));
            }
            // The splitter failed reading the input (`split` returns its error).
            Err(_) => self.ending = Some(Ending::Failed("reading stopped".into())),
        }
    }

    /// The checked pieces, why they end, and the compressed bytes after them that the
    /// splitter read (the rest of the pieces it sent, and what it read beyond); `None`
    /// when the plaintext was not read to its end.
    fn finish(mut self) -> Option<(Vec<Piece>, Ending, Vec<u8>)> {
        self.stop.store(true, Ordering::Relaxed);
        let ending = self.ending.take();
        // Everything the splitter still sends is unchecked, up to its end.
        for split in self.rx.iter() {
            match split {
                Split::Piece { compressed, .. } => self.unchecked.extend_from_slice(&compressed),
                Split::End { leftover, .. } => self.unchecked.extend_from_slice(&leftover),
            }
        }
        Some((self.pieces, ending?, self.unchecked))
    }
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.handed == self.plain.len() {
            if self.ending.is_some() {
                return Ok(0);
            }
            self.next_piece();
        }
        let n = buf.len().min(self.plain.len() - self.handed);
        buf[..n].copy_from_slice(&self.plain[self.handed..self.handed + n]);
        self.handed += n;
        Ok(n)
    }
}

/// Re-creates a recipe's compressed bytes from its plaintext, fed in any slices.
pub struct Rebuilder {
    pieces: std::vec::IntoIter<Piece>,
    current: Option<Piece>,
    plain: Vec<u8>,
    recreate: RecreateStreamProcessor,
    what: String,
}

impl Rebuilder {
    /// A rebuilder of `recipe`'s pieces (its header is the caller's to write first).
    pub fn new(recipe: Recipe, what: String) -> Self {
        let mut pieces = recipe.pieces.into_iter();
        Rebuilder {
            current: pieces.next(),
            pieces,
            plain: Vec::new(),
            recreate: RecreateStreamProcessor::new(),
            what,
        }
    }

    /// Takes plaintext; hands each piece's compressed bytes to `out` once its plaintext is
    /// complete.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let Some(piece) = &self.current else {
                return Err(Error::corrupt(
                    &self.what,
                    "more plaintext than the gzip recipe re-creates",
                ));
            };
            let want = (piece.plain as usize).saturating_sub(self.plain.len());
            let n = want.min(bytes.len());
            self.plain.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.flush(out)?;
        }
        Ok(())
    }

    /// Re-creates every piece whose plaintext is complete.
    fn flush(&mut self, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while let Some(piece) = &self.current {
            if self.plain.len() as u64 != piece.plain {
                return Ok(());
            }
            let bytes = recompress(&mut self.recreate, &self.plain, &piece.corrections)
                .map_err(|why| Error::corrupt(&self.what, format!("gzip re-creation: {why}")))?;
            if bytes.len() as u64 != piece.compressed {
                return Err(Error::corrupt(
                    &self.what,
                    format!(
                        "gzip re-creation made {} bytes where the recipe says {}",
                        bytes.len(),
                        piece.compressed
                    ),
                ));
            }
            out(&bytes)?;
            self.plain.clear();
            self.current = self.pieces.next();
        }
        Ok(())
    }

    /// Checks that every piece was re-created (pieces without plaintext are done here).
    pub fn finish(mut self, out: &mut impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.flush(out)?;
        match self.current {
            None => Ok(()),
            Some(_) => Err(Error::corrupt(
                &self.what,
                "less plaintext than the gzip recipe re-creates",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Text-like data with repeats far apart, as in a tar of source files.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let words = [
            "layer",
            "registry",
            "digest",
            "manifest",
            "blob",
            "tar",
            "config",
            "static",
            "usr/lib",
            "libc.so.6",
            "\n",
            "{\"id\":",
            "0123456789",
            "  ",
        ];
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
            if x.is_multiple_of(11) {
                out.push((x >> 32) as u8);
            }
        }
        out.truncate(len);
        out
    }

    /// `plain` compressed by GNU gzip at `level`.
    fn gzip(plain: &[u8], level: u32) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .args([format!("-{level}"), "-n".into(), "-c".into()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("GNU gzip runs");
        let mut stdin = child.stdin.take().unwrap();
        let plain = plain.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&plain));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Splits `gz` as a backup does and rebuilds it as a restore does.
    fn round_trip(gz: &[u8]) -> (Vec<u8>, Ending, usize) {
        let h = header_len(gz).expect("gzip header");
        let mut input = &gz[h..];
        let (plain, pieces, ending, unchecked) = split(&mut input, |checked| {
            let mut plain = Vec::new();
            checked.read_to_end(&mut plain).map(|_| plain)
        })
        .unwrap();
        let plain = plain.unwrap();
        let rest = [&unchecked[..], input].concat();
        let recipe = Recipe {
            header: gz[..h].to_vec(),
            pieces,
        };
        let recipe = Recipe::decode(&recipe.encode(), "test").unwrap();
        assert_eq!(recipe.plain_len(), plain.len() as u64);
        let mut out = recipe.header.clone();
        let count = recipe.pieces.len();
        let mut rebuild = Rebuilder::new(recipe, "test".into());
        let mut write = |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        };
        for slice in plain.chunks(100_000) {
            rebuild.push(slice, &mut write).unwrap();
        }
        rebuild.finish(&mut write).unwrap();
        out.extend_from_slice(&rest);
        (out, ending, count)
    }

    #[test]
    fn gnu_gzip_level_6_streams_come_back_exactly() {
        let gz = gzip(&sample(20 << 20, 7), 6);
        let (out, ending, pieces) = round_trip(&gz);
        assert_eq!(ending, Ending::Complete);
        assert!(pieces >= 2, "{pieces} pieces");
        assert!(out == gz, "re-created bytes differ");
    }

    #[test]
    fn a_cut_stream_keeps_its_whole_pieces_and_the_rest_verbatim() {
        let gz = gzip(&sample(6 << 20, 9), 6);
        let cut = &gz[..gz.len() * 3 / 4];
        let (out, ending, pieces) = round_trip(cut);
        assert!(matches!(ending, Ending::Failed(_)), "{ending:?}");
        assert!(pieces >= 1);
        assert!(out == cut);
    }

    #[test]
    fn bytes_that_are_not_deflate_stay_verbatim() {
        let mut junk = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        junk.extend(std::iter::repeat_n(0xff, 100_000));
        let (out, ending, pieces) = round_trip(&junk);
        assert!(matches!(ending, Ending::Failed(_)));
        assert_eq!(pieces, 0);
        assert!(out == junk);
    }

    #[test]
    fn a_piece_that_does_not_check_ends_the_plaintext_and_the_rest_is_unchecked() {
        let (tx, rx) = sync_channel(4);
        let stop = AtomicBool::new(false);
        let piece = |compressed: &[u8]| Split::Piece {
            plain: b"plain".to_vec(),
            corrections: vec![1, 2, 3],
            compressed: compressed.to_vec(),
        };
        tx.send(piece(b"not what re-creation makes")).unwrap();
        tx.send(piece(b"sent before the stop")).unwrap();
        tx.send(Split::End {
            why: None,
            leftover: b"read beyond".to_vec(),
        })
        .unwrap();
        drop(tx);
        let mut checked = Checked::new(rx, &stop);
        let mut plain = Vec::new();
        checked.read_to_end(&mut plain).unwrap();
        assert!(plain.is_empty());
        assert!(stop.load(Ordering::Relaxed), "the splitter is told to stop");
        let (pieces, ending, unchecked) = checked.finish().expect("read to the end");
        assert!(pieces.is_empty());
        assert!(matches!(ending, Ending::Failed(_)), "{ending:?}");
        assert_eq!(
            unchecked,
            b"not what re-creation makessent before the stopread beyond"
        );
    }

    #[test]
    fn gzip_headers_with_optional_fields() {
        assert_eq!(
            header_len(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xaa]),
            Some(10)
        );
        let named = [&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3][..], b"a.tar\0", &[1]].concat();
        assert_eq!(header_len(&named), Some(16));
        let extra = [
            &[0x1f, 0x8b, 8, 4 | 2, 0, 0, 0, 0, 0, 3, 2, 0][..],
            b"xy",
            &[0, 0],
        ]
        .concat();
        assert_eq!(header_len(&extra), Some(16));
        assert_eq!(header_len(b"\x1f\x8b\x08\x08\0\0\0\0\0\x03no-end"), None);
        assert_eq!(header_len(b"PK\x03\x04"), None);
        assert_eq!(header_len(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]), None);
    }

    #[test]
    fn damaged_recipes_are_refused() {
        let recipe = Recipe {
            header: vec![1, 2, 3],
            pieces: vec![Piece {
                plain: 10,
                compressed: 5,
                corrections: vec![9; 4],
            }],
        };
        let bytes = recipe.encode();
        assert_eq!(Recipe::decode(&bytes, "r").unwrap(), recipe);
        assert!(matches!(
            Recipe::decode(&bytes[..bytes.len() - 1], "r"),
            Err(Error::Corrupt { .. })
        ));
        let mut other = bytes.clone();
        other[12] = b'X'; // the encoder's name
        assert!(
            matches!(Recipe::decode(&other, "r"), Err(Error::Usage(m)) if m.contains("cannot replay"))
        );
    }
}
