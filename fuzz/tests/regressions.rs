//! Replays every committed fuzz input through its target's oracle, on stable and without
//! libFuzzer: `fuzz/seeds/<target>/*` (handpicked starting points) and
//! `fuzz/regressions/<target>/*` (inputs that once found a bug). Run with
//! `cargo test --manifest-path fuzz/Cargo.toml`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use groupchatd_fuzz::TARGETS;

#[test]
fn seeds_and_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let seeds = inputs(&root.join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for path in seeds
            .iter()
            .chain(&inputs(&root.join("regressions").join(target)))
        {
            let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            replayed += 1;
            if panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(
                    path.strip_prefix(root)
                        .unwrap_or(path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(failures.is_empty(), "failing inputs: {failures:#?}");
    eprintln!("replayed {replayed} inputs");
}

/// Every directory under seeds/ and regressions/ must belong to a target, so that a typo
/// cannot leave a regression unreplayed.
#[test]
fn every_input_directory_is_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in ["seeds", "regressions"] {
        for entry in fs::read_dir(root.join(kind)).expect(kind) {
            let name = entry.expect(kind).file_name();
            let name = name.to_string_lossy();
            assert!(
                name.starts_with('.') || TARGETS.iter().any(|(t, _)| *t == name),
                "{kind}/{name} is not a fuzz target"
            );
        }
    }
}

/// The files in `dir`, sorted; none if it does not exist. Dot files (such as `.gitkeep`) are
/// not inputs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a corpus directory").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}
