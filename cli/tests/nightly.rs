//! Nightly operations with the real binary: retention with forget and prune, backups and
//! prunes running at once, and SIGKILL at random points of backup and prune.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage_fixtures::{generate, VolumeSpec};

use common::{gnu_tar_sha256, settle, signal, Stowage};

/// A snapshot that must restore exactly: its id and the GNU tar digest of what it saved.
struct Kept {
    id: String,
    name: String,
    tar_sha256: String,
}

fn snapshot_ids(s: &Stowage) -> Vec<String> {
    s.json(&["snapshots", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .map(|snap| snap["id"].as_str().expect("id").to_string())
        .collect()
}

/// Backs up `root` and returns the snapshot, remembering what it must restore to.
fn back_up(s: &Stowage, root: &Path) -> (Kept, Value) {
    let out = s.json(&["backup", root.to_str().expect("utf-8"), "--json"]);
    let kept = kept_from(&out, root);
    (kept, out)
}

fn kept_from(out: &Value, root: &Path) -> Kept {
    let name = root
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    Kept {
        id: out["id"].as_str().expect("snapshot id").to_string(),
        tar_sha256: gnu_tar_sha256(root.parent().expect("parent"), &name),
        name,
    }
}

/// Restores each snapshot of `kept` (two at a time) and compares it with what was saved, byte
/// for byte (GNU tar of contents, modes, mtimes, owners).
fn assert_all_restore(s: &Stowage, kept: &[Kept]) {
    std::thread::scope(|scope| {
        for half in kept.chunks(kept.len().div_ceil(2).max(1)) {
            scope.spawn(move || {
                for k in half {
                    let target = s.path(&format!("restore-{}", k.id));
                    s.ok(&[
                        "restore",
                        &k.id,
                        "--target",
                        target.to_str().expect("utf-8"),
                    ]);
                    assert_eq!(
                        gnu_tar_sha256(&target, &k.name),
                        k.tar_sha256,
                        "snapshot {} does not restore exactly",
                        k.id
                    );
                    std::fs::remove_dir_all(&target).expect("clean up");
                }
            });
        }
    });
}

fn data_bytes(repo: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        _ => e.metadata().map_or(0, |m| m.len()),
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&repo.join("data"))
}

fn pack_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("data"))
        .map(|dirs| {
            dirs.flatten()
                .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
                .sum()
        })
        .unwrap_or(0)
}

fn prune_json(s: &Stowage, args: &[&str]) -> Value {
    let mut all = vec!["prune", "--json"];
    all.extend_from_slice(args);
    s.json(&all)
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn forget_and_two_prunes_free_exactly_the_unneeded_data() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let volumes = s.path("volumes");
    let spec = VolumeSpec::new(21, 8 << 20);
    let other = VolumeSpec::new(22, 8 << 20);
    let mut nights = Vec::new();
    for night in 1..=3 {
        let root = generate(&spec.clone().at_night(night), &volumes)
            .expect("generate")
            .root;
        settle();
        nights.push(back_up(&s, &root).0);
    }
    let other_root = generate(&other, &volumes).expect("generate").root;
    let (gone, _) = back_up(&s, &other_root);

    // What the snapshots kept after forget need, as `copy` finds it: an independent oracle.
    let oracle = Stowage::new();
    let oracle_repo = oracle.repo.clone();
    let before = data_bytes(Path::new(&s.repo));
    s.ok(&["forget", &gone.id, &nights[0].id]);
    let kept = nights.split_off(1);
    s.ok(&["copy", "--to", &oracle_repo]);
    let needed_by_copy = count(&prune_json(&oracle, &["--dry-run"]), "needed_bytes");

    // Phase one marks, and repacks every pack with more than 1% unneeded; nothing goes yet.
    let first = prune_json(&s, &["--grace", "0s", "--repack-unused", "1"]);
    assert_eq!(count(&first, "needed_bytes"), needed_by_copy);
    assert!(count(&first, "packs_marked") > 0, "{first}");
    assert_eq!(count(&first, "packs_deleted"), 0);
    assert!(data_bytes(Path::new(&s.repo)) >= before);
    s.ok(&["check", "--read-data"]);
    assert_all_restore(&s, &kept);

    // Past the grace period (none): the marked packs go.
    let second = prune_json(&s, &["--grace", "0s", "--repack-unused", "1"]);
    assert!(count(&second, "packs_deleted") > 0, "{second}");
    assert_eq!(count(&second, "packs_marked"), 0, "{second}");
    assert_eq!(count(&second, "packs_pending"), 0, "{second}");
    let after = data_bytes(Path::new(&s.repo));
    let copy_bytes = data_bytes(Path::new(&oracle_repo));
    // The repository now holds what the kept snapshots need and little else: within the
    // pack headers and unneeded bytes in packs below the threshold of what copy stored.
    let slack = count(&second, "unused_bytes_kept") + (64 << 10);
    assert!(
        after <= copy_bytes + slack && copy_bytes <= after + slack,
        "after prune {after} bytes, copy of the kept snapshots {copy_bytes} (slack {slack})"
    );
    assert!(
        before - after >= count(&first, "stored_bytes") - needed_by_copy - slack,
        "shrank by {} bytes only",
        before - after
    );
    s.ok(&["check", "--read-data"]);
    assert_all_restore(&s, &kept);
    assert_eq!(
        snapshot_ids(&s),
        kept.iter().map(|k| k.id.clone()).collect::<Vec<_>>()
    );
}

