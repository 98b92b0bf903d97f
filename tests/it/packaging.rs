//! Packaging: the man pages and completions the binaries generate, and the offline checks of the
//! systemd units, sysusers entry and install script (`packaging/check-units.sh`).

use std::path::Path;
use std::process::{Command, Output};

const DAEMON: &str = env!("CARGO_BIN_EXE_groupchatd");
const CHATCTL: &str = env!("CARGO_BIN_EXE_chatctl");
const SUBCOMMANDS: [&str; 8] = [
    "list", "kick", "announce", "rooms", "topic", "move", "stats", "reload",
];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("GROUPCHATD_SOCKET")
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// Runs `bin --generate kind`, asserts it succeeded quietly, and returns stdout.
fn generated(bin: &str, kind: &str) -> String {
    let out = run(bin, &["--generate", kind]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{bin} --generate {kind}: {stderr}"
    );
    assert!(
        stderr.is_empty(),
        "{bin} --generate {kind} wrote to stderr: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).expect("generated text is UTF-8");
    assert!(
        !stdout.trim().is_empty(),
        "{bin} --generate {kind} printed nothing"
    );
    stdout
}

#[test]
fn daemon_man_page_documents_files_signals_and_exit_status() {
    let page = generated(DAEMON, "man");
    for needle in [
        ".TH GROUPCHATD 8 ",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        "\\-\\-check\\-config",
        "/etc/groupchatd/groupchatd.toml",
        ".SH \"SIGNALS\"",
        "SIGHUP",
        "SIGTERM",
        ".SH \"EXIT STATUS\"",
        "\\fB78\\fR",
        "chatctl(1)",
    ] {
        assert!(
            page.contains(needle),
            "groupchatd(8) lacks {needle:?}:\n{page}"
        );
    }
}

#[test]
fn chatctl_man_page_documents_every_subcommand_and_exit_code() {
    let page = generated(CHATCTL, "man");
    assert!(page.contains(".TH CHATCTL 1 "), "{page}");
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("\\fBchatctl {sub} ")),
            "chatctl(1) lacks the {sub} subcommand:\n{page}"
        );
    }
    for code in ["0", "1", "2", "69", "77"] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "chatctl(1) lacks exit status {code}:\n{page}"
        );
    }
    assert!(page.contains("GROUPCHATD_SOCKET"), "{page}");
}

#[test]
fn chatctl_completions_offer_the_subcommands() {
    for kind in ["complete-bash", "complete-zsh", "complete-fish"] {
        let script = generated(CHATCTL, kind);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{kind} lacks {sub}:\n{script}");
        }
        assert!(
            !script.contains("generate"),
            "{kind} offers the hidden --generate flag"
        );
    }
    let bash = generated(CHATCTL, "complete-bash");
    assert!(bash.contains("complete -F _chatctl"), "{bash}");
}

#[test]
fn daemon_completions_are_generated() {
    for kind in ["complete-bash", "complete-zsh", "complete-fish"] {
        let script = generated(DAEMON, kind);
        assert!(script.contains("check-config"), "{kind}:\n{script}");
    }
}

#[test]
fn generate_comes_before_configuration_and_help_hides_it() {
    // A missing configuration file would exit 78; --generate never reads it.
    let out = run(
        DAEMON,
        &[
            "--config",
            "/nonexistent/groupchatd.toml",
            "--generate",
            "man",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    for bin in [DAEMON, CHATCTL] {
        let help = String::from_utf8(run(bin, &["--help"]).stdout).unwrap();
        assert!(!help.contains("generate"), "{bin} --help shows --generate");
    }
}

#[test]
fn chatctl_still_requires_a_subcommand_and_rejects_unknown_kinds() {
    for args in [
        &[][..],
        &["--json"],
        &["--generate", "bogus"],
        &["--generate"],
    ] {
        let out = run(CHATCTL, args);
        assert_eq!(out.status.code(), Some(2), "chatctl {args:?}");
        assert!(out.stdout.is_empty(), "chatctl {args:?} printed to stdout");
    }
}

#[test]
fn check_units_script_passes() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(DAEMON).parent().expect("binary directory");
    let out = Command::new("bash")
        .arg(root.join("packaging/check-units.sh"))
        .arg(bin_dir)
        .current_dir(root)
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-units.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}
