//! The MSRV (`rust-version` in the workspace's Cargo.toml) is stated by
//! every crate and true for the dependencies: none of the locked versions
//! needs a newer Rust. Only one toolchain is on our machines, so this and
//! clippy's `incompatible_msrv` (for our own code) are what keep it true.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn every_crate_states_the_msrv_and_no_dependency_needs_a_newer_rust() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let members: Vec<&Value> = meta["workspace_members"].as_array().expect("members").iter().collect();
    let packages = meta["packages"].as_array().expect("packages");

    let msrv_of = |p: &Value| p["rust_version"].as_str().map(version);
    let ours: Vec<&Value> = packages.iter().filter(|p| members.contains(&&p["id"])).collect();
    assert!(!ours.is_empty(), "no workspace member in cargo metadata");
    let msrv = msrv_of(ours[0]).expect("the workspace states an MSRV");
    for p in &ours {
        assert_eq!(
            msrv_of(p),
            Some(msrv),
            "{} must take the workspace's rust-version",
            p["name"]
        );
    }

    let newer: Vec<String> = packages
        .iter()
        .filter(|p| msrv_of(p).is_some_and(|v| v > msrv))
        .map(|p| format!("{} {} needs Rust {}", p["name"], p["version"], p["rust_version"]))
        .collect();
    assert!(
        newer.is_empty(),
        "locked versions that need a newer Rust than the MSRV {msrv:?} (pick an older \
         version, e.g. `cargo update -p NAME`, which prefers versions within the MSRV, \
         or raise rust-version):\n{}",
        newer.join("\n")
    );
}

/// `1.88` or `1.88.0` as `(1, 88, 0)`.
fn version(s: &str) -> (u64, u64, u64) {
    let mut parts = s.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
