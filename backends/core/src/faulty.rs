//! A [`Store`] wrapper that fails on command, for reliability tests (as kopia's
//! `blobtesting/faulty.go`).
//!
//! Every call goes to the inner store; a *fault plan*, a list of [`Rule`]s, says which calls
//! go wrong and how. A rule names a [`Method`] (or any), a key prefix, which of the matching
//! calls it acts on ([`Calls`]), the [`Fault`] (an error of a [`StoreError`] kind, a
//! truncated read, a flipped bit), and whether an error comes before the inner call or after
//! it succeeded (a put that lands but reports failure).
//!
//! ```
//! # use std::sync::Arc;
//! use stowage_backends::faulty::{ErrorKind, FaultyStore, Method, Rule};
//! # use stowage_backends::memory::MemoryStore;
//! let store = FaultyStore::with_plan(
//!     Arc::new(MemoryStore::new()),
//!     [
//!         // The second put under index/ lands, then reports a timeout.
//!         Rule::error(ErrorKind::Io(std::io::ErrorKind::TimedOut))
//!             .on(Method::Put)
//!             .under("index/")
//!             .nth(2)
//!             .after_success(),
//!         // Every read of a pack comes back with a bit flipped.
//!         Rule::flip_bit().under("data/"),
//!     ],
//! );
//! ```

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::store::{ObjectMeta, Store, StoreError, StoreResult, Upload};

/// A method of [`Store`] a rule applies to. An upload's `finish` (which stores the object
/// under its key) counts as a [`Method::Put`] of that key; [`Method::StartUpload`]'s key is
/// its directory with a `/` after it (`data/`), so a rule `under("data/")` matches it.
/// `describe` and `retains` cannot fail and are always forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Put,
    Get,
    GetRange,
    Head,
    List,
    Delete,
    StartUpload,
    ExtendRetention,
}

impl Method {
    /// The name in error messages (`op`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Put => "put",
            Method::Get => "get",
            Method::GetRange => "get_range",
            Method::Head => "head",
            Method::List => "list",
            Method::Delete => "delete",
            Method::StartUpload => "start_upload",
            Method::ExtendRetention => "extend_retention",
        }
    }

    /// Whether the method returns an object's bytes (what [`Fault::Truncate`] and
    /// [`Fault::FlipBit`] damage).
    pub fn reads(self) -> bool {
        matches!(self, Method::Get | Method::GetRange)
    }
}

/// Which of the calls a rule matches (its method and prefix) it acts on, counted from when
/// the rule was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// Only the `n`-th (1-based).
    Nth(u64),
    Every,
}

/// The kind of error a rule injects: one per [`StoreError`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// [`StoreError::Io`] with a cause of this kind.
    Io(std::io::ErrorKind),
    InvalidKey,
    Locked,
    Injected,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with an error of this kind.
    Error(ErrorKind),
    /// A read returns only its first `n` bytes.
    Truncate(usize),
    /// A read returns its bytes with one bit flipped (in the middle byte).
    FlipBit,
}

/// One entry of a fault plan. Built with [`Rule::error`], [`Rule::truncate`] or
/// [`Rule::flip_bit`] (every call of every method it can apply to, any key) and narrowed
/// with [`Rule::on`], [`Rule::under`], [`Rule::nth`], [`Rule::after_success`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: any method (a data fault: any read).
    pub method: Option<Method>,
    /// Keys the rule matches start with this (`""`: every key).
    pub prefix: String,
    pub calls: Calls,
    pub fault: Fault,
    /// An error is returned after the inner call ran and succeeded (its effect stays: a put
    /// lands, a delete deletes); without it the inner call is not made. Data faults always
    /// damage what the inner call returned.
    pub after: bool,
}

impl Rule {
    fn every(fault: Fault) -> Rule {
        Rule {
            method: None,
            prefix: String::new(),
            calls: Calls::Every,
            fault,
            after: false,
        }
    }

