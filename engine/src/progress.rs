//! How pipelines report progress. The CLI draws bars; tests and scripts pass [`NoProgress`].

pub trait Progress: Send + Sync {
    /// A new phase begins; `total` is its size in bytes when known.
    fn phase(&self, name: &str, total: Option<u64>);
    /// `bytes` more of the current phase are done.
    fn advance(&self, bytes: u64);
    /// A warning that does not stop the job.
    fn warn(&self, message: &str);
    /// A quantity worth watching has a new value, e.g. how many directories a backup holds
    /// in memory (`backup.dirs_held`, reported as it reaches a new high).
    fn gauge(&self, _name: &'static str, _value: u64) {}
}

#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}
