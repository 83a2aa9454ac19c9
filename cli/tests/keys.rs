//! Key files and passwords: several passwords open one repository; one is added, changed or
//! removed without touching the data; the last one and the one in use are never removed; a
//! password may come from a command.

mod common;

use serde_json::Value;

use common::Stowage;

const WRONG_PASSWORD: i32 = 12;

fn keys(s: &Stowage) -> Vec<Value> {
    s.json(&["key", "list", "--json"])
        .as_array()
        .expect("a JSON array")
        .clone()
}

/// `s` with another password.
fn with_password(s: &Stowage, password: &str) -> std::process::Command {
    let mut command = s.command(&[]);
    command.env("STOWAGE_PASSWORD", password);
    command
}

fn run_with(s: &Stowage, password: &str, args: &[&str]) -> std::process::Output {
    with_password(s, password)
        .args(args)
        .output()
        .expect("run stowage")
}

#[test]
fn passwords_are_added_changed_and_removed_but_never_the_last_or_the_one_in_use() {
    let s = Stowage::new();
    let init = s.run(&["init"]);
    assert!(init.status.success());
    let warned = String::from_utf8_lossy(&init.stderr);
    assert!(warned.contains("keep the password safe"), "{warned}");

    let listed = keys(&s);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], Value::Bool(true));
    assert!(listed[0]["created"].is_string() && listed[0]["host"].is_string());
    let first = listed[0]["id"].as_str().expect("id").to_string();

    // A second password opens it too; the listing marks the key in use.
    let second_file = s.path("second");
    std::fs::write(&second_file, "second password\n").expect("write");
    s.ok(&[
        "key",
        "add",
        "--new-password-file",
        second_file.to_str().expect("utf-8"),
    ]);
    let out = run_with(&s, "second password", &["key", "list", "--json"]);
    assert!(out.status.success());
    let listed: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone();
    assert_eq!(listed.len(), 2);
    let current: Vec<&str> = listed
        .iter()
        .filter(|k| k["current"] == Value::Bool(true))
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(current.len(), 1);
    assert_ne!(current[0], first);

    // The key in use is refused; from the other password, the first key goes, and the
    // first password no longer opens the repository (exit 12).
    let refused = s.fails(&["key", "remove", &first[..8]]);
    assert!(refused.contains("opened the repository"), "{refused}");
    let removed = run_with(&s, "second password", &["key", "remove", &first[..8]]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(s.run(&["snapshots"]).status.code(), Some(WRONG_PASSWORD));

    // The last key is the one in use: refused.
    let last = run_with(&s, "second password", &["key", "remove", current[0]]);
    assert!(!last.status.success());
    assert_eq!(keys_with(&s, "second password").len(), 1);

    // passwd replaces the key in use: the old password stops working, the new one opens.
    let third_file = s.path("third");
    std::fs::write(&third_file, "third password\n").expect("write");
    let changed = run_with(
        &s,
        "second password",
        &[
            "key",
            "passwd",
            "--new-password-file",
            third_file.to_str().expect("utf-8"),
        ],
    );
    assert!(
        changed.status.success(),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert_eq!(
        run_with(&s, "second password", &["snapshots"])
            .status
            .code(),
        Some(WRONG_PASSWORD)
    );
    assert_eq!(keys_with(&s, "third password").len(), 1);
}

fn keys_with(s: &Stowage, password: &str) -> Vec<Value> {
    let out = run_with(s, password, &["key", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn the_password_may_come_from_a_command_and_a_failing_command_is_named() {
    let s = Stowage::new();
    s.ok(&["init"]);
    let secret = s.path("secret");
    std::fs::write(&secret, format!("{}\nsecond line\n", s.password)).expect("write");
    let from_command = |command: &str| {
        s.command(&["snapshots", "--json"])
            .env_remove("STOWAGE_PASSWORD")
            .env("STOWAGE_PASSWORD_COMMAND", command)
            .output()
            .expect("run stowage")
    };
    let out = from_command(&format!("cat {}", secret.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = from_command("exit 7");
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("password command") && said.contains("exit 7"),
        "{said}"
    );

    let out = from_command("echo wrong");
    assert_eq!(out.status.code(), Some(WRONG_PASSWORD));
}
