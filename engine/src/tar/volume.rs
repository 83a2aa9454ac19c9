//! Restore as a tar stream: the snapshot's top directory is the archive's top entry, as in
//! `tar -cf backup-images.tar dtr-registry-<replica>`, and `tar -xf - -C DIR` (as root, or
//! with `--numeric-owner`) extracts exactly the tree a directory restore writes.
//!
//! snapshot -> trees walked in order, a directory before its entries -> each entry's headers
//! and its content, read and verified as a directory restore does
//! ([`crate::pipelines::restore::read_content`]) -> a bounded queue -> a writer thread that owns the
//! [`tar::Builder`] and the output. Reads and writes are blocking work, both off the async
//! runtime, with a few blobs at most waiting between them.
//!
//! Headers are ustar. A PAX extended header ('x') comes before an entry when ustar cannot
//! hold a value: `path` (longer than the 100-byte name, or than a 155-byte prefix plus name
//! split at a `/`), `linkpath` (a symlink target over 100 bytes), `mtime=SECS.NANOS` (any
//! nanoseconds, or seconds outside ustar's range), `uid`/`gid` (above 2097151) and `size`
//! (8 GiB and more). The ustar field of such a value is left 0. Names are raw bytes
//! ([`crate::format::tree::Name`]) in ustar fields and PAX records alike; GNU tar takes both as they
//! are. (No `hdrcharset=BINARY`: GNU tar does not know the keyword and warns about it.)
//! Owner names are left empty, so an extraction goes by the numbers.
//!
//! A stream cannot be taken back. When anything fails (a blob or a registry digest that
//! does not verify, a missing blob, a read error) the stream ends without the
//! end-of-archive blocks and the error is returned. GNU tar accepts a stream that simply
//! stops between entries, so the stream never stops there: a file's header and bytes go out
//! only while more bytes of it are still held back (its last blob waits until the whole
//! file verified), so a failure inside a file cuts that entry short; a failure between
//! entries ends the stream with an extended header whose records never come. Either way
//! `tar -x` reports "Unexpected EOF in archive" and fails, and no damaged file is ever
//! extracted whole.

use std::ffi::OsStr;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use tar::{EntryType, Header};

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::pipelines::restore::RestoreSummary;
use crate::progress::Progress;
use crate::registry;
use crate::repo::reader::read_content;
use crate::repo::walk::Walk;
use crate::repo::Repository;
use crate::runtime;

/// Pieces (headers, or one blob's bytes) waiting for the writer: with the read in flight,
/// memory stays at a few blobs whatever the snapshot's size.
const QUEUE: usize = 4;

/// The largest values ustar's octal fields hold: 7 digits (uid, gid) and 11 (size, mtime).
const USTAR_ID_MAX: u64 = 0o7777777;
const USTAR_NUM_MAX: u64 = 0o77777777777;

