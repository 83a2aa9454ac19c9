//! Walks a tar stream block by block, keeping every byte that is not entry content: header
//! blocks, PAX extended headers ('x', 'g'), GNU long names ('L', 'K'), the padding after
//! each entry and everything from the end-of-archive blocks on. Those bytes (the skeleton)
//! and the entries' contents together are the exact tar again (FORMAT.md, "Tar snapshots").
//!
//! Header fields are decoded by the `tar` crate; this module only decides where each block
//! belongs. It refuses what is not a tar: a bad header checksum, a stream cut short inside
//! an entry or before the end-of-archive blocks, an empty stream.

use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};

/// Largest PAX or long-name record accepted (they hold names and a few numbers).
const MAX_RECORD: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("not a tar archive: {0}")]
    NotTar(String),
    #[error("the tar is cut short: {0}")]
    Truncated(String),
    #[error("damaged tar: {0}")]
    Damaged(String),
    #[error("unsupported tar: {0}")]
    Unsupported(String),
    #[error("reading the tar: {0}")]
    Io(#[from] io::Error),
}

/// What an entry is, as the tree records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A hard link to an earlier entry (`target`).
    HardLink,
    /// Devices and fifos: kept in the skeleton, not in the tree.
    Other,
}

/// One entry's header, with the PAX and long-name records that preceded it applied.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Every byte of this entry before its content: metadata records, then its header.
    pub raw: Vec<u8>,
    /// The path as written (PAX `path`, GNU long name, or the header's name).
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    /// Content bytes that follow the header in the stream.
    pub size: u64,
    pub link: Option<Vec<u8>>,
}

/// The next part of a tar stream.
pub enum Item {
    /// An entry; the caller consumes (or supplies) its `size` content bytes, then calls
    /// [`TarWalker::padding`].
    Entry(Entry),
    /// The first end-of-archive block; everything after it is read from [`TarWalker::rest`].
    End(Vec<u8>),
}

pub struct TarWalker<R> {
    inner: R,
    offset: u64,
    entries: u64,
}

