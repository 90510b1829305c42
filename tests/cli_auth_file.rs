//! The principals file as `strata auth` writes it (the real binary): readable by its owner only
//! (mode 0600, whatever the umask), never written through a symlink at its temporary name, and
//! concurrent runs each read-modify-write it under the file's lock, so none loses another's
//! change.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::cli::auth_run as auth;
use std::{os::unix::fs::PermissionsExt, path::Path};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_file_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    auth(&file, &["add", "alice"]).ok();
    assert_eq!(mode(&file), 0o600, "after add");
    // A file made more open by hand is closed again by the next change.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    auth(&file, &["allow", "alice", "read", "topic:orders"]).ok();
    assert_eq!(mode(&file), 0o600, "after allow");
    auth(&file, &["add", "alice", "--rotate"]).ok();
    assert_eq!(mode(&file), 0o600, "after rotate");
    // What it leaves next to the file: the lock, no temporary files.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["principals.json", "principals.json.lock"]);
    assert_eq!(mode(&dir.path().join("principals.json.lock")), 0o600);
}

#[test]
fn a_symlink_at_the_old_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"untouched").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("principals.json.tmp")).unwrap();
    auth(&file, &["add", "alice"]).ok();
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
    assert!(auth(&file, &["list"]).ok().contains("alice"));
}

#[test]
fn concurrent_adds_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let runs: Vec<_> = (0..20)
        .map(|i| {
            let file = file.clone();
            std::thread::spawn(move || auth(&file, &["add", &format!("p{i}")]))
        })
        .collect();
    for run in runs {
        run.join().unwrap().ok();
    }
    let listed = auth(&file, &["list"]);
    let mut names: Vec<String> = listed.lines();
    names.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(mode(&file), 0o600);
}
