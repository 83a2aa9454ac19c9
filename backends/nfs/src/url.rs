//! `nfs://host/export/path` locations, the form DTR takes (`--nfs-storage-url`), with
//! libnfs's query options.

use std::fmt;

/// Where on an NFS server: the host, the path on the server (the export and, optionally, a
/// directory below it) and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsUrl {
    pub host: String,
    /// Absolute path on the server, without a trailing `/` (`/` for the server's root).
    pub path: String,
    /// The NFS service's port; asked of the server's portmapper (rpcbind) when not given.
    pub nfs_port: Option<u16>,
    /// The MOUNT service's port; asked of the portmapper when not given.
    pub mount_port: Option<u16>,
    /// The user and group the requests are made as (AUTH_SYS); this process's by default.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// How many connections to keep open (each carries one request at a time).
    pub connections: Option<usize>,
}

impl NfsUrl {
    /// `None` when `location` is not an `nfs://` URL; otherwise the URL or why it is invalid.
    /// Options: `?nfsport=N&mountport=N&uid=N&gid=N&connections=N`.
    pub fn parse(location: &str) -> Option<Result<NfsUrl, String>> {
        let rest = location.strip_prefix("nfs://")?;
        Some(Self::parse_rest(location, rest))
    }

    fn parse_rest(location: &str, rest: &str) -> Result<NfsUrl, String> {
        let bad = |why: &str| {
            Err(format!(
                "{location}: {why} (expected nfs://host/export/path)"
            ))
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return bad("no host");
        }
        if host.contains(':') && !host.starts_with('[') {
            return bad("a port goes in ?nfsport=N, not after the host");
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return bad("dot segments are not allowed in the path");
        }
        let mut url = NfsUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            path: format!("/{}", segments.join("/")),
            nfs_port: None,
            mount_port: None,
            uid: None,
            gid: None,
            connections: None,
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let Some((key, value)) = pair.split_once('=') else {
                return bad(&format!("option {pair:?} has no value"));
            };
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{location}: {what} must be a number, not {value:?}"))
            };
            match key {
                "nfsport" => url.nfs_port = Some(port(number(key)?, location)?),
                "mountport" => url.mount_port = Some(port(number(key)?, location)?),
                "uid" => url.uid = Some(id(number(key)?, location)?),
                "gid" => url.gid = Some(id(number(key)?, location)?),
                "connections" => match number(key)? {
                    n @ 1..=64 => url.connections = Some(n as usize),
                    _ => return bad("connections must be between 1 and 64"),
                },
                _ => return bad(&format!("unknown option {key:?}")),
            }
        }
        Ok(url)
    }

    /// This location with `rel` (a `/`-separated relative path) appended.
    pub fn join(&self, rel: &str) -> String {
        let mut out = self.to_string();
        let query = out.find('?').map(|i| out.split_off(i)).unwrap_or_default();
        if !rel.is_empty() {
            if !out.ends_with('/') {
                out.push('/');
            }
            out.push_str(rel);
        }
        out + &query
    }

    /// The path's components.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

fn port(n: u64, location: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{location}: {n} is not a port"))
}

fn id(n: u64, location: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{location}: {n} is not a user or group id"))
}

impl fmt::Display for NfsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        write!(f, "nfs://{host}{}", self.path)?;
        let mut options = Vec::new();
        if let Some(p) = self.nfs_port {
            options.push(format!("nfsport={p}"));
        }
        if let Some(p) = self.mount_port {
            options.push(format!("mountport={p}"));
        }
        if let Some(u) = self.uid {
            options.push(format!("uid={u}"));
        }
        if let Some(g) = self.gid {
            options.push(format!("gid={g}"));
        }
        if let Some(c) = self.connections {
            options.push(format!("connections={c}"));
        }
        if !options.is_empty() {
            write!(f, "?{}", options.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NfsUrl;

    fn parse(s: &str) -> Result<NfsUrl, String> {
        NfsUrl::parse(s).expect("an nfs url")
    }

    #[test]
    fn dtr_form_and_options() {
        let url = parse("nfs://nfs.example.com/exports/dtr/").expect("valid");
        assert_eq!(url.host, "nfs.example.com");
        assert_eq!(url.path, "/exports/dtr");
        assert_eq!(url.nfs_port, None);
        assert_eq!(url.to_string(), "nfs://nfs.example.com/exports/dtr");

        let url =
            parse("nfs://127.0.0.1/srv/x?nfsport=2049&mountport=20048&uid=0&gid=0").expect("valid");
        assert_eq!((url.nfs_port, url.mount_port), (Some(2049), Some(20048)));
        assert_eq!((url.uid, url.gid), (Some(0), Some(0)));
        assert_eq!(
            url.join("repo"),
            "nfs://127.0.0.1/srv/x/repo?nfsport=2049&mountport=20048&uid=0&gid=0"
        );
        assert_eq!(parse(&url.to_string()).expect("round trip"), url);
        assert_eq!(parse("nfs://h").expect("root").path, "/");
        assert!(NfsUrl::parse("/srv/x").is_none());
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("nfs:///srv", "no host"),
            ("nfs://h:2049/srv", "?nfsport"),
            ("nfs://h/srv/../etc", "dot segments"),
            ("nfs://h/srv?nfsport=x", "must be a number"),
            ("nfs://h/srv?nfsport=70000", "not a port"),
            ("nfs://h/srv?vers=4", "unknown option"),
            ("nfs://h/srv?connections=0", "between 1 and 64"),
        ] {
            let err = parse(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
