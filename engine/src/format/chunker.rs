//! Content-defined chunking with FastCDC (2020), over a reader, without copying each chunk
//! out of a sliding buffer. Cut points depend only on the bytes from a chunk's start up to
//! `max` bytes on, so a buffer of `max` and a little more gives exactly the whole-stream cuts.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size parameters, fixed per repository (stored in `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 512 << 10,
            avg: 1 << 20,
            max: 8 << 20,
        }
    }
}

impl ChunkerParams {
    /// For a repository of gzip content: a changed file in a layer costs the chunks around
    /// the change, so smaller chunks store less (BENCHMARKS.md, "Gzip layers": 3% of the
    /// raw path over 30 nightly rebuilds with these, 9% with the default).
    pub fn for_gzip_content() -> Self {
        ChunkerParams {
            min: 64 << 10,
            avg: 256 << 10,
            max: 1 << 20,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker parameters {self:?}"))
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Chunker { params, seed }
    }

    /// Reads `reader` to its end and calls `f` on each chunk in order. `size_hint` (the
    /// expected length) keeps the buffer small for small files; a wrong hint costs only a
    /// reallocation.
    pub fn chunk<R: Read, E: From<std::io::Error>>(
        &self,
        reader: R,
        size_hint: u64,
        f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.chunk_with(&mut Vec::new(), reader, size_hint, f)
    }

    /// [`chunk`](Self::chunk) with a caller's buffer, grown as needed and kept for reuse.
    /// At full size the buffer holds a maximal chunk and 1 MiB more (a backup keeps one
    /// buffer per reader): what a refill keeps is only the unfinished last chunk, so a refill
    /// usually reads most of the buffer, and at least 1 MiB.
    pub fn chunk_with<R: Read, E: From<std::io::Error>>(
        &self,
        buf: &mut Vec<u8>,
        mut reader: R,
        size_hint: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.params.max as usize;
        let full = max + (1 << 20);
        let wanted = (size_hint as usize).saturating_add(1).min(full);
        if buf.len() < wanted {
            buf.resize(wanted, 0);
        }
        let mut len = 0;
        let mut eof = false;
        loop {
            while !eof && len < buf.len() {
                match reader.read(&mut buf[len..]) {
                    Ok(0) => eof = true,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if len == 0 {
                return Ok(());
            }
            if !eof && buf.len() < full && len == buf.len() {
                // Longer than the hint said: continue with a full-size buffer.
                buf.resize(full, 0);
                continue;
            }
            let cdc = FastCDC::with_level_and_seed(
                &buf[..len],
                self.params.min,
                self.params.avg,
                self.params.max,
                Normalization::Level1,
                self.seed,
            );
            let mut consumed = 0;
            for chunk in cdc {
                // A cut found before the buffer's end is where the whole stream has it (a
                // cut depends only on the bytes from the chunk's start). A chunk that runs to
                // the buffer's end short of `max` may go on: refill first.
                if !eof && chunk.offset + chunk.length == len && chunk.length < max {
                    break;
                }
                f(&buf[chunk.offset..chunk.offset + chunk.length])?;
                consumed = chunk.offset + chunk.length;
            }
            if eof && consumed == len {
                return Ok(());
            }
            buf.copy_within(consumed..len, 0);
            len -= consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    /// A reader that returns few bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.0.len()).min(1000);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn streamed_cuts_equal_whole_buffer_cuts() {
        streamed_equals_whole(&pseudo_random(3 << 20), params());
        // The repository default, where the buffer holds a maximal chunk and only 1 MiB
        // more; a run of zeros forces chunks of exactly `max`.
        let mut data = pseudo_random(20 << 20);
        data[5 << 20..14 << 20].fill(0);
        streamed_equals_whole(&data, ChunkerParams::default());
    }

    fn streamed_equals_whole(data: &[u8], p: ChunkerParams) {
        let whole: Vec<usize> =
            FastCDC::with_level_and_seed(data, p.min, p.avg, p.max, Normalization::Level1, 7)
                .map(|c| c.length)
                .collect();
        let mut streamed = Vec::new();
        let mut joined = Vec::new();
        Chunker::new(p, 7)
            .chunk(Trickle(data), 1000, |c| -> std::io::Result<()> {
                streamed.push(c.len());
                joined.extend_from_slice(c);
                Ok(())
            })
            .expect("chunk");
        assert_eq!(streamed, whole);
        assert_eq!(joined, data);
    }

    #[test]
    fn insert_shifts_only_nearby_chunks() {
        let data = pseudo_random(2 << 20);
        let mut edited = data[..1 << 20].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1 << 20..]);
        let chunks = |d: &[u8]| {
            let mut out = std::collections::HashSet::new();
            Chunker::new(params(), 1)
                .chunk(d, d.len() as u64, |c| -> std::io::Result<()> {
                    out.insert(blake3::hash(c));
                    Ok(())
                })
                .expect("chunk");
            out
        };
        let (a, b) = (chunks(&data), chunks(&edited));
        let shared = a.intersection(&b).count();
        assert!(
            shared + 3 >= a.len(),
            "{shared} of {} chunks shared",
            a.len()
        );
    }

    #[test]
    fn a_reused_buffer_gives_the_same_cuts() {
        let chunker = Chunker::new(params(), 3);
        let cuts = |buf: &mut Vec<u8>, data: &[u8], hint: u64| {
            let mut out = Vec::new();
            chunker
                .chunk_with(buf, Trickle(data), hint, |c| -> std::io::Result<()> {
                    out.push(blake3::hash(c));
                    Ok(())
                })
                .expect("chunk");
            out
        };
        let (big, small) = (pseudo_random(1 << 20), pseudo_random(5000));
        let mut buf = Vec::new();
        let first = cuts(&mut buf, &big, big.len() as u64);
        assert_eq!(
            cuts(&mut buf, &small, 10),
            cuts(&mut Vec::new(), &small, 5000)
        );
        assert_eq!(cuts(&mut buf, &big, 0), first);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let mut n = 0;
        Chunker::new(params(), 0)
            .chunk(&b""[..], 0, |_| -> std::io::Result<()> {
                n += 1;
                Ok(())
            })
            .expect("chunk");
        assert_eq!(n, 0);
    }
}
