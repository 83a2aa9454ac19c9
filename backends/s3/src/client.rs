//! One connection to a bucket, shared by the store, the source and the target.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{ProvideCredentials, Region, SharedCredentialsProvider};
use aws_sdk_s3::primitives::{ByteStream, DateTime as SdkDateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode, ObjectLockRetentionMode, StorageClass};
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, CredentialProvider, RetryConfig};
use stowage_backends::{StoreError, StoreResult};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::options::{LockMode, ObjectLock, S3Options};

/// A bucket, reached through `object_store` (data path) and `aws-sdk-s3` (Object Lock).
#[derive(Debug)]
pub struct S3Client {
    pub(crate) bucket: String,
    pub(crate) objects: AmazonS3,
    pub(crate) sdk: aws_sdk_s3::Client,
    pub(crate) options: S3Options,
    requests: Semaphore,
}

impl S3Client {
    /// Connects to `bucket` (no request is made yet).
    pub async fn connect(bucket: &str, options: &S3Options) -> StoreResult<Arc<Self>> {
        let fail = |message: String| StoreError::Io {
            store: format!("s3://{bucket}"),
            op: "connect",
            key: String::new(),
            cause: std::io::Error::other(message),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(creds) = &options.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &creds.access_key_id,
                &creds.secret_access_key,
                None,
                None,
                "stowage",
            ));
        }
        let sdk_config = loader.load().await;
        let region = sdk_config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let chain = sdk_config.credentials_provider().ok_or_else(|| {
            fail("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE".into())
        })?;

        let mut sdk = aws_sdk_s3::config::Builder::from(&sdk_config)
            .region(Region::new(region.clone()))
            .force_path_style(!options.virtual_hosted)
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(options.retries as u32 + 1),
            )
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(options.timeout)
                    .build(),
            );
        if let Some(endpoint) = &options.endpoint {
            sdk = sdk.endpoint_url(endpoint);
        }

        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&region)
            .with_credentials(Arc::new(ChainCredentials::new(chain)))
            .with_virtual_hosted_style_request(options.virtual_hosted)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(8),
                    base: 2.0,
                },
                max_retries: options.retries,
                retry_timeout: options.timeout * (options.retries as u32 + 1),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(options.timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true),
            );
        if let Some(endpoint) = &options.endpoint {
            builder =
                builder.with_endpoint(bucket_endpoint(endpoint, bucket, options.virtual_hosted));
        }
        let objects = builder.build().map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(S3Client {
            bucket: bucket.to_string(),
            objects,
            sdk: aws_sdk_s3::Client::from_conf(sdk.build()),
            requests: Semaphore::new(options.max_requests.max(1)),
            options: options.clone(),
        }))
    }

    /// Waits for a free request slot.
    pub(crate) async fn slot(&self) -> SemaphorePermit<'_> {
        self.requests
            .acquire()
            .await
            .expect("the request semaphore is never closed")
    }

    /// Connects to the URL's bucket and checks that it exists (for sources and targets).
    pub(crate) async fn connect_checked(
        url: &crate::S3Url,
        options: &S3Options,
    ) -> std::io::Result<Arc<Self>> {
        let client = Self::connect(&url.bucket, options)
            .await
            .map_err(std::io::Error::other)?;
        client
            .check_bucket()
            .await
            .map_err(|e| std::io::Error::other(format!("{url}: {e}")))?;
        Ok(client)
    }

    /// Fails clearly when the bucket does not exist (a HEAD of a missing object in a missing
    /// bucket would otherwise look like a missing object). Other refusals (no permission to
    /// list buckets) are left to the requests that follow.
    pub(crate) async fn check_bucket(&self) -> Result<(), String> {
        match self.sdk.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(format!("bucket {} does not exist", self.bucket))
            }
            Err(e) if e.raw_response().is_some() => Ok(()),
            Err(e) => Err(sdk_message(&e)),
        }
    }

    /// The bucket's default Object Lock retention, if it has one.
    pub(crate) async fn default_retention(&self) -> Result<Option<ObjectLock>, String> {
        let out = self
            .sdk
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        let config = match out {
            Ok(out) => out.object_lock_configuration,
            // No Object Lock on the bucket (or no permission to read it).
            Err(e) if e.raw_response().is_some() => None,
            Err(e) => return Err(sdk_message(&e)),
        };
        let Some(retention) = config
            .and_then(|c| c.rule)
            .and_then(|r| r.default_retention)
        else {
            return Ok(None);
        };
        let mode = match retention.mode {
            Some(ObjectLockRetentionMode::Compliance) => LockMode::Compliance,
            _ => LockMode::Governance,
        };
        let days = match (retention.days, retention.years) {
            (Some(days), _) => days,
            (None, Some(years)) => years.saturating_mul(365),
            (None, None) => return Ok(None),
        };
        Ok(u32::try_from(days)
            .ok()
            .filter(|d| *d > 0)
            .map(|days| ObjectLock { mode, days }))
    }

    /// Whether writes need the SDK (retention or a storage class on the object).
    pub(crate) fn writes_with_sdk(&self, is_pack: bool, lock: Option<ObjectLock>) -> bool {
        lock.is_some() || (is_pack && self.options.storage_class.is_some())
    }

    /// A single PUT with Object Lock retention and storage class, as create-if-absent.
    /// Returns `false` when the object already existed (and was left alone).
    pub(crate) async fn sdk_put(
        &self,
        key: &str,
        data: Bytes,
        is_pack: bool,
        lock: Option<ObjectLock>,
    ) -> Result<bool, String> {
        let mut put = self
            .sdk
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            // Object Lock writes must carry an integrity check (Content-MD5 or a checksum).
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data));
        if let Some(lock) = lock {
            let until = lock.until(SystemTime::now());
            put = put
                .object_lock_mode(match lock.mode {
                    LockMode::Governance => ObjectLockMode::Governance,
                    LockMode::Compliance => ObjectLockMode::Compliance,
                })
                .object_lock_retain_until_date(SdkDateTime::from(until));
        }
        if let (true, Some(class)) = (is_pack, &self.options.storage_class) {
            put = put.storage_class(StorageClass::from(class.as_str()));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(sdk_message(&e)),
        }
    }

    /// Sets `key`'s retention to `until` in `lock`'s mode.
    pub(crate) async fn put_retention(
        &self,
        key: &str,
        lock: ObjectLock,
        until: SystemTime,
    ) -> Result<(), String> {
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(match lock.mode {
                LockMode::Governance => ObjectLockRetentionMode::Governance,
                LockMode::Compliance => ObjectLockRetentionMode::Compliance,
            })
            .retain_until_date(SdkDateTime::from(until))
            .build();
        self.sdk
            .put_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .retention(retention)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_message(&e))
    }

    /// Until when `key` is under retention, if it is (and exists).
    pub(crate) async fn retained_until(&self, key: &str) -> Result<Option<SystemTime>, String> {
        let head = self
            .sdk
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(out) => Ok(out
                .object_lock_retain_until_date()
                .and_then(|d| SystemTime::try_from(*d).ok())
                .filter(|until| *until > SystemTime::now())),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(sdk_message(&e)),
        }
    }

    /// Retention and storage class of an object, as S3 reports them.
    pub(crate) async fn object_info(&self, key: &str) -> Result<ObjectInfo, String> {
        let out = self
            .sdk
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_message(&e))?;
        Ok(ObjectInfo {
            lock_mode: out.object_lock_mode().map(|m| m.as_str().to_string()),
            retain_until: out
                .object_lock_retain_until_date()
                .and_then(|d| SystemTime::try_from(*d).ok()),
            storage_class: out.storage_class().map(|c| c.as_str().to_string()),
        })
    }

    /// The object_store path of a full key.
    pub(crate) fn path(&self, key: &str) -> Result<Path, String> {
        Path::parse(key).map_err(|e| e.to_string())
    }
}

