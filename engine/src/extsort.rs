//! Sorting fixed-size records in bounded memory, for the passes whose sets would otherwise
//! grow with the repository (the trees a check has seen, the blobs a prune must keep).
//!
//! A [`Sorter`] keeps up to its memory budget of records; when full it sorts them and writes
//! them out as a run to an unnamed temporary file (in `$TMPDIR`, removed by the system when
//! closed, also after a kill). [`Sorter::sorted`] merges the runs. A set small enough for the
//! budget never touches the disk. Records compare as bytes: put the key first, big-endian.
//!
//! The files are written and read with blocking calls from async code: each call moves at
//! most a buffer (256 KiB), and the passes using them do nothing else meanwhile.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The memory each sorter, or set written in order, may hold before it goes to disk: 2 MiB,
/// or `STOWAGE_SORT_MEMORY` bytes (at least 4 KiB; the tests make every pass spill with it).
pub fn sort_memory() -> usize {
    static MEMORY: OnceLock<usize> = OnceLock::new();
    *MEMORY.get_or_init(|| {
        std::env::var("STOWAGE_SORT_MEMORY")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(2 << 20, |bytes| bytes.max(4096))
    })
}

/// Buffer of each file read or written.
const FILE_BUFFER: usize = 64 << 10;

/// Runs of one size merged into one run of the next size: files open at once in a final
/// merge stay below this times the number of sizes (a few), and each record is written
/// `log16(records / budget)` times.
const FAN_IN: usize = 16;

fn scratch_error(e: std::io::Error) -> Error {
    Error::io(
        format!(
            "a temporary file in {} (set TMPDIR to a directory with room)",
            std::env::temp_dir().display()
        ),
        e,
    )
}

/// Collects records, and gives them back sorted with exact duplicates removed.
pub struct Sorter<const N: usize> {
    buffer: Vec<[u8; N]>,
    capacity: usize,
    /// Sorted runs on disk, each with its size class (how many merges made it).
    runs: Vec<(u32, Run<N>)>,
}

impl<const N: usize> Sorter<N> {
    /// A sorter holding at most `memory` bytes of records before it writes a run.
    pub fn new(memory: usize) -> Self {
        Sorter {
            buffer: Vec::new(),
            capacity: (memory / N).max(1),
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, record: [u8; N]) -> Result<()> {
        if self.buffer.len() == self.capacity {
            self.spill()?;
        } else if self.buffer.len() == self.buffer.capacity() {
            // Grown by hand: doubling would overshoot the budget.
            let room = self.capacity - self.buffer.len();
            self.buffer
                .reserve_exact(self.buffer.len().max(1024).min(room));
        }
        self.buffer.push(record);
        Ok(())
    }

    fn take_sorted(&mut self) -> Vec<[u8; N]> {
        let mut records = std::mem::take(&mut self.buffer);
        records.sort_unstable();
        records.dedup();
        records
    }

    /// Writes the buffer as a run, merging runs of a size class once [`FAN_IN`] share it.
    fn spill(&mut self) -> Result<()> {
        let records = self.take_sorted();
        self.runs
            .push((0, Run::write(records.into_iter().map(Ok), 0)?));
        loop {
            let n = self.runs.len();
            let class = self.runs[n - 1].0;
            if n < FAN_IN || self.runs[n - FAN_IN..].iter().any(|(c, _)| *c != class) {
                return Ok(());
            }
            let group: Vec<Run<N>> = self.runs.drain(n - FAN_IN..).map(|(_, r)| r).collect();
            let merged = Run::write(merge(group)?, 0)?;
            self.runs.push((class + 1, merged));
        }
    }

    /// Every record pushed, in order, each once.
    pub fn sorted(mut self) -> Result<Sorted<N>> {
        let records = self.take_sorted();
        if self.runs.is_empty() {
            return Ok(Sorted::Memory(records.into_iter()));
        }
        let mut runs: Vec<Run<N>> = self.runs.into_iter().map(|(_, r)| r).collect();
        runs.push(Run::Memory(records));
        merge(runs)
    }
}

/// The records of sorted runs, merged, each once.
fn merge<const N: usize>(runs: Vec<Run<N>>) -> Result<Sorted<N>> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.into_iter().enumerate() {
        let mut reader = run.reader()?;
        if let Some(first) = reader.next().transpose()? {
            heap.push(Reverse((first, i)));
        }
        readers.push(reader);
    }
    Ok(Sorted::Merge {
        readers,
        heap,
        last: None,
    })
}

/// Sorted records, each once: from memory, or merged from runs.
pub enum Sorted<const N: usize> {
    Memory(std::vec::IntoIter<[u8; N]>),
    Merge {
        readers: Vec<RunReader<N>>,
        heap: BinaryHeap<Reverse<([u8; N], usize)>>,
        last: Option<[u8; N]>,
    },
}

impl<const N: usize> Default for Sorted<N> {
    /// No records.
    fn default() -> Self {
        Sorted::Memory(Vec::new().into_iter())
    }
}

impl<const N: usize> Iterator for Sorted<N> {
    type Item = Result<[u8; N]>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(records) => records.next().map(Ok),
            Sorted::Merge {
                readers,
                heap,
                last,
            } => loop {
                let Reverse((record, i)) = heap.pop()?;
                match readers[i].next() {
                    Some(Ok(next)) => heap.push(Reverse((next, i))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
                // The same record may be in several runs.
                if last.as_ref() != Some(&record) {
                    *last = Some(record);
                    return Some(Ok(record));
                }
            },
        }
    }
}