fn spawn_quiet(s: &Stowage, args: &[&str]) -> Child {
    s.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stowage")
}

fn finish(child: Child, what: &str) -> Value {
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn four_backups_and_prunes_at_once_lose_nothing() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let volumes = s.path("volumes");
    let specs: Vec<VolumeSpec> = (0..4).map(|n| VolumeSpec::new(50 + n, 16 << 20)).collect();
    let mut kept = Vec::new();
    let mut forgotten = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        let root = generate(spec, &volumes).expect("generate").root;
        let (snap, _) = back_up(&s, &root);
        match n {
            0 | 1 => kept.push(snap),
            _ => forgotten.push(snap.id),
        }
    }
    // The forgotten volumes' packs are marked now and deleted by the prune that runs beside
    // the backups; their night-2 backups must not rely on them.
    let mut forget = vec!["forget"];
    forget.extend(forgotten.iter().map(String::as_str));
    s.ok(&forget);
    let marked = prune_json(&s, &["--grace", "0s"]);
    assert!(count(&marked, "packs_marked") > 0);

    let roots: Vec<PathBuf> = specs
        .iter()
        .map(|spec| {
            generate(&spec.clone().at_night(2), &volumes)
                .expect("generate")
                .root
        })
        .collect();
    settle();
    let mut backups: Vec<Child> = roots
        .iter()
        .map(|root| spawn_quiet(&s, &["backup", root.to_str().expect("utf-8"), "--json"]))
        .collect();
    // Once the backups are storing packs, stop them where they are, prune, and let them go
    // on: the prune runs while every unfinished backup is mid-way, whatever the timing.
    let packs_before = pack_count(Path::new(&s.repo));
    let deadline = Instant::now() + Duration::from_secs(120);
    while pack_count(Path::new(&s.repo)) == packs_before {
        assert!(Instant::now() < deadline, "the backups stored no pack");
        std::thread::sleep(Duration::from_millis(5));
    }
    let paused: Vec<u32> = backups
        .iter_mut()
        .filter_map(|c| match c.try_wait().expect("try_wait") {
            None => Some(c.id()),
            Some(_) => None,
        })
        .collect();
    for pid in &paused {
        signal(*pid, libc::SIGSTOP);
    }
    let mut prunes = vec![prune_json(&s, &[])];
    for pid in &paused {
        signal(*pid, libc::SIGCONT);
    }
    assert!(!paused.is_empty(), "every backup finished before the prune");
    // And prunes keep running until the backups are done.
    while backups
        .iter_mut()
        .any(|c| c.try_wait().expect("try_wait").is_none())
    {
        prunes.push(prune_json(&s, &[]));
    }
    assert!(
        count(&prunes[0], "packs_deleted") > 0,
        "the first prune beside the backups deletes the forgotten volumes' packs: {}",
        prunes[0]
    );
    for (child, root) in backups.into_iter().zip(&roots) {
        let out = finish(child, "backup");
        kept.push(kept_from(&out, root));
    }

    s.ok(&["check", "--read-data"]);
    assert_all_restore(&s, &kept);
    // The marks the prunes left (packs the running backups had not yet used) resolve.
    for _ in 0..2 {
        prune_json(&s, &["--grace", "0s"]);
    }
    s.ok(&["check", "--read-data"]);
    assert_all_restore(&s, &kept);
}