    /// Calls fail with an error of `kind`.
    pub fn error(kind: ErrorKind) -> Rule {
        Rule::every(Fault::Error(kind))
    }

    /// Reads return only their first `n` bytes.
    pub fn truncate(n: usize) -> Rule {
        Rule::every(Fault::Truncate(n))
    }

    /// Reads return one bit flipped.
    pub fn flip_bit() -> Rule {
        Rule::every(Fault::FlipBit)
    }

    /// Only calls of `method`.
    pub fn on(mut self, method: Method) -> Rule {
        self.method = Some(method);
        self
    }

    /// Only keys starting with `prefix`.
    pub fn under(mut self, prefix: &str) -> Rule {
        self.prefix = prefix.to_string();
        self
    }

    /// Only the `n`-th matching call (1-based) from when the rule is added.
    pub fn nth(mut self, n: u64) -> Rule {
        self.calls = Calls::Nth(n);
        self
    }

    /// The error comes after the inner call succeeded.
    pub fn after_success(mut self) -> Rule {
        self.after = true;
        self
    }

    fn applies_to(&self, method: Method) -> bool {
        let data_fault = !matches!(self.fault, Fault::Error(_));
        self.method.is_none_or(|m| m == method) && (!data_fault || method.reads())
    }
}

/// Which convenience method added a rule, so that calling it again replaces the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    NthPut,
    PutsUnder,
    FlipUnder,
}

#[derive(Debug)]
struct Armed {
    rule: Rule,
    /// Matching calls so far.
    seen: u64,
    slot: Option<Slot>,
}

/// A rule firing on a call.
struct Firing {
    fault: Fault,
    after: bool,
    /// The key in the error (for `extend_retention`, the first key the rule matched).
    key: String,
}

/// The plan, shared with the store's uploads.
#[derive(Debug, Default)]
struct Plan {
    rules: Mutex<Vec<Armed>>,
    injected: std::sync::atomic::AtomicU64,
}

impl Plan {
    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, rule: Rule, slot: Option<Slot>) {
        if let (Some(method), Fault::Truncate(_) | Fault::FlipBit) = (rule.method, rule.fault) {
            assert!(
                method.reads(),
                "a Truncate or FlipBit fault damages what a read returns (Get, GetRange), \
                 not a {}",
                method.name()
            );
        }
        let mut rules = self.rules();
        if slot.is_some() {
            rules.retain(|armed| armed.slot != slot);
        }
        rules.push(Armed {
            rule,
            seen: 0,
            slot,
        });
    }

    fn remove(&self, slot: Slot) {
        self.rules().retain(|armed| armed.slot != Some(slot));
    }

    /// Counts the call in every rule it matches; the first of them (in plan order) that
    /// acts on it fires.
    fn decide(&self, method: Method, keys: &[&str]) -> Option<Firing> {
        let mut firing = None;
        for armed in self.rules().iter_mut() {
            if !armed.rule.applies_to(method) {
                continue;
            }
            let Some(key) = keys.iter().find(|k| k.starts_with(&armed.rule.prefix)) else {
                continue;
            };
            armed.seen += 1;
            let fires = match armed.rule.calls {
                Calls::Every => true,
                Calls::Nth(n) => armed.seen == n,
            };
            if fires && firing.is_none() {
                firing = Some(Firing {
                    fault: armed.rule.fault,
                    after: armed.rule.after,
                    key: key.to_string(),
                });
            }
        }
        if firing.is_some() {
            self.injected
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        firing
    }

    /// Runs `call` (a call of `method` on `keys`) under the plan.
    async fn run<T: Damage>(
        &self,
        store: &str,
        method: Method,
        keys: &[&str],
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let Some(firing) = self.decide(method, keys) else {
            return call.await;
        };
        match firing.fault {
            Fault::Error(kind) => {
                if firing.after {
                    call.await?;
                }
                Err(error(kind, store, method, &firing.key))
            }
            fault => Ok(call.await?.damage(fault)),
        }
    }
}