/// Records kept in the order given: in memory up to a budget, then in a temporary file.
pub enum Run<const N: usize> {
    Memory(Vec<[u8; N]>),
    File { file: File, len: u64 },
}

impl<const N: usize> Run<N> {
    /// The records, kept in memory while they fit in `memory` bytes.
    pub fn write(
        records: impl IntoIterator<Item = Result<[u8; N]>>,
        memory: usize,
    ) -> Result<Self> {
        let mut out = RunWriter::new(memory);
        for record in records {
            out.push(record?)?;
        }
        out.finish()
    }

    pub fn reader(self) -> Result<RunReader<N>> {
        Ok(match self {
            Run::Memory(records) => RunReader::Memory(records.into_iter()),
            Run::File { file, len } => RunReader::File {
                file: BufReader::with_capacity(FILE_BUFFER, file),
                left: len,
            },
        })
    }
}

/// Writes a [`Run`], moving to a temporary file once the records pass its memory budget.
pub struct RunWriter<const N: usize> {
    memory: Vec<[u8; N]>,
    capacity: usize,
    file: Option<BufWriter<File>>,
    len: u64,
}

impl<const N: usize> RunWriter<N> {
    pub fn new(memory: usize) -> Self {
        RunWriter {
            memory: Vec::new(),
            capacity: memory / N,
            file: None,
            len: 0,
        }
    }

    pub fn push(&mut self, record: [u8; N]) -> Result<()> {
        self.len += 1;
        if let Some(out) = &mut self.file {
            return out.write_all(&record).map_err(scratch_error);
        }
        if self.memory.len() < self.capacity {
            self.memory.push(record);
            return Ok(());
        }
        let file = tempfile::tempfile().map_err(scratch_error)?;
        let mut out = BufWriter::with_capacity(FILE_BUFFER, file);
        for kept in self.memory.drain(..).chain([record]) {
            out.write_all(&kept).map_err(scratch_error)?;
        }
        self.memory = Vec::new();
        self.file = Some(out);
        Ok(())
    }

    pub fn finish(self) -> Result<Run<N>> {
        let Some(out) = self.file else {
            return Ok(Run::Memory(self.memory));
        };
        let mut file = out
            .into_inner()
            .map_err(|e| scratch_error(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(scratch_error)?;
        Ok(Run::File {
            file,
            len: self.len,
        })
    }
}

/// A run's records, read in order.
pub enum RunReader<const N: usize> {
    Memory(std::vec::IntoIter<[u8; N]>),
    File { file: BufReader<File>, left: u64 },
}

impl<const N: usize> Iterator for RunReader<N> {
    type Item = Result<[u8; N]>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RunReader::Memory(records) => records.next().map(Ok),
            RunReader::File { left: 0, .. } => None,
            RunReader::File { file, left } => {
                *left -= 1;
                let mut record = [0; N];
                Some(
                    file.read_exact(&mut record)
                        .map(|()| record)
                        .map_err(scratch_error),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn records(seed: u64, n: usize) -> Vec<[u8; 8]> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Few distinct values: many duplicates, within a run and across runs.
        (0..n)
            .map(|_| rng.gen_range(0u64..n as u64 / 3).to_be_bytes())
            .collect()
    }

    fn sort_with(memory: usize, input: &[[u8; 8]]) -> (Vec<[u8; 8]>, usize) {
        let mut sorter = Sorter::<8>::new(memory);
        for r in input {
            sorter.push(*r).unwrap();
        }
        let runs = sorter
            .runs
            .iter()
            .map(|(class, _)| FAN_IN.pow(*class))
            .sum();
        let out = sorter
            .sorted()
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        (out, runs)
    }

    #[test]
    fn records_come_back_sorted_and_once_whether_or_not_they_spilled() {
        let input = records(7, 50_000);
        let mut expected = input.clone();
        expected.sort_unstable();
        expected.dedup();
        let (in_memory, runs) = sort_with(1 << 20, &input);
        assert_eq!(runs, 0);
        assert_eq!(in_memory, expected);
        // 1,000 records a run: 49 runs written (the last records stay in memory), 32 of them
        // merged into two on the way.
        let (spilled, runs) = sort_with(8_000, &input);
        assert_eq!(runs, 49);
        assert_eq!(spilled, expected);
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_budget() {
        let mut sorter = Sorter::<8>::new(80_000);
        for r in records(3, 30_000) {
            sorter.push(r).unwrap();
            assert!(
                sorter.buffer.capacity() <= 10_000,
                "{}",
                sorter.buffer.capacity()
            );
        }
    }

    #[test]
    fn a_run_reads_back_what_was_written_from_memory_or_from_its_file() {
        let input = records(1, 1000);
        for memory in [1 << 20, 800] {
            let run = Run::<8>::write(input.iter().copied().map(Ok), memory).unwrap();
            assert_eq!(matches!(run, Run::File { .. }), memory == 800);
            let back = run.reader().unwrap().collect::<Result<Vec<_>>>().unwrap();
            assert_eq!(back, input);
        }
    }
}