/// xorshift64*: random kill points, reproducible from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        bound.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Runs `args`, killing it with SIGKILL after a random part of `window`. Returns whether it
/// was killed (else it finished, and its stdout is returned).
fn run_and_kill(s: &Stowage, args: &[&str], rng: &mut Rng, window: Duration) -> Option<Value> {
    let mut child = spawn_quiet(s, args);
    std::thread::sleep(rng.below(window));
    match child.try_wait().expect("try_wait") {
        Some(_) => Some(finish(child, &format!("{args:?}"))),
        None => {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
            None
        }
    }
}

#[test]
fn kills_at_random_points_never_cost_a_snapshot() {
    const KILLS: usize = 54;
    let seed = std::env::var("STOWAGE_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill points from STOWAGE_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let s = Stowage::new();
    s.ok(&["init"]);
    let volumes = s.path("volumes");
    let spec = VolumeSpec::new(41, 8 << 20);
    let mut kept: Vec<Kept> = Vec::new();
    let (mut kills, mut backup_kills, mut prune_kills) = (0, 0, 0);
    let (mut backup_window, mut prune_window) =
        (Duration::from_millis(300), Duration::from_millis(100));

    let mut night = 0;
    while kills < KILLS {
        night += 1;
        assert!(night <= 40, "only {kills} kills in 40 nights");
        let root = generate(&spec.clone().at_night(night), &volumes)
            .expect("generate")
            .root;
        let volume = root.to_str().expect("utf-8").to_string();
        for _ in 0..3 {
            match run_and_kill(&s, &["backup", &volume, "--json"], &mut rng, backup_window) {
                None => {
                    kills += 1;
                    backup_kills += 1;
                    s.ok(&["check"]);
                    assert_all_restore(&s, &kept);
                }
                Some(out) => kept.push(kept_from(&out, &root)),
            }
        }
        let started = Instant::now();
        let (snap, _) = back_up(&s, &root);
        backup_window = started.elapsed().mul_f64(1.5) + Duration::from_millis(50);
        kept.push(snap);
        // Every pack the killed runs stored is indexed and used by this snapshot: none is
        // left unneeded or unindexed.
        let dry = prune_json(&s, &["--dry-run", "--grace", "0s"]);
        assert_eq!(count(&dry, "packs_marked"), 0, "night {night}: {dry}");

        // Keep the last two; prunes killed at random points, then one run to the end.
        s.ok(&["forget", "--keep-last", "2"]);
        let ids = snapshot_ids(&s);
        kept.retain(|k| ids.contains(&k.id));
        for _ in 0..2 {
            let prune = ["prune", "--grace", "0s", "--repack-unused", "10", "--json"];
            if run_and_kill(&s, &prune, &mut rng, prune_window).is_none() {
                kills += 1;
                prune_kills += 1;
                s.ok(&["check"]);
                assert_all_restore(&s, &kept);
            }
        }
        let started = Instant::now();
        prune_json(&s, &["--grace", "0s"]);
        prune_window = started.elapsed().mul_f64(1.5) + Duration::from_millis(50);
        // After a killed prune (say between its repack and its marks) a few more prunes may
        // be needed to settle the duplicates it left: they must settle.
        let settled = (0..4).any(|_| {
            let report = prune_json(&s, &["--grace", "0s"]);
            ["packs_marked", "packs_deleted", "packs_repacked"]
                .iter()
                .all(|field| count(&report, field) == 0)
        });
        assert!(settled, "night {night}: prune does not settle");
    }
    eprintln!("{kills} kills: {backup_kills} of backups, {prune_kills} of prunes, {night} nights");
    assert!(backup_kills >= 10 && prune_kills >= 10);
    s.ok(&["check", "--read-data"]);
    assert_all_restore(&s, &kept);
}