fn error(kind: ErrorKind, store: &str, method: Method, key: &str) -> StoreError {
    let (store, key) = (store.to_string(), key.to_string());
    match kind {
        ErrorKind::NotFound => StoreError::NotFound { store, key },
        ErrorKind::Io(kind) => StoreError::Io {
            store,
            op: method.name(),
            key,
            cause: std::io::Error::new(kind, "injected fault"),
        },
        ErrorKind::InvalidKey => StoreError::InvalidKey {
            store,
            key,
            reason: "injected fault",
        },
        ErrorKind::Locked => StoreError::Locked {
            store,
            key,
            until: "9999-12-31T23:59:59Z (injected fault)".into(),
        },
        ErrorKind::Injected => StoreError::Injected {
            store,
            op: method.name(),
            key,
        },
    }
}

/// What a data fault does to a call's result: only object bytes are damaged.
trait Damage: Sized {
    fn damage(self, _fault: Fault) -> Self {
        self
    }
}

impl Damage for () {}
impl Damage for u64 {}
impl Damage for ObjectMeta {}
impl Damage for Vec<ObjectMeta> {}
impl Damage for Box<dyn Upload> {}

impl Damage for Bytes {
    fn damage(self, fault: Fault) -> Bytes {
        match fault {
            Fault::Truncate(n) => self.slice(..n.min(self.len())),
            Fault::FlipBit if !self.is_empty() => {
                let mut copy = BytesMut::from(&self[..]);
                let middle = copy.len() / 2;
                copy[middle] ^= 0x10;
                copy.freeze()
            }
            _ => self,
        }
    }
}

/// Wraps a store and injects the faults of its plan (see the [module](self)). Rules can be
/// added while the store is in use; [`FaultyStore::fail_nth_put`],
/// [`FaultyStore::fail_puts_under`] and [`FaultyStore::flip_bits_under`] are shorthands.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    plan: Arc<Plan>,
}

