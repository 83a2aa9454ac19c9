//! `s3://bucket/prefix` locations.

use std::fmt;

/// A bucket and a key prefix (without leading or trailing `/`; empty for the bucket root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`. Returns `None` for other schemes, an error message for
    /// a malformed S3 URL.
    pub fn parse(url: &str) -> Option<Result<Self, String>> {
        let rest = url.strip_prefix("s3://")?;
        Some(Self::parse_rest(url, rest))
    }

    fn parse_rest(url: &str, rest: &str) -> Result<Self, String> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid_bucket {
            return Err(format!(
                "{url}: {bucket:?} is not a bucket name (3-63 characters of a-z, 0-9, '.', '-')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|s| prefix.contains("//") || s == "." || s == "..")
        {
            return Err(format!("{url}: the key prefix has an empty or dot segment"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The object key of `rel` under the prefix.
    pub fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }

    /// `rel` of an object key under the prefix, `None` for keys outside it.
    pub fn relative<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(key);
        }
        key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buckets_and_prefixes() {
        assert!(S3Url::parse("/srv/backup").is_none());
        let url = S3Url::parse("s3://backups/dtr/nightly/")
            .expect("s3")
            .expect("valid");
        assert_eq!(
            (url.bucket.as_str(), url.prefix.as_str()),
            ("backups", "dtr/nightly")
        );
        assert_eq!(url.key("config"), "dtr/nightly/config");
        assert_eq!(url.relative("dtr/nightly/data/ab"), Some("data/ab"));
        assert_eq!(url.relative("dtr/nightlyx/data"), None);
        assert_eq!(url.to_string(), "s3://backups/dtr/nightly");
        let root = S3Url::parse("s3://registry-bucket")
            .expect("s3")
            .expect("valid");
        assert_eq!(root.key("docker/x"), "docker/x");
        for bad in [
            "s3://",
            "s3://Upper/x",
            "s3://ab",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(S3Url::parse(bad).expect("s3").is_err(), "{bad}");
        }
    }
}
