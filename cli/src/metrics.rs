//! `--metrics-file`: the run's figures in the Prometheus text format, for node_exporter's
//! textfile collector (the file is replaced whole, never seen half written).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;

/// Figures a command records for the metrics file, by name (without the `stowage_` prefix).
#[derive(Default)]
pub struct Metrics {
    values: Mutex<Vec<(&'static str, &'static str, f64)>>,
}

impl Metrics {
    /// Records `name` (a gauge) with its help text.
    pub fn set(&self, name: &'static str, help: &'static str, value: f64) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.retain(|(n, _, _)| *n != name);
        values.push((name, help, value));
    }

    /// Writes the file: the command's exit status, duration and end time, then what it
    /// recorded, each labelled with the command and the repository.
    pub fn write(
        &self,
        path: &Path,
        command: &str,
        repository: &str,
        exit_status: u8,
        seconds: f64,
    ) -> anyhow::Result<()> {
        let labels = format!(
            "command=\"{}\",repository=\"{}\"",
            escape(command),
            escape(repository)
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut all = vec![
            (
                "exit_status",
                "Exit status of the last run (0 ok, 3 partial snapshot, 1 error, ...).",
                f64::from(exit_status),
            ),
            ("duration_seconds", "How long the last run took.", seconds),
            (
                "last_run_timestamp_seconds",
                "When the last run ended (Unix time).",
                now,
            ),
        ];
        all.extend(
            self.values
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
        let mut text = String::new();
        for (name, help, value) in all {
            let _ = writeln!(text, "# HELP stowage_{name} {help}");
            let _ = writeln!(text, "# TYPE stowage_{name} gauge");
            let _ = writeln!(text, "stowage_{name}{{{labels}}} {value}");
        }
        let temp = path.with_extension("prom.tmp");
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, path))
            .with_context(|| format!("writing the metrics file {}", path.display()))
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
