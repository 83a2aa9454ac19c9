//! A real S3 server for tests: moto's `moto_server` on a free loopback port, started by
//! the test and killed when dropped. `scripts/test` installs it; elsewhere
//! `pip install 'moto[server]'` or point `STOWAGE_MOTO_SERVER` at the executable.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::options::{S3Options, StaticCredentials};

/// The access key the test server accepts (moto accepts any).
pub const ACCESS_KEY: &str = "stowage-test";
pub const SECRET_KEY: &str = "stowage-test-secret";

/// A running `moto_server`.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

impl MotoServer {
    /// Starts a server and waits until it answers. Panics with instructions when
    /// `moto_server` cannot be found: S3 tests are never silently skipped.
    pub fn start() -> MotoServer {
        let program =
            std::env::var("STOWAGE_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the S3 test server `{program}`: {e}. Run scripts/test (it installs \
                     moto), or `pip install 'moto[server]'`, or set STOWAGE_MOTO_SERVER"
                )
            });
        let server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Options that reach this server with the test credentials and short timeouts.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            credentials: Some(StaticCredentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
            }),
            retries: 2,
            timeout: Duration::from_secs(20),
            ..S3Options::default()
        }
    }

    /// Environment for a `stowage` process talking to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Creates a bucket, with Object Lock enabled when asked.
    pub async fn create_bucket(&self, name: &str, object_lock: bool) {
        let client = crate::S3Client::connect(name, &self.options())
            .await
            .expect("connect to the test server");
        client
            .sdk
            .create_bucket()
            .bucket(name)
            .object_lock_enabled_for_bucket(object_lock)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {}", crate::client::sdk_message(&e)));
    }
}

impl MotoServer {
    /// Gives a bucket (created with Object Lock, still empty) a default retention.
    pub async fn set_default_retention(&self, bucket: &str, days: i32) {
        use aws_sdk_s3::types::{
            DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
            ObjectLockRule,
        };
        let client = crate::S3Client::connect(bucket, &self.options())
            .await
            .expect("connect to the test server");
        let rule = ObjectLockRule::builder()
            .default_retention(
                DefaultRetention::builder()
                    .mode(ObjectLockRetentionMode::Governance)
                    .days(days)
                    .build(),
            )
            .build();
        let config = ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(rule)
            .build();
        client
            .sdk
            .put_object_lock_configuration()
            .bucket(bucket)
            .object_lock_configuration(config)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "default retention on {bucket}: {}",
                    crate::client::sdk_message(&e)
                )
            });
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use stowage_backends::testing::free_port;
