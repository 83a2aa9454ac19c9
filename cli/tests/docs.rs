//! Shell completions and man pages come from the command line's definition, so every
//! command is in them.

mod common;

use std::process::Command;

use common::Stowage;

#[test]
fn bash_completions_parse_and_know_every_command() {
    let s = Stowage::new();
    let script = s.ok(&["completions", "bash"]);
    let file = s.path("stowage.bash");
    std::fs::write(&file, &script).expect("write");
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .expect("run bash");
    assert!(parsed.success(), "bash -n failed on the completions");
    for command in ["backup", "restore", "repair", "key", "passwd"] {
        assert!(script.contains(command), "{command} missing");
    }
    for shell in ["zsh", "fish"] {
        assert!(s.ok(&["completions", shell]).contains("repair"), "{shell}");
    }
}

#[test]
fn man_pages_are_written_for_every_command() {
    let s = Stowage::new();
    let page = s.ok(&["man"]);
    assert!(page.contains(".TH stowage 1"), "{page}");
    let dir = s.path("man");
    s.ok(&["man", "--dir", dir.to_str().expect("utf-8")]);
    for name in [
        "stowage.1",
        "stowage-backup.1",
        "stowage-repair-index.1",
        "stowage-key-add.1",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(text.starts_with(".ie"), "{name}: {text:.80}");
    }
}
