//! How to reach a bucket and how to write to it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Object Lock retention mode (S3 semantics: governance can be bypassed by users with the
/// `s3:BypassGovernanceRetention` permission, compliance cannot be shortened by anyone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Retention written with every object: `governance:30d` or `compliance:365d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

impl ObjectLock {
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.days) * 86_400)
    }

    /// How far beyond the period objects are retained (a quarter period, at least a day), so
    /// that retention needs extending only about once per quarter period, not every night.
    pub fn slack(&self) -> Duration {
        (self.period() / 4).max(Duration::from_secs(86_400))
    }

    /// The retain-until date given to objects written or extended at `now`.
    pub fn until(&self, now: std::time::SystemTime) -> std::time::SystemTime {
        now + self.period() + self.slack()
    }

    /// An object needed by a snapshot written soon after `now` must be retained at least
    /// until this: the period from the snapshot's own write, with half the slack as margin
    /// for the time between checking and writing the snapshot.
    pub fn needed(&self, now: std::time::SystemTime) -> std::time::SystemTime {
        now + self.period() + self.slack() / 2
    }
}

impl FromStr for ObjectLock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{s:?}: expected MODE:DAYSd, e.g. governance:30d or compliance:90d");
        let (mode, days) = s.split_once(':').ok_or_else(usage)?;
        let mode = match mode.to_ascii_lowercase().as_str() {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            _ => return Err(usage()),
        };
        let days: u32 = days
            .strip_suffix('d')
            .unwrap_or(days)
            .parse()
            .map_err(|_| usage())?;
        if days == 0 {
            return Err(format!("{s:?}: retention must be at least one day"));
        }
        Ok(ObjectLock { mode, days })
    }
}

impl fmt::Display for ObjectLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}d", self.mode.as_str().to_lowercase(), self.days)
    }
}

/// An access key given directly instead of through the AWS credential chain.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Connection and write settings for S3 locations.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS when `None`.
    pub endpoint: Option<String>,
    /// The region; else `AWS_REGION`/`AWS_DEFAULT_REGION`/the profile, else `us-east-1`.
    pub region: Option<String>,
    /// `https://bucket.host/key` instead of `https://host/bucket/key`.
    pub virtual_hosted: bool,
    /// Credentials; `None` uses the standard AWS chain (environment, profile, IMDS).
    pub credentials: Option<StaticCredentials>,
    /// Retention for every object written (the bucket must have Object Lock enabled).
    pub lock: Option<ObjectLock>,
    /// Storage class for packs (e.g. `STANDARD_IA`, `GLACIER_IR`); other objects stay
    /// `STANDARD` so listing and opening a repository stay cheap.
    pub storage_class: Option<String>,
    /// Requests in flight at once.
    pub max_requests: usize,
    /// Retries of a failed request (with exponential backoff) before giving up.
    pub retries: usize,
    /// Time limit of one request attempt.
    pub timeout: Duration,
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: usize,
    pub part_size: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            virtual_hosted: false,
            credentials: None,
            lock: None,
            storage_class: None,
            max_requests: 16,
            retries: 6,
            timeout: Duration::from_secs(60),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_settings() {
        let lock: ObjectLock = "governance:30d".parse().expect("parses");
        assert_eq!(
            lock,
            ObjectLock {
                mode: LockMode::Governance,
                days: 30
            }
        );
        assert_eq!(
            "COMPLIANCE:7".parse::<ObjectLock>().expect("parses").days,
            7
        );
        for bad in ["30d", "legal:3d", "governance:0d", "governance:xd"] {
            assert!(bad.parse::<ObjectLock>().is_err(), "{bad}");
        }
    }
}