impl FaultyStore {
    /// A store with an empty plan: every call goes through unharmed.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            plan: Arc::default(),
        }
    }

    pub fn with_plan(inner: Arc<dyn Store>, rules: impl IntoIterator<Item = Rule>) -> Self {
        let store = Self::new(inner);
        for rule in rules {
            store.add(rule);
        }
        store
    }

    /// Appends `rule` to the plan. Panics on a data fault for a method that returns no
    /// object bytes.
    pub fn add(&self, rule: Rule) {
        self.plan.add(rule, None);
    }

    /// Empties the plan.
    pub fn clear(&self) {
        self.plan.rules().clear();
    }

    /// How many calls a rule fired on so far.
    pub fn faults_injected(&self) -> u64 {
        self.plan.injected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the `n`-th put from now fail (and every later one succeed); replaces the put
    /// chosen by an earlier call. Uploads count as puts.
    pub fn fail_nth_put(&self, n: u64) {
        let rule = Rule::error(ErrorKind::Injected).on(Method::Put).nth(n);
        self.plan.add(rule, Some(Slot::NthPut));
    }

    /// Makes every put of a key starting with `prefix` fail (`None`: no longer).
    pub fn fail_puts_under(&self, prefix: Option<&str>) {
        match prefix {
            Some(prefix) => {
                let rule = Rule::error(ErrorKind::Injected)
                    .on(Method::Put)
                    .under(prefix);
                self.plan.add(rule, Some(Slot::PutsUnder));
            }
            None => self.plan.remove(Slot::PutsUnder),
        }
    }

    /// Flips one bit of every object read whose key starts with `prefix` (`None`: no longer).
    pub fn flip_bits_under(&self, prefix: Option<&str>) {
        match prefix {
            Some(prefix) => {
                self.plan
                    .add(Rule::flip_bit().under(prefix), Some(Slot::FlipUnder));
            }
            None => self.plan.remove(Slot::FlipUnder),
        }
    }

    async fn run<T: Damage>(
        &self,
        method: Method,
        key: &str,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.plan.run(&self.describe(), method, &[key], call).await
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.run(Method::Put, key, self.inner.put(key, data)).await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.run(Method::Get, key, self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.run(Method::GetRange, key, self.inner.get_range(key, range))
            .await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        self.run(Method::Head, key, self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.run(Method::List, prefix, self.inner.list(prefix))
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.run(Method::Delete, key, self.inner.delete(key)).await
    }

    fn retains(&self) -> bool {
        self.inner.retains()
    }

    async fn start_upload(&self, dir: &str, size_hint: usize) -> StoreResult<Box<dyn Upload>> {
        let started = self.inner.start_upload(dir, size_hint);
        let inner = self
            .run(Method::StartUpload, &format!("{dir}/"), started)
            .await?;
        Ok(Box::new(FaultyUpload {
            inner,
            store: Arc::clone(&self.inner),
            describe: self.describe(),
            plan: Arc::clone(&self.plan),
        }))
    }

    async fn extend_retention(&self, keys: &[String]) -> StoreResult<u64> {
        let keys_str: Vec<&str> = keys.iter().map(String::as_str).collect();
        let call = self.inner.extend_retention(keys);
        self.plan
            .run(&self.describe(), Method::ExtendRetention, &keys_str, call)
            .await
    }
}

/// An upload of the inner store whose `finish` is a [`Method::Put`] under the plan.
struct FaultyUpload {
    inner: Box<dyn Upload>,
    /// The store that started `inner`, which its `finish` is given.
    store: Arc<dyn Store>,
    describe: String,
    plan: Arc<Plan>,
}

#[async_trait]
impl Upload for FaultyUpload {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(data)
    }

    async fn finish(self: Box<Self>, _store: &dyn Store, key: &str) -> StoreResult<()> {
        let FaultyUpload {
            inner,
            store,
            describe,
            plan,
        } = *self;
        let finish = inner.finish(store.as_ref(), key);
        plan.run(&describe, Method::Put, &[key], finish).await
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::{ErrorKind, FaultyStore, Method, Rule};
    use crate::memory::MemoryStore;
    use crate::store::{ObjectMeta, Store, StoreError, StoreResult, Upload};

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn faulty(rules: impl IntoIterator<Item = Rule>) -> (Arc<MemoryStore>, FaultyStore) {
        let memory = Arc::new(MemoryStore::new());
        let store = FaultyStore::with_plan(memory.clone(), rules);
        (memory, store)
    }

    fn injected(r: StoreResult<()>) -> (&'static str, String) {
        match r {
            Err(StoreError::Injected { op, key, .. }) => (op, key),
            other => panic!("expected an injected error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn nth_counts_only_matching_calls_and_fires_once() {
        let (memory, store) = faulty([Rule::error(ErrorKind::Injected)
            .on(Method::Put)
            .under("index/")
            .nth(2)]);
        store.put("data/x", bytes("d")).await.expect("other prefix");
        store.put("index/a", bytes("a")).await.expect("first match");
        store.get("index/a").await.expect("other method");
        assert_eq!(
            injected(store.put("index/b", bytes("b")).await),
            ("put", "index/b".to_string())
        );
        store.put("index/c", bytes("c")).await.expect("third match");
        assert!(memory.get("index/b").await.is_err_and(|e| e.is_not_found()));
        assert_eq!(memory.get("index/c").await.expect("landed"), bytes("c"));
        assert_eq!(store.faults_injected(), 1);
    }

    #[tokio::test]
    async fn every_call_under_the_prefix_fails_with_the_kind_asked() {
        let (memory, store) = faulty([Rule::error(ErrorKind::NotFound)
            .on(Method::Get)
            .under("data/")]);
        memory.put("data/x", bytes("x")).await.expect("put");
        memory.put("index/x", bytes("i")).await.expect("put");
        for _ in 0..3 {
            match store.get("data/x").await {
                Err(StoreError::NotFound { key, .. }) => assert_eq!(key, "data/x"),
                other => panic!("expected NotFound, got {other:?}"),
            }
        }
        assert_eq!(store.get("index/x").await.expect("get"), bytes("i"));
        assert_eq!(
            store.get_range("data/x", 0..1).await.expect("range"),
            bytes("x")
        );
        assert_eq!(store.head("data/x").await.expect("head").size, 1);
    }

    #[tokio::test]
    async fn every_error_kind_is_its_store_error() {
        let io = ErrorKind::Io(io::ErrorKind::TimedOut);
        let cases = [
            (ErrorKind::NotFound, Method::Head),
            (io, Method::List),
            (ErrorKind::InvalidKey, Method::Delete),
            (ErrorKind::Locked, Method::Delete),
            (ErrorKind::Injected, Method::GetRange),
        ];
        for (kind, method) in cases {
            let (memory, store) = faulty([Rule::error(kind).on(method)]);
            memory.put("k", bytes("v")).await.expect("put");
            let err = match method {
                Method::Head => store.head("k").await.map(drop),
                Method::List => store.list("k").await.map(drop),
                Method::Delete => store.delete("k").await,
                Method::GetRange => store.get_range("k", 0..1).await.map(drop),
                _ => unreachable!(),
            }
            .expect_err("fails");
            let (store_name, key) = match &err {
                StoreError::NotFound { store, key } => {
                    assert_eq!(kind, ErrorKind::NotFound);
                    (store, key)
                }
                StoreError::Io {
                    store,
                    op,
                    key,
                    cause,
                } => {
                    assert_eq!(
                        (kind, *op, cause.kind()),
                        (io, "list", io::ErrorKind::TimedOut)
                    );
                    (store, key)
                }
                StoreError::InvalidKey { store, key, .. } => {
                    assert_eq!(kind, ErrorKind::InvalidKey);
                    (store, key)
                }
                StoreError::Locked { store, key, .. } => {
                    assert_eq!(kind, ErrorKind::Locked);
                    (store, key)
                }
                StoreError::Injected { store, op, key } => {
                    assert_eq!((kind, *op), (ErrorKind::Injected, "get_range"));
                    (store, key)
                }
            };
            assert_eq!((store_name.as_str(), key.as_str()), ("faulty(memory)", "k"));
            // Before the inner call: the delete did not happen.
            assert_eq!(memory.get("k").await.expect("still there"), bytes("v"));
        }
    }

    #[tokio::test]
    async fn an_error_after_success_leaves_the_effect() {
        let (memory, store) = faulty([
            Rule::error(ErrorKind::Io(io::ErrorKind::TimedOut))
                .on(Method::Put)
                .nth(1)
                .after_success(),
            Rule::error(ErrorKind::Injected)
                .on(Method::Delete)
                .after_success(),
        ]);
        match store.put("a", bytes("landed")).await {
            Err(StoreError::Io { cause, .. }) => assert_eq!(cause.kind(), io::ErrorKind::TimedOut),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(memory.get("a").await.expect("landed"), bytes("landed"));
        assert_eq!(
            injected(store.delete("a").await),
            ("delete", "a".to_string())
        );
        assert!(memory.get("a").await.is_err_and(|e| e.is_not_found()));
        // A failing inner call reports its own error, not the injected one.
        let (_, store) = faulty([Rule::error(ErrorKind::Locked)
            .on(Method::Get)
            .after_success()]);
        assert!(store.get("missing").await.is_err_and(|e| e.is_not_found()));
    }

    #[tokio::test]
    async fn truncated_reads_return_the_first_bytes() {
        let (memory, store) = faulty([Rule::truncate(3).on(Method::GetRange).under("data/")]);
        memory
            .put("data/p", bytes("0123456789"))
            .await
            .expect("put");
        assert_eq!(
            store.get_range("data/p", 2..8).await.expect("range"),
            bytes("234")
        );
        assert_eq!(
            store.get_range("data/p", 8..9).await.expect("short"),
            bytes("8")
        );
        assert_eq!(
            store.get("data/p").await.expect("get is not a range"),
            bytes("0123456789")
        );
        let (memory, store) = faulty([Rule::truncate(0).nth(2)]);
        memory.put("k", bytes("abc")).await.expect("put");
        store.head("k").await.expect("not a read: not counted");
        assert_eq!(store.get("k").await.expect("first"), bytes("abc"));
        assert_eq!(
            store.get_range("k", 0..3).await.expect("second"),
            Bytes::new()
        );
        assert_eq!(store.get("k").await.expect("third"), bytes("abc"));
    }

    #[tokio::test]
    async fn a_flipped_bit_is_one_bit_in_the_middle() {
        let (memory, store) = faulty([Rule::flip_bit().under("data/")]);
        let data = Bytes::from_static(&[0u8; 9]);
        memory.put("data/p", data.clone()).await.expect("put");
        let got = store.get("data/p").await.expect("get");
        let mut expected = vec![0u8; 9];
        expected[4] = 0x10;
        assert_eq!(got, Bytes::from(expected));
        let range = store.get_range("data/p", 0..2).await.expect("range");
        assert_eq!(range, Bytes::from_static(&[0, 0x10]));
        assert_eq!(
            memory.get("data/p").await.expect("stored"),
            data,
            "stored bytes intact"
        );
        memory.put("empty", Bytes::new()).await.expect("put");
        assert_eq!(
            store.get("empty").await.expect("outside the prefix"),
            Bytes::new()
        );
        store.flip_bits_under(Some(""));
        assert_eq!(
            store.get("empty").await.expect("nothing to flip"),
            Bytes::new()
        );
    }

    #[test]
    #[should_panic(expected = "damages what a read returns")]
    fn a_data_fault_on_a_write_is_refused() {
        let _ = faulty([Rule::flip_bit().on(Method::Put)]);
    }

    #[tokio::test]
    async fn any_method_and_the_first_firing_rule_wins() {
        let (memory, store) = faulty([
            Rule::error(ErrorKind::NotFound).under("gone/").nth(2),
            Rule::error(ErrorKind::Injected).under("gone/"),
        ]);
        memory.put("gone/a", bytes("a")).await.expect("put");
        // Both rules count every call; the first acts on its second one only.
        assert_eq!(
            injected(store.head("gone/a").await.map(drop)),
            ("head", "gone/a".into())
        );
        assert!(store.list("gone/").await.is_err_and(|e| e.is_not_found()));
        assert_eq!(
            injected(store.delete("gone/a").await),
            ("delete", "gone/a".into())
        );
        assert_eq!(store.faults_injected(), 3);
        store.clear();
        assert_eq!(store.get("gone/a").await.expect("plan cleared"), bytes("a"));
    }

    #[tokio::test]
    async fn shorthands_replace_and_clear_their_rule() {
        let (memory, store) = faulty([]);
        store.fail_nth_put(3);
        store.fail_nth_put(2); // replaces: the second put from now
        store.put("a", bytes("a")).await.expect("first");
        assert_eq!(
            injected(store.put("b", bytes("b")).await),
            ("put", "b".into())
        );
        store.put("c", bytes("c")).await.expect("third");

        store.fail_puts_under(Some("index/"));
        assert!(store.put("index/1", bytes("1")).await.is_err());
        store.put("data/1", bytes("1")).await.expect("other prefix");
        store.fail_puts_under(None);
        store.put("index/1", bytes("1")).await.expect("cleared");

        store.flip_bits_under(Some("data/"));
        assert_ne!(store.get("data/1").await.expect("get"), bytes("1"));
        store.flip_bits_under(Some("index/"));
        assert_eq!(store.get("data/1").await.expect("replaced"), bytes("1"));
        assert_ne!(store.get("index/1").await.expect("get"), bytes("1"));
        store.flip_bits_under(None);
        assert_eq!(store.get("index/1").await.expect("cleared"), bytes("1"));
        assert_eq!(memory.list("").await.expect("list").len(), 4);
    }

    /// A store overriding every default method, to see that they are forwarded.
    #[derive(Debug, Default)]
    struct Retaining {
        inner: MemoryStore,
        uploads: AtomicU64,
    }

    #[async_trait]
    impl Store for Retaining {
        fn describe(&self) -> String {
            "retaining".into()
        }
        async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
            self.inner.put(key, data).await
        }
        async fn get(&self, key: &str) -> StoreResult<Bytes> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> StoreResult<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> StoreResult<()> {
            self.inner.delete(key).await
        }
        fn retains(&self) -> bool {
            true
        }
        async fn start_upload(&self, dir: &str, hint: usize) -> StoreResult<Box<dyn Upload>> {
            self.uploads.fetch_add(1, Ordering::SeqCst);
            self.inner.start_upload(dir, hint).await
        }
        async fn extend_retention(&self, keys: &[String]) -> StoreResult<u64> {
            Ok(keys.len() as u64 * 10)
        }
    }

    #[tokio::test]
    async fn default_methods_are_forwarded_and_under_the_plan() {
        let inner = Arc::new(Retaining::default());
        let store = FaultyStore::with_plan(
            inner.clone(),
            [
                Rule::error(ErrorKind::Io(io::ErrorKind::StorageFull))
                    .on(Method::StartUpload)
                    .under("full/"),
                Rule::error(ErrorKind::Locked)
                    .on(Method::ExtendRetention)
                    .under("locks/"),
            ],
        );
        assert!(store.retains());
        assert_eq!(store.describe(), "faulty(retaining)");
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(
            store
                .extend_retention(&keys(&["a", "b"]))
                .await
                .expect("extend"),
            20
        );
        match store.extend_retention(&keys(&["a", "locks/x"])).await {
            Err(StoreError::Locked { key, .. }) => assert_eq!(key, "locks/x"),
            other => panic!("expected Locked, got {other:?}"),
        }
        match store.start_upload("full", 0).await {
            Err(StoreError::Io { op, key, cause, .. }) => assert_eq!(
                (op, key.as_str(), cause.kind()),
                ("start_upload", "full/", io::ErrorKind::StorageFull)
            ),
            Err(other) => panic!("expected StorageFull, got {other:?}"),
            Ok(_) => panic!("expected StorageFull, got an upload"),
        }
        assert_eq!(inner.uploads.load(Ordering::SeqCst), 0, "not started");
        let mut upload = store.start_upload("data", 0).await.expect("start");
        assert_eq!(
            inner.uploads.load(Ordering::SeqCst),
            1,
            "the inner store's upload"
        );
        upload.write(b"pack").expect("write");
        upload.finish(&store, "data/p").await.expect("finish");
        assert_eq!(inner.get("data/p").await.expect("stored"), bytes("pack"));
    }

    #[tokio::test]
    async fn an_upload_finish_is_a_put() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = Arc::new(crate::fs::FsStore::create(dir.path()).expect("create"));
        let store = FaultyStore::new(fs.clone());
        store.add(
            Rule::error(ErrorKind::Injected)
                .on(Method::Put)
                .under("data/")
                .nth(2)
                .after_success(),
        );
        store.put("data/one", bytes("1")).await.expect("first put");
        let mut upload = store.start_upload("data", 0).await.expect("start");
        upload.write(b"streamed").expect("write");
        assert_eq!(
            injected(upload.finish(&store, "data/two").await),
            ("put", "data/two".into())
        );
        assert_eq!(fs.get("data/two").await.expect("landed"), bytes("streamed"));
        store.fail_nth_put(1);
        let upload = store.start_upload("data", 0).await.expect("start");
        assert!(upload.finish(&store, "data/three").await.is_err());
        assert!(fs.get("data/three").await.is_err_and(|e| e.is_not_found()));
        assert_eq!(fs.list("data/").await.expect("list").len(), 2);
        assert!(
            crate::testing::temp_files(dir.path()).is_empty(),
            "the refused upload is discarded"
        );
    }
}