/// The endpoint object_store is given: in virtual-hosted style it expects the bucket in the
/// host name (`http://bucket.host:port`); in path style the endpoint as it is.
fn bucket_endpoint(endpoint: &str, bucket: &str, virtual_hosted: bool) -> String {
    match (virtual_hosted, endpoint.split_once("://")) {
        (true, Some((scheme, host))) => format!("{scheme}://{bucket}.{host}"),
        _ => endpoint.to_string(),
    }
}

/// What S3 reports about an object beyond its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `GOVERNANCE` or `COMPLIANCE` when the object is under retention.
    pub lock_mode: Option<String>,
    pub retain_until: Option<SystemTime>,
    /// `None` for STANDARD (S3 leaves the header out).
    pub storage_class: Option<String>,
}

/// The most useful text of an SDK error: the service's code and message when there is one.
pub(crate) fn sdk_message<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("(no message)")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// The AWS SDK's credential chain, for object_store's signer; credentials are cached until
/// five minutes before they expire.
#[derive(Debug)]
struct ChainCredentials {
    chain: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl ChainCredentials {
    fn new(chain: SharedCredentialsProvider) -> Self {
        ChainCredentials {
            chain,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl CredentialProvider for ChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = &*cached {
            let fresh = expiry.is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300));
            if fresh {
                return Ok(Arc::clone(credential));
            }
        }
        let creds =
            self.chain
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: format!(
                        "no usable AWS credentials ({}): set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                        e.to_string().lines().next().unwrap_or("none found")
                    )
                    .into(),
                })?;
        let credential = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((Arc::clone(&credential), creds.expiry()));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_endpoint;

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            bucket_endpoint("https://s3.example.com", "backups", true),
            "https://backups.s3.example.com"
        );
        assert_eq!(
            bucket_endpoint("http://127.0.0.1:9000", "backups", false),
            "http://127.0.0.1:9000"
        );
    }
}
