//! Splitting a deflate stream into pieces (preflate-rs, on a thread of its own) while the
//! plaintext of each piece that re-creates its bytes exactly is handed out ([`Checked`]).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use preflate_rs::{ExitCode, PreflateConfig, PreflateStreamProcessor, RecreateStreamProcessor};

use super::{guarded, reason, recompress, Piece};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
