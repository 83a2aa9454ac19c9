//! Errors as callers see them: NFS statuses mapped to errnos, and [`ServerRestarted`].

use std::io;

use nfs3_client::nfs3_types::nfs3::{nfsstat3, Nfs3Result};

/// The errno for an NFS status (the protocol's numbers are BSD's, not Linux's).
pub fn status_error(status: nfsstat3) -> io::Error {
    use nfsstat3::*;
    let errno = match status {
        NFS3ERR_PERM => libc::EPERM,
        NFS3ERR_NOENT => libc::ENOENT,
        NFS3ERR_IO => libc::EIO,
        NFS3ERR_NXIO => libc::ENXIO,
        NFS3ERR_ACCES => libc::EACCES,
        NFS3ERR_EXIST => libc::EEXIST,
        NFS3ERR_XDEV => libc::EXDEV,
        NFS3ERR_NODEV => libc::ENODEV,
        NFS3ERR_NOTDIR => libc::ENOTDIR,
        NFS3ERR_ISDIR => libc::EISDIR,
        NFS3ERR_INVAL => libc::EINVAL,
        NFS3ERR_FBIG => libc::EFBIG,
        NFS3ERR_NOSPC => libc::ENOSPC,
        NFS3ERR_ROFS => libc::EROFS,
        NFS3ERR_MLINK => libc::EMLINK,
        NFS3ERR_NAMETOOLONG => libc::ENAMETOOLONG,
        NFS3ERR_NOTEMPTY => libc::ENOTEMPTY,
        NFS3ERR_DQUOT => libc::EDQUOT,
        NFS3ERR_STALE => libc::ESTALE,
        NFS3ERR_REMOTE => libc::EREMOTE,
        NFS3ERR_NOTSUPP => libc::EOPNOTSUPP,
        other => return io::Error::other(format!("{other}")),
    };
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("{e} ({status})"))
}

/// A reply's result, with an NFS error status as an `io::Error`.
pub(super) fn ok<T, E>(reply: Nfs3Result<T, E>) -> io::Result<T> {
    match reply {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((status, _)) => Err(status_error(status)),
    }
}

/// The server restarted between unstable writes and their COMMIT (its write verifier
/// changed): the writes may be lost and must be repeated.
#[derive(Debug)]
pub struct ServerRestarted(String);

impl std::fmt::Display for ServerRestarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the NFS server restarted while the data was written (its write verifier changed); the unstable writes may be lost",
            self.0
        )
    }
}

impl std::error::Error for ServerRestarted {}

pub(super) fn server_restarted(what: &str) -> io::Error {
    io::Error::other(ServerRestarted(what.to_string()))
}

/// Whether `e` is a [`ServerRestarted`].
pub fn is_server_restarted(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ServerRestarted>())
}