/// Writes `snapshot` to `out` as a tar stream (see the module documentation for its form
/// and for what a failure leaves in the stream). Counts as a directory restore does.
pub async fn restore_tar(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    out: Box<dyn Write + Send>,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary> {
    progress.phase("restore", Some(snapshot.summary.bytes));
    let (tx, rx) = sync_channel(QUEUE);
    let writer = runtime::blocking("the tar writer", move || write_stream(&rx, out));
    // When this future is dropped, the reader stops at its next piece.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let reader = Reader {
        repo,
        rt: runtime::handle(),
        tx,
        progress,
        cancelled: Arc::clone(&cancel.0),
        summary: RestoreSummary::default(),
    };
    let root = snapshot.tree;
    let read = runtime::blocking("the tar reader", move || reader.run(&root));
    let (read, written) = tokio::join!(read, writer);
    match (read?, written?) {
        // The output failed: the reader stopped because nobody took its pieces any more.
        (_, Written::Failed(e)) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(summary), Written::Finished) => Ok(summary),
        (Ok(_), Written::Aborted) => Err(Error::bug("the tar writer stopped early")),
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What goes from the reader to the writer.
enum Piece {
    /// An entry's headers; for a file, `Data` pieces with exactly its `size` bytes follow.
    Entry(Box<Entry>),
    Data(Vec<u8>),
    /// Everything verified and sent: the end-of-archive blocks may be written.
    End,
}

/// One entry's ustar header and the PAX records that go before it.
struct Entry {
    header: Header,
    pax: Vec<(&'static str, Vec<u8>)>,
    size: u64,
}

/// Walks the snapshot and sends its entries; runs on a blocking thread.
struct Reader {
    repo: Arc<Repository>,
    rt: tokio::runtime::Handle,
    tx: SyncSender<Piece>,
    progress: Arc<dyn Progress>,
    cancelled: Arc<AtomicBool>,
    summary: RestoreSummary,
}

impl Reader {
    fn run(mut self, root: &crate::format::id::Id) -> Result<RestoreSummary> {
        let repo = Arc::clone(&self.repo);
        let mut walk = runtime::wait(&self.rt, Walk::root(&repo, root))?;
        while let Some((rel, node)) = runtime::wait(&self.rt, walk.next())? {
            self.entry(&rel, &node)?;
        }
        send(&self.tx, &self.cancelled, Piece::End)?;
        Ok(self.summary)
    }

    /// Sends one entry.
    fn entry(&mut self, rel: &Path, node: &Node) -> Result<()> {
        let entry = entry(rel, node)?;
        match node.kind {
            NodeKind::Dir => {
                send(&self.tx, &self.cancelled, Piece::Entry(Box::new(entry)))?;
                self.summary.dirs += 1;
            }
            NodeKind::Symlink => {
                send(&self.tx, &self.cancelled, Piece::Entry(Box::new(entry)))?;
                self.summary.symlinks += 1;
            }
            NodeKind::File => self.file(rel, node, entry)?,
        }
        Ok(())
    }

    /// Sends a file's header and bytes, holding back its last blob (and the header, while
    /// nothing else went out) until all of it verified.
    fn file(&mut self, rel: &Path, node: &Node, entry: Entry) -> Result<()> {
        let (tx, cancelled) = (&self.tx, &self.cancelled);
        let mut header = Some(entry);
        let mut held: Option<Vec<u8>> = None;
        let read = read_content(
            &self.repo,
            &self.rt,
            rel,
            node,
            registry::blob_digest(rel),
            |bytes| {
                if bytes.is_empty() {
                    return Ok(());
                }
                if let Some(earlier) = held.replace(bytes.to_vec()) {
                    if let Some(entry) = header.take() {
                        send(tx, cancelled, Piece::Entry(Box::new(entry)))?;
                    }
                    send(tx, cancelled, Piece::Data(earlier))?;
                }
                self.progress.advance(bytes.len() as u64);
                Ok(())
            },
        )?;
        if let Some(entry) = header.take() {
            send(tx, cancelled, Piece::Entry(Box::new(entry)))?;
        }
        if let Some(last) = held {
            send(tx, cancelled, Piece::Data(last))?;
        }
        self.summary.files += 1;
        self.summary.bytes += read.bytes;
        self.summary.verified_blobs += u64::from(read.digest_verified);
        Ok(())
    }
}

fn send(tx: &SyncSender<Piece>, cancelled: &AtomicBool, piece: Piece) -> Result<()> {
    if cancelled.load(Ordering::Relaxed) {
        return Err(Error::bug("tar restore cancelled"));
    }
    tx.send(piece)
        .map_err(|_| Error::bug("the tar writer stopped"))
}

/// The headers of the entry for `node` at `rel` (see the module documentation).
fn entry(rel: &Path, node: &Node) -> Result<Entry> {
    let what = || rel.display().to_string();
    let mut path = rel.as_os_str().as_bytes().to_vec();
    let (kind, size) = match node.kind {
        NodeKind::Dir => {
            path.push(b'/');
            (EntryType::Directory, 0)
        }
        NodeKind::File => (EntryType::Regular, node.size),
        NodeKind::Symlink => (EntryType::Symlink, 0),
    };
    let mut pax: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut header = Header::new_ustar();
    if !ustar_path(&mut header, &path) {
        // The header keeps what fits of the path, for readers that ignore PAX.
        header = Header::new_ustar();
        let _ = header.set_path(OsStr::from_bytes(&path[..path.len().min(100)]));
        pax.push(("path", path));
    }
    header.set_entry_type(kind);
    if node.kind == NodeKind::Symlink {
        let target = node
            .target
            .as_ref()
            .ok_or_else(|| Error::corrupt(what(), "symlink without target"))?;
        let target = &target.0;
        if target.is_empty() || target.contains(&0) {
            return Err(Error::corrupt(
                what(),
                "symlink target is empty or holds a NUL",
            ));
        }
        if header.set_link_name_literal(target).is_err() {
            pax.push(("linkpath", target.clone()));
        }
    }
    header.set_mode(node.mode & 0o7777);
    for (key, id, set) in [
        ("uid", node.uid, Header::set_uid as fn(&mut Header, u64)),
        ("gid", node.gid, Header::set_gid),
    ] {
        let id = u64::from(id);
        if id <= USTAR_ID_MAX {
            set(&mut header, id);
        } else {
            set(&mut header, 0);
            pax.push((key, id.to_string().into_bytes()));
        }
    }
    if size <= USTAR_NUM_MAX {
        header.set_size(size);
    } else {
        header.set_size(0);
        pax.push(("size", size.to_string().into_bytes()));
    }
    if node.mtime_ns >= 1_000_000_000 {
        return Err(Error::corrupt(what(), "mtime nanoseconds out of range"));
    }
    let ustar_secs = u64::try_from(node.mtime)
        .ok()
        .filter(|secs| *secs <= USTAR_NUM_MAX);
    header.set_mtime(ustar_secs.unwrap_or(0));
    if ustar_secs.is_none() || node.mtime_ns != 0 {
        pax.push(("mtime", pax_time(node.mtime, node.mtime_ns).into_bytes()));
    }
    header.set_cksum();
    Ok(Entry { header, pax, size })
}

/// Puts `path` into the ustar name (and prefix) fields when it fits there unchanged.
fn ustar_path(header: &mut Header, path: &[u8]) -> bool {
    header.set_path(OsStr::from_bytes(path)).is_ok() && *header.path_bytes() == *path
}

/// A PAX time: the signed value in seconds with nine decimals. A node keeps -1.5 s as a
/// timespec does (secs -2, nanos 500000000); PAX writes `-1.500000000`.
fn pax_time(secs: i64, nanos: u32) -> String {
    if secs >= 0 || nanos == 0 {
        format!("{secs}.{nanos:09}")
    } else {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nanos)
    }
}

/// How the writer ended.
enum Written {
    /// Every entry and the end-of-archive blocks are out.
    Finished,
    /// The reader stopped; the stream was cut short on purpose.
    Aborted,
    /// The output failed.
    Failed(Error),
}

/// Owns the output: writes the pieces as they come, the end-of-archive blocks only after
/// `End`, and cuts the stream inside an entry when the reader stops first.
fn write_stream(rx: &Receiver<Piece>, out: Box<dyn Write + Send>) -> Written {
    let output = |e: io::Error| Written::Failed(Error::io("tar output", e));
    let mut builder = tar::Builder::new(Output(Some(BufWriter::with_capacity(1 << 20, out))));
    let ended = loop {
        let entry = match rx.recv() {
            Ok(Piece::Entry(entry)) => entry,
            Ok(Piece::End) => break builder.finish().map_err(output),
            Ok(Piece::Data(_)) => {
                break Err(Written::Failed(Error::bug("tar content without an entry")))
            }
            Err(_) => {
                // Between entries GNU tar would take the end of the stream for the end of
                // the archive: start an extended header whose records never come.
                let mut cut = Header::new_ustar();
                let _ = cut.set_path("stowage-restore-failed");
                cut.set_entry_type(EntryType::XHeader);
                cut.set_size(512);
                cut.set_cksum();
                // Should this fail too, the reader's error is still the one to report.
                let _ = builder.append(&cut, io::empty());
                break Err(Written::Aborted);
            }
        };
        let pax = entry.pax.iter().map(|(k, v)| (*k, v.as_slice()));
        if let Err(e) = builder.append_pax_extensions(pax) {
            break Err(output(e));
        }
        let mut content = Incoming {
            rx,
            chunk: Vec::new(),
            at: 0,
            left: entry.size,
            stopped: false,
        };
        // A reader that stops inside a file leaves the entry short: the stream is cut.
        if let Err(e) = builder.append(&entry.header, &mut content) {
            break Err(if content.stopped {
                Written::Aborted
            } else {
                output(e)
            });
        }
    };
    // Close the output in any case, so that dropping the builder cannot add the
    // end-of-archive blocks to a stream that was cut.
    let closed = builder.get_mut().close();
    match ended {
        Ok(()) => match closed {
            Ok(()) => Written::Finished,
            Err(e) => output(e),
        },
        Err(written) => written,
    }
}

/// The output, which can be closed before the builder that writes to it is dropped.
struct Output(Option<BufWriter<Box<dyn Write + Send>>>);

impl Output {
    /// Flushes and drops the output; later writes fail.
    fn close(&mut self) -> io::Result<()> {
        match self.0.take() {
            Some(out) => out.into_inner().map_err(|e| e.into_error())?.flush(),
            None => Ok(()),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(out) => out.write(buf),
            None => Err(io::Error::other("tar output already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// One file's content as the reader sends it: `left` more bytes, then the end.
struct Incoming<'a> {
    rx: &'a Receiver<Piece>,
    chunk: Vec<u8>,
    at: usize,
    left: u64,
    /// The reader stopped (or broke the protocol) before all of it came.
    stopped: bool,
}

impl Read for Incoming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Piece::Data(bytes)) if bytes.len() as u64 <= self.left => {
                    self.chunk = bytes;
                    self.at = 0;
                }
                _ => {
                    self.stopped = true;
                    return Err(io::Error::other("tar entry cut short"));
                }
            }
        }
        let n = buf
            .len()
            .min(self.chunk.len() - self.at)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Name;

    fn node(kind: NodeKind, name: &[u8]) -> Node {
        Node {
            name: Name(name.to_vec()),
            kind,
            mode: 0o2755,
            uid: 0,
            gid: 0,
            mtime: 1_767_225_600,
            mtime_ns: 0,
            ctime: 0,
            ctime_ns: 0,
            inode: 1,
            size: 0,
            content: None,
            subtree: None,
            target: None,
        }
    }

    fn records(entry: &Entry) -> Vec<(&str, &[u8])> {
        entry.pax.iter().map(|(k, v)| (*k, v.as_slice())).collect()
    }

    #[test]
    fn ustar_holds_what_fits_and_pax_the_rest() {
        let file = node(NodeKind::File, b"data");
        let short = entry(Path::new("top/data"), &file).unwrap();
        assert!(short.pax.is_empty());
        assert_eq!(&*short.header.path_bytes(), b"top/data");
        assert_eq!(short.header.mode().unwrap(), 0o2755);

        let dir = node(NodeKind::Dir, b"d");
        let d = entry(Path::new("top/d"), &dir).unwrap();
        assert_eq!(&*d.header.path_bytes(), b"top/d/");
        assert_eq!(d.header.entry_type(), EntryType::Directory);

        // 150 bytes split as prefix and name: still ustar.
        let split = format!("{}/{}", "p".repeat(80), "n".repeat(69));
        assert!(entry(Path::new(&split), &file).unwrap().pax.is_empty());

        let long = format!("{}/{}", "p".repeat(160), "n".repeat(120));
        let e = entry(Path::new(&long), &file).unwrap();
        assert_eq!(records(&e), [("path", long.as_bytes())]);

        let raw = [&b"top/"[..], &[0xff; 120]].concat();
        let e = entry(Path::new(OsStr::from_bytes(&raw)), &file).unwrap();
        assert_eq!(records(&e), [("path", &raw[..])]);
    }

    #[test]
    fn large_values_and_nanoseconds_go_to_pax() {
        let mut file = node(NodeKind::File, b"big");
        file.uid = 3_000_000;
        file.gid = 7;
        file.size = 9 << 30;
        file.mtime_ns = 5;
        let e = entry(Path::new("big"), &file).unwrap();
        assert_eq!(
            records(&e),
            [
                ("uid", &b"3000000"[..]),
                ("size", b"9663676416"),
                ("mtime", b"1767225600.000000005"),
            ]
        );
        assert_eq!(e.header.uid().unwrap(), 0);
        assert_eq!(e.header.gid().unwrap(), 7);
        assert_eq!(e.size, 9 << 30);

        let mut link = node(NodeKind::Symlink, b"l");
        link.target = Some(Name(b"t".repeat(101)));
        let e = entry(Path::new("l"), &link).unwrap();
        assert_eq!(records(&e), [("linkpath", &b"t".repeat(101)[..])]);
        link.target = Some(Name(b"../t".to_vec()));
        let e = entry(Path::new("l"), &link).unwrap();
        assert!(e.pax.is_empty());
        assert_eq!(&*e.header.link_name_bytes().unwrap(), b"../t");
    }

    #[test]
    fn pax_times_are_signed_fractions() {
        assert_eq!(pax_time(1_767_225_600, 123_456_789), "1767225600.123456789");
        assert_eq!(pax_time(0, 0), "0.000000000");
        assert_eq!(pax_time(-5, 0), "-5.000000000");
        assert_eq!(pax_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(pax_time(-1, 999_999_999), "-0.000000001");
    }
}
