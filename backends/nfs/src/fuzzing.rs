//! The entry point of the fuzz target `nfs_reply` (`fuzz/`, FUZZING.md): one reply from an
//! untrusted server, decoded as [`crate::client`] decodes it. Not an API: hidden from the
//! docs, and it may change with any commit.
//!
//! The reply bytes (record mark, RPC reply header, procedure result) come in over an
//! in-memory connection to the `nfs3_client` call the client makes for that procedure, and
//! the result goes through the client's mapping of statuses to errnos. A decoded result
//! must pack again, and its packed bytes must decode to the same bytes.

use std::io::{self, Cursor};

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::nfs3_types::mount::dirpath;
use nfs3_client::nfs3_types::nfs3::{self, nfs_fh3, Nfs3Option, Nfs3Result};
use nfs3_client::nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use nfs3_client::{MountClient, Nfs3Client, PortmapperClient, RpcError};

use crate::client::{check_record_mark, status_error};

/// The procedures the client calls, in the order the first input byte selects them
/// (`byte % PROCEDURES.len()`; bit 7 set: the reply's xid is left as it is).
pub const PROCEDURES: [&str; 16] = [
    "GETATTR",
    "LOOKUP",
    "READDIRPLUS",
    "READLINK",
    "READ",
    "WRITE",
    "COMMIT",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "REMOVE",
    "RENAME",
    "SETATTR",
    "FSINFO",
    "MNT",
    "GETPORT",
];

/// A connection to a server that answers with `reply`: over the first 4 bytes after the
/// record mark (the xid), the xid of the call is written unless `keep_xid`.
struct Replay {
    reply: Vec<u8>,
    at: usize,
    keep_xid: bool,
    call: Vec<u8>,
}