impl<R: Read> TarWalker<R> {
    pub fn new(inner: R) -> Self {
        TarWalker {
            inner,
            offset: 0,
            entries: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The stream after the first end-of-archive block (more zero blocks, record padding,
    /// whatever follows), to be copied as it is.
    pub fn rest(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The stream, for reading an entry's content.
    pub fn content(&mut self, size: u64) -> ContentReader<'_, R> {
        ContentReader {
            walker: self,
            left: size,
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of stream.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<bool, TarError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) if done == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarError::Truncated(format!(
                        "{what} at byte {} ends after {done} of {} bytes",
                        self.offset,
                        buf.len()
                    )))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += buf.len() as u64;
        Ok(true)
    }

    fn block(&mut self, what: &str) -> Result<Option<[u8; 512]>, TarError> {
        let mut block = [0u8; 512];
        Ok(self.fill(&mut block, what)?.then_some(block))
    }

    /// The padding after an entry of `size` content bytes, as found.
    pub fn padding(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        let mut pad = vec![0u8; padding_len(size)];
        if !pad.is_empty() && !self.fill(&mut pad, "the padding of an entry")? {
            return Err(TarError::Truncated(
                "the stream ends inside an entry".into(),
            ));
        }
        Ok(pad)
    }

    /// The next entry, or the end of the archive.
    pub fn next_item(&mut self) -> Result<Item, TarError> {
        let mut raw = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let at = self.offset;
            let Some(block) = self.block("a header")? else {
                return Err(match (self.entries, raw.is_empty()) {
                    (0, true) => TarError::NotTar("the stream is empty".into()),
                    _ => TarError::Truncated(format!(
                        "the stream ends at byte {at} without the end-of-archive blocks"
                    )),
                });
            };
            if block.iter().all(|b| *b == 0) {
                if !raw.is_empty() {
                    return Err(TarError::Damaged(format!(
                        "metadata records at byte {at} are followed by no entry"
                    )));
                }
                if self.entries == 0 {
                    return Err(TarError::NotTar("it holds no entries".into()));
                }
                return Ok(Item::End(block.to_vec()));
            }
            let header = Header::from_byte_slice(&block);
            if !checksum_ok(&block) {
                return Err(match self.entries == 0 && raw.is_empty() {
                    true => TarError::NotTar("the first header's checksum does not match".into()),
                    false => TarError::Damaged(format!("bad header checksum at byte {at}")),
                });
            }
            raw.extend_from_slice(&block);
            let entry_type = header.entry_type();
            let is_record = matches!(
                entry_type,
                EntryType::XHeader
                    | EntryType::XGlobalHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            );
            // A PAX `size` is the next real entry's (the last one given counts), not a record's.
            let pax_size = pax
                .iter()
                .rev()
                .find(|(k, _)| k == "size")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .filter(|_| !is_record);
            let size = match pax_size {
                Some(size) => size,
                None => header
                    .entry_size()
                    .map_err(|e| TarError::Damaged(format!("header at byte {at}: {e}")))?,
            };
            if matches!(
                entry_type,
                EntryType::XHeader
                    | EntryType::XGlobalHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            ) {
                if size > MAX_RECORD {
                    return Err(TarError::Damaged(format!(
                        "a metadata record of {size} bytes at byte {at}"
                    )));
                }
                let mut data = vec![0u8; size as usize];
                if !data.is_empty() && !self.fill(&mut data, "a metadata record")? {
                    return Err(TarError::Truncated(
                        "the stream ends inside an entry".into(),
                    ));
                }
                raw.extend_from_slice(&data);
                raw.extend_from_slice(&self.padding(size)?);
                match entry_type {
                    EntryType::XHeader => {
                        for ext in PaxExtensions::new(&data) {
                            let ext = ext.map_err(|e| {
                                TarError::Damaged(format!("PAX header at byte {at}: {e}"))
                            })?;
                            let key = ext.key().map_err(|e| {
                                TarError::Damaged(format!("PAX header at byte {at}: {e}"))
                            })?;
                            pax.push((key.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                    EntryType::GNULongName => long_name = Some(trim_nul(data)),
                    EntryType::GNULongLink => long_link = Some(trim_nul(data)),
                    _ => {} // global PAX headers are kept, not applied
                }
                continue;
            }
            if entry_type == EntryType::GNUSparse
                || pax.iter().any(|(k, _)| k.starts_with("GNU.sparse."))
            {
                return Err(TarError::Unsupported(format!(
                    "the entry at byte {at} is a GNU sparse file; create the tar without --sparse"
                )));
            }
            self.entries += 1;
            let pax_value = |key: &str| {
                pax.iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            let pax_number = |key: &str| {
                pax_value(key).and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            };
            let path = pax_value("path")
                .or(long_name)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax_value("linkpath")
                .or(long_link)
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            let (mtime, mtime_ns) = match pax_value("mtime") {
                Some(v) => parse_pax_time(&v).ok_or_else(|| {
                    TarError::Damaged(format!("PAX mtime at byte {at} is not a time"))
                })?,
                None => (
                    header
                        .mtime()
                        .map_err(|e| TarError::Damaged(e.to_string()))? as i64,
                    0,
                ),
            };
            // A regular entry named with a trailing '/' is a directory (old tars), as GNU tar
            // reads it.
            let kind = match entry_type {
                EntryType::Regular | EntryType::Continuous if path.ends_with(b"/") => Kind::Dir,
                EntryType::Regular | EntryType::Continuous => Kind::File,
                EntryType::Directory => Kind::Dir,
                EntryType::Symlink => Kind::Symlink,
                EntryType::Link => Kind::HardLink,
                _ => Kind::Other,
            };
            // An empty numeric field (all NULs or spaces) reads as 0, as GNU tar reads it.
            let field = |r: io::Result<u64>, raw: &[u8]| match r {
                Ok(v) => Ok(v),
                Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
                Err(e) => Err(TarError::Damaged(format!("header at byte {at}: {e}"))),
            };
            let old = header.as_old();
            return Ok(Item::Entry(Entry {
                raw,
                path,
                kind,
                mode: field(header.mode().map(u64::from), &old.mode)? as u32 & 0o7777,
                uid: match pax_number("uid") {
                    Some(uid) => uid,
                    None => field(header.uid(), &old.uid)?,
                },
                gid: match pax_number("gid") {
                    Some(gid) => gid,
                    None => field(header.gid(), &old.gid)?,
                },
                mtime,
                mtime_ns,
                size,
                link,
            }));
        }
    }
}

/// Reads one entry's content from the walker.
pub struct ContentReader<'a, R> {
    walker: &'a mut TarWalker<R>,
    left: u64,
}

impl<R: Read> Read for ContentReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = self.walker.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the tar is cut short: the stream ends inside an entry, {} bytes before its end",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        self.walker.offset += n as u64;
        Ok(n)
    }
}

pub fn padding_len(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// A header's checksum: the sum of its bytes with the checksum field read as spaces.
fn checksum_ok(block: &[u8; 512]) -> bool {
    let header = Header::from_byte_slice(block);
    let Ok(stored) = header.cksum() else {
        return false;
    };
    // Some old tars summed the bytes as signed chars; GNU tar accepts either sum.
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    i64::from(stored) == unsigned || i64::from(stored) == signed
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// `1700000000.123456789` (or without a fraction) as seconds and nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs_text, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs_text.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = match digits.is_empty() {
        true => 0,
        false => format!("{digits:0<9}").parse().ok()?,
    };
    // `-1.5` is 1.5 s before the epoch: -2 s plus 0.5 s (none below i64::MIN s).
    match (secs_text.starts_with('-'), nanos) {
        (true, n) if n > 0 => Some((secs.checked_sub(1)?, 1_000_000_000 - n)),
        _ => Some((secs, nanos)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_to_nanoseconds() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_pax_time(b"1700000000.123456789123"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-0.25"), Some((-1, 750_000_000)));
    }

    /// Found by fuzzing (fuzz target tar_walk, FUZZING.md): a PAX mtime of i64::MIN seconds
    /// and a fraction overflowed the seconds (a panic where overflow is checked, a time far in
    /// the future where not). It is refused as not a time.
    #[test]
    fn a_pax_mtime_below_i64_min_is_refused() {
        assert_eq!(parse_pax_time(b"-9223372036854775808.5"), None);
        assert_eq!(parse_pax_time(b"-9223372036854775808"), Some((i64::MIN, 0)));
        let record = b"32 mtime=-9223372036854775808.5\n";
        let mut tar = Vec::new();
        let mut pax = Header::new_ustar();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_path("PaxHeaders/a").unwrap();
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        tar.extend_from_slice(pax.as_bytes());
        tar.extend_from_slice(record);
        tar.resize(1024, 0);
        let mut file = Header::new_ustar();
        file.set_path("a").unwrap();
        file.set_size(0);
        file.set_cksum();
        tar.extend_from_slice(file.as_bytes());
        tar.resize(tar.len() + 1024, 0);
        let e = TarWalker::new(&tar[..]).next_item().err().expect("refused");
        assert!(
            matches!(&e, TarError::Damaged(m) if m.contains("PAX mtime")),
            "{e}"
        );
    }

    #[test]
    fn padding_rounds_to_blocks() {
        assert_eq!([0, 1, 511, 512, 513].map(padding_len), [0, 511, 1, 0, 511]);
    }
}