impl AsyncRead for Replay {
    async fn async_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == 0 {
            if !self.keep_xid && self.reply.len() >= 8 && self.call.len() >= 8 {
                self.reply[4..8].copy_from_slice(&self.call[4..8]);
            }
            // As `client::Tcp` does before handing on a byte of the reply.
            if let Some(mark) = self.reply.first_chunk::<4>() {
                check_record_mark(*mark)?;
            }
        }
        let n = buf.len().min(self.reply.len() - self.at);
        if n == 0 && !buf.is_empty() {
            // As `client::Tcp` does: a closed connection is an error, never a 0-byte read.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the reply ends",
            ));
        }
        buf[..n].copy_from_slice(&self.reply[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl AsyncWrite for Replay {
    async fn async_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.call.extend_from_slice(buf);
        Ok(buf.len())
    }
}

/// A decoded result packs, and its packed bytes decode and pack to the same bytes.
fn repacks<T: Pack + Unpack>(value: &T) {
    let mut packed = Vec::new();
    value.pack(&mut packed).expect("a decoded value packs");
    assert_eq!(packed.len(), value.packed_size(), "packed_size");
    let (again, used) = T::unpack(&mut Cursor::new(&packed)).expect("packed bytes decode");
    assert_eq!(
        used,
        packed.len(),
        "decoding the packed bytes used them all"
    );
    let mut packed_again = Vec::new();
    again.pack(&mut packed_again).expect("packs again");
    assert_eq!(
        packed, packed_again,
        "decode and pack again changed the bytes"
    );
}

/// What the client makes of a reply: the result, with an NFS error status as its errno.
fn ok<T: Pack + Unpack, E: Pack + Unpack>(
    reply: Result<Nfs3Result<T, E>, RpcError>,
) -> io::Result<T> {
    match reply.map_err(|e| io::Error::other(e.to_string()))? {
        Nfs3Result::Ok(ok) => {
            repacks(&ok);
            Ok(ok)
        }
        Nfs3Result::Err((status, fail)) => {
            repacks(&fail);
            Err(status_error(status))
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Decodes `input` (a selector byte, then the reply bytes) as the reply to the procedure the
/// selector names. Returns what the client would get: the decoded result or an error.
pub fn nfs_reply(input: &[u8]) -> io::Result<()> {
    let Some((&selector, reply)) = input.split_first() else {
        return Ok(());
    };
    let io = || Replay {
        reply: reply.to_vec(),
        at: 0,
        keep_xid: selector & 0x80 != 0,
        call: Vec::new(),
    };
    let fh = nfs_fh3 {
        data: Opaque::borrowed(&[1, 2, 3, 4, 5, 6, 7, 8]),
    };
    let dirop = || nfs3::diropargs3 {
        dir: fh.clone(),
        name: nfs3::filename3(Opaque::borrowed(b"name")),
    };
    let procedure = usize::from(selector & 0x7f) % PROCEDURES.len();
    let mut c = Nfs3Client::new(io());
    match procedure {
        0 => {
            let args = nfs3::GETATTR3args { object: fh.clone() };
            ok(block_on(c.getattr(&args)))?;
        }
        1 => {
            let args = nfs3::LOOKUP3args { what: dirop() };
            let found = ok(block_on(c.lookup(&args)))?;
            if let Nfs3Option::Some(attr) = found.obj_attributes {
                let _ = (attr.size, attr.mode, found.object.data.len());
            }
        }
        2 => {
            let args = nfs3::READDIRPLUS3args {
                dir: fh.clone(),
                cookie: 0,
                cookieverf: nfs3::cookieverf3::default(),
                dircount: 64 << 10,
                maxcount: 256 << 10,
            };
            let page = ok(block_on(c.readdirplus(&args)))?;
            for entry in page.reply.entries.0 {
                let name = entry.name.0.into_owned();
                let _ = (
                    name == b"." || name == b"..",
                    matches!(
                        (entry.name_handle, entry.name_attributes),
                        (Nfs3Option::Some(_), Nfs3Option::Some(_))
                    ),
                );
            }
        }
        3 => {
            let args = nfs3::READLINK3args {
                symlink: fh.clone(),
            };
            let link = ok(block_on(c.readlink(&args)))?;
            let _ = link.data.0.into_owned();
        }
        4 => {
            let args = nfs3::READ3args {
                file: fh.clone(),
                offset: 0,
                count: 4096,
            };
            let data = ok(block_on(c.read(&args)))?;
            let _ = (bytes::Bytes::from(data.data.into_owned()), data.eof);
        }
        5 => {
            let args = nfs3::WRITE3args {
                file: fh.clone(),
                offset: 0,
                count: 4,
                stable: nfs3::stable_how::UNSTABLE,
                data: Opaque::borrowed(b"data"),
            };
            let written = ok(block_on(c.write(&args)))?;
            let _ = (written.count, written.committed, written.verf);
        }
        6 => {
            let args = nfs3::COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            };
            ok(block_on(c.commit(&args)))?;
        }
        7 => {
            let args = nfs3::CREATE3args {
                where_: dirop(),
                how: nfs3::createhow3::GUARDED(nfs3::sattr3::default()),
            };
            ok(block_on(c.create(&args)))?;
        }
        8 => {
            let args = nfs3::MKDIR3args {
                where_: dirop(),
                attributes: nfs3::sattr3::default(),
            };
            ok(block_on(c.mkdir(&args)))?;
        }
        9 => {
            let args = nfs3::SYMLINK3args {
                where_: dirop(),
                symlink: nfs3::symlinkdata3 {
                    symlink_attributes: nfs3::sattr3::default(),
                    symlink_data: nfs3::nfspath3(Opaque::borrowed(b"target")),
                },
            };
            ok(block_on(c.symlink(&args)))?;
        }
        10 => {
            let args = nfs3::REMOVE3args { object: dirop() };
            ok(block_on(c.remove(&args)))?;
        }
        11 => {
            let args = nfs3::RENAME3args {
                from: dirop(),
                to: dirop(),
            };
            ok(block_on(c.rename(&args)))?;
        }
        12 => {
            let args = nfs3::SETATTR3args {
                object: fh.clone(),
                new_attributes: nfs3::sattr3::default(),
                guard: nfs3::sattrguard3::default(),
            };
            ok(block_on(c.setattr(&args)))?;
        }
        13 => {
            let args = nfs3::FSINFO3args { fsroot: fh.clone() };
            let info = ok(block_on(c.fsinfo(&args)))?;
            let _ = (info.rtpref, info.rtmax, info.wtpref, info.wtmax);
        }
        14 => {
            let mut m = MountClient::new(io());
            let mounted = block_on(m.mnt(dirpath(Opaque::borrowed(b"/export"))))
                .map_err(|e| io::Error::other(e.to_string()))?;
            repacks(&mounted);
        }
        _ => {
            let mut p = PortmapperClient::new(io());
            block_on(p.getport(100_003, 3, 6)).map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    Ok(())
}
