//! `chatctl upgrade` against the real binary: connections move to a new process, and every way an
//! upgrade can fail leaves the old process serving.
//!
//! The new processes are descendants of the daemon each test starts; a [`Serving`] guard stops
//! whichever one serves at the end (by the PID the daemon reports), so nothing outlives a test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use crate::process::{DAEMON, Daemon, Scratch, admin_stats, chatctl};
use crate::support::audience::{Audience, Spec, connect, join};
use crate::support::{TestClient, WAIT};

/// Stops the process serving at the end of a test, whoever started it.
struct Serving {
    pid: u32,
}

impl Serving {
    fn of(socket: &Path) -> Serving {
        Serving {
            pid: serving_pid(socket),
        }
    }
}

/// The PID of the process serving the admin socket.
fn serving_pid(socket: &Path) -> u32 {
    admin_stats(socket)["pid"]
        .as_u64()
        .expect("stats has the pid") as u32
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }
}

/// Stops `daemon`'s line of processes: SIGTERM to the one serving, then waits for the log pipe
/// they share to close (every one of them has exited) and reaps the first.
fn stop(daemon: &mut Daemon, serving: &Serving) -> i32 {
    kill(Pid::from_raw(serving.pid as i32), Signal::SIGTERM).unwrap();
    daemon.wait_exit(WAIT)
}

/// Two copies of the daemon binary, so that each upgrade goes to another executable.
fn two_copies(dir: &Scratch) -> [PathBuf; 2] {
    ["a", "b"].map(|name| {
        let sub = dir.path(name);
        std::fs::create_dir_all(&sub).unwrap();
        let exe = sub.join("groupchatd");
        std::fs::copy(DAEMON, &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    })
}

fn upgrade(socket: &Path, args: &[&str]) -> crate::process::Ctl {
    let mut all = vec!["upgrade"];
    all.extend_from_slice(args);
    chatctl(socket, &all)
}

/// The pid in `upgraded: pid N (version V), …`.
fn new_pid(stdout: &str) -> u32 {
    stdout
        .strip_prefix("upgraded: pid ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected upgrade output {stdout:?}"))
}

/// Every client's id and nickname, as `chatctl list` shows them.
fn roster(socket: &Path) -> Vec<(u64, String)> {
    let out = chatctl(socket, &["--json", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut r: Vec<(u64, String)> = out.json()["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap(),
                c["nick"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_upgrades_under_load_drop_nobody_and_lose_nothing() {
    crate::support::raise_nofile_limit();
    let dir = Scratch::new("upg-load");
    let exes = two_copies(&dir);
    let mut d = Daemon::start_exe(&exes[0], &dir, "d", "flood_burst = 0\n", |_| {});
    let mut serving = Serving::of(&d.socket);
    // 200 clients: 180 listen, 20 send numbered lines at 5/s each (100 lines/s in all); every
    // one of them must get every line exactly once, in one common order.
    let aud = Audience::join(d.addr(), Spec::new(180, 20, 5.0)).await;
    // A typist whose lines straddle each hand-over, and a client that reads nothing until the end.
    let (mut typist_r, mut typist) = join(d.addr(), "typist").await;
    let sleeper = TcpSocket::new_v4().unwrap();
    sleeper.set_recv_buffer_size(4096).unwrap();
    let sleeper = tokio::time::timeout(WAIT, sleeper.connect(d.addr()))
        .await
        .unwrap()
        .unwrap();
    let (sleeper_r, mut sleeper_w) = sleeper.into_split();
    sleeper_w.write_all(b"sleeper\n").await.unwrap();
    aud.wait_notice("*** sleeper joined", WAIT).await;
    aud.wait_lines(50).await;
    let before = roster(&d.socket);
    assert_eq!(before.len(), 202);
    let queued = chatctl(&d.socket, &["--json", "list"]).json()["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["queued_bytes"].as_u64().unwrap_or(0))
        .max();
    eprintln!("most bytes queued for one client before the first upgrade: {queued:?}");

    let mut pauses = Vec::new();
    for i in 0..20 {
        typist
            .write_all(format!("half{i}").as_bytes())
            .await
            .unwrap();
        let exe = &exes[(i + 1) % 2];
        let out = upgrade(&d.socket, &["--binary", exe.to_str().unwrap()]);
        assert_eq!(out.code, 0, "upgrade {i}: {} {}", out.stdout, out.stderr);
        let pid = new_pid(&out.stdout);
        assert_ne!(pid, serving.pid, "upgrade {i} went to a new process");
        assert!(
            out.stdout.contains("202 connections handed over"),
            "{}",
            out.stdout
        );
        serving.pid = pid;
        typist.write_all(b"-line\n").await.unwrap();
        aud.wait_other(&format!("<typist> half{i}-line"), WAIT)
            .await;
        let event = d.log_line(&format!("new_pid={pid} new_version=\""));
        pauses.push(field(&event, "pause_ms"));
        aud.wait_lines(20).await;
    }
    eprintln!("relay pauses over 20 upgrades (ms): {pauses:?}");

    assert_eq!(
        roster(&d.socket),
        before,
        "same ids and nicknames after 20 upgrades"
    );
    let stats = admin_stats(&d.socket);
    assert_eq!(stats["upgrades"], 20);
    assert_eq!(stats["pid"].as_u64(), Some(u64::from(serving.pid)));

    // The sleeper kept everything queued for it: every typist line, in order, no disconnection.
    drop(sleeper_w);
    let mut got = Vec::new();
    let mut sleeper_r = sleeper_r;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(&got).contains("<typist> half19-line") {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, sleeper_r.read(&mut buf))
            .await
            .expect("the sleeper's queued lines within the bound")
            .unwrap();
        assert!(n > 0, "the sleeper was disconnected");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(got).unwrap();
    let typed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("<typist> "))
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("<typist> half{i}-line")).collect();
    assert_eq!(typed, want);
    assert!(!text.contains("too slow"), "{text}");

    typist.shutdown().await.unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(WAIT, typist_r.read_line(&mut rest)).await;
    let report = aud.finish().await;
    // Nobody left and nobody joined twice: the audience's own joins are the only join notices.
    let left: Vec<&String> = report
        .notices()
        .iter()
        .filter(|n| n.contains(" left ("))
        .filter(|n| !n.contains("typist") && !n.contains("sleeper"))
        .collect();
    assert!(left.is_empty(), "leave notices across upgrades: {left:?}");
    let mut joins: Vec<&String> = report
        .notices()
        .iter()
        .filter(|n| n.ends_with(" joined"))
        .collect();
    let all = joins.len();
    joins.sort();
    joins.dedup();
    assert_eq!(joins.len(), all, "someone was announced as joining twice");
    assert_eq!(stop(&mut d, &serving), 0);
}

/// The number after `name=` in a log line.
fn field(line: &str, name: &str) -> f64 {
    let at = line.find(&format!("{name}=")).expect("field present") + name.len() + 1;
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

/// A client that must keep chatting whatever happens to an upgrade.
struct Pair {
    _a_r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    a: tokio::net::tcp::OwnedWriteHalf,
    b_r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    _b: tokio::net::tcp::OwnedWriteHalf,
}

impl Pair {
    async fn join(d: &Daemon) -> Pair {
        let (mut a_r, a) = join(d.addr(), "alice").await;
        let (b_r, b) = join(d.addr(), "bob").await;
        let mut line = String::new();
        tokio::time::timeout(WAIT, a_r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line, "*** bob joined\r\n");
        Pair {
            _a_r: a_r,
            a,
            b_r,
            _b: b,
        }
    }

    /// alice finishes the line she started, and bob gets it whole.
    async fn relays(&mut self, tail: &str, expect: &str) {
        self.a.write_all(tail.as_bytes()).await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.b_r.read_line(&mut line))
            .await
            .expect("relayed within the bound")
            .unwrap();
        assert_eq!(line, format!("{expect}\r\n"));
    }
}

#[tokio::test]
async fn each_failed_upgrade_rolls_back_and_the_old_process_serves_on() {
    let dir = Scratch::new("upg-fail");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 0\n");
    let serving = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    let script = |name: &str, body: &str, mode: u32| {
        let p = dir.file(name, body);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let crashes = script("crashes.sh", "#!/bin/sh\nexit 3\n", 0o755);
    let hangs = script("hangs.sh", "#!/bin/sh\nexec sleep 30\n", 0o755);
    let not_exec = script("plain", "#!/bin/sh\nexit 0\n", 0o644);
    let cases: [(&str, Vec<String>, &str); 4] = [
        (
            "missing",
            vec!["--binary".into(), dir.path("nope").display().to_string()],
            "cannot start",
        ),
        (
            "not executable",
            vec!["--binary".into(), not_exec.display().to_string()],
            "cannot start",
        ),
        (
            "crashes",
            vec!["--binary".into(), crashes.display().to_string()],
            "exited before it was ready",
        ),
        (
            "hangs",
            vec![
                "--binary".into(),
                hangs.display().to_string(),
                "--ready-timeout".into(),
                "1".into(),
            ],
            "not ready within 1 s",
        ),
    ];
    for (i, (case, args, why)) in cases.iter().enumerate() {
        pair.a
            .write_all(format!("before-{i} ").as_bytes())
            .await
            .unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = upgrade(&d.socket, &args);
        assert_eq!(out.code, 1, "{case}: {} {}", out.stdout, out.stderr);
        assert!(out.stderr.contains(why), "{case}: {}", out.stderr);
        assert_eq!(serving_pid(&d.socket), serving.pid, "{case}");
        pair.relays(
            &format!("after {case}\n"),
            &format!("<alice> before-{i} after {case}"),
        )
        .await;
    }

    // The new process refuses the configuration (the file went bad since the start).
    let cfg = dir.path("d.toml");
    std::fs::write(&cfg, "flood_burst = -1\n").unwrap();
    pair.a.write_all(b"before-config ").await.unwrap();
    let out = upgrade(&d.socket, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("refused") && out.stderr.contains("flood_burst"),
        "{}",
        out.stderr
    );
    std::fs::write(&cfg, "flood_burst = 0\n").unwrap();
    pair.relays("after config\n", "<alice> before-config after config")
        .await;
    d.log_line("event=\"upgrade_rollback\"");

    // And after all that, a real upgrade still works, with the half-typed line intact.
    pair.a.write_all(b"before-real ").await.unwrap();
    let out = upgrade(&d.socket, &[]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let serving = Serving {
        pid: new_pid(&out.stdout),
    };
    pair.relays("after real\n", "<alice> before-real after real")
        .await;
    assert_eq!(stop(&mut d, &serving), 0);
}

#[tokio::test]
async fn a_snapshot_version_the_new_process_does_not_read_is_refused() {
    let dir = Scratch::new("upg-version");
    // Debug builds only: the old process writes snapshot version 999.
    let mut d = Daemon::start_with(&dir, "d", "flood_burst = 0\n", |cmd| {
        cmd.env("GROUPCHATD_TEST_SNAPSHOT_VERSION", "999");
    });
    let serving = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    pair.a.write_all(b"typed ").await.unwrap();
    let out = upgrade(&d.socket, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("snapshot version 999"),
        "{}",
        out.stderr
    );
    pair.relays("on\n", "<alice> typed on").await;
    assert_eq!(serving_pid(&d.socket), serving.pid);
    assert_eq!(stop(&mut d, &serving), 0);
}

#[tokio::test]
async fn sigusr2_upgrades_without_a_reply_and_connections_wait_in_the_backlog() {
    let dir = Scratch::new("upg-usr2");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 0\n");
    let old = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    d.signal(Signal::SIGUSR2);
    let line = d.log_line("event=\"upgrade\"");
    let new = Serving {
        pid: field(&line, "new_pid") as u32,
    };
    assert_ne!(new.pid, old.pid);
    std::mem::forget(old);
    pair.relays("after usr2\n", "<alice> after usr2").await;
    // A newcomer is served by the new process.
    let c = connect(d.addr()).await;
    let mut r = BufReader::new(c);
    let mut first = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with("*** "), "{first:?}");
    assert_eq!(admin_stats(&d.socket)["upgrades"], 1);
    assert_eq!(stop(&mut d, &new), 0);
}

/// Set by the script below in the environment of a fake successor (this test binary run again).
const FAKE_SUCCESSOR: &str = "GROUPCHATD_TEST_FAKE_SUCCESSOR";

/// Not a test of its own: run by [`a_successor_that_hangs_after_hello_is_rolled_back_in_time`]
/// as the "new binary", it says hello on the upgrade link and then reads nothing (bounded).
#[test]
fn fake_successor_hangs_after_hello() {
    if std::env::var_os(FAKE_SUCCESSOR).is_none() {
        return;
    }
    let fd: i32 = std::env::var("GROUPCHATD_UPGRADE_FD")
        .unwrap()
        .parse()
        .unwrap();
    // It claims to read this release's snapshot version, so the old process goes on to send one.
    let hello = format!(
        "H{{\"pid\":{},\"version\":\"0.0.0-hang\",\"reads\":[1,2]}}",
        std::process::id()
    );
    nix::sys::socket::send(fd, hello.as_bytes(), nix::sys::socket::MsgFlags::empty()).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn a_successor_that_hangs_after_hello_is_rolled_back_in_time() {
    let dir = Scratch::new("upg-hang-hello");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 0\nmax_queue_bytes = 8000000\n");
    let serving = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    // A client that reads nothing, so the snapshot carries a few megabytes owed to it: more than
    // the upgrade link's socket buffer holds while the successor reads nothing.
    let sleeper = TcpSocket::new_v4().unwrap();
    sleeper.set_recv_buffer_size(4096).unwrap();
    let sleeper = tokio::time::timeout(WAIT, sleeper.connect(d.addr()))
        .await
        .unwrap()
        .unwrap();
    let (_sleeper_r, mut sleeper_w) = sleeper.into_split();
    sleeper_w.write_all(b"sleeper\n").await.unwrap();
    let line = format!("{}\n", "x".repeat(1000));
    let queued = |socket: &Path| -> u64 {
        chatctl(socket, &["--json", "list"]).json()["result"]["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["nick"] == "sleeper")
            .map(|c| c["queued_bytes"].as_u64().unwrap())
            .sum()
    };
    // Bounded: rounds of 1 MB until the kernel's buffers are full and a megabyte is queued.
    for round in 0..20 {
        for _ in 0..1000 {
            pair.a.write_all(line.as_bytes()).await.unwrap();
        }
        let end = format!("end of round {round}");
        pair.a
            .write_all(format!("{end}\n").as_bytes())
            .await
            .unwrap();
        let mut got = String::new();
        // Bounded: bob reads alice's lines (wrapped into rows) until the last one.
        for _ in 0..100_000 {
            got.clear();
            tokio::time::timeout(WAIT, pair.b_r.read_line(&mut got))
                .await
                .unwrap()
                .unwrap();
            if got.contains(&end) {
                break;
            }
        }
        assert_eq!(got, format!("<alice> {end}\r\n"));
        if queued(&d.socket) > 1_000_000 {
            break;
        }
    }
    assert!(queued(&d.socket) > 1_000_000);
    let fake = hanging_successor(&dir);
    let started = std::time::Instant::now();
    pair.a.write_all(b"before ").await.unwrap();
    let out = upgrade(
        &d.socket,
        &["--binary", fake.to_str().unwrap(), "--ready-timeout", "2"],
    );
    assert_eq!(out.code, 1, "{} {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not ready within"), "{}", out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    pair.relays("after\n", "<alice> before after").await;
    assert_eq!(serving_pid(&d.socket), serving.pid);
    assert_eq!(stop(&mut d, &serving), 0);
}

#[tokio::test]
async fn a_kick_during_an_upgrade_is_never_reported_done_and_then_lost() {
    use std::io::{BufRead, Write};
    let dir = Scratch::new("upg-kick");
    // Debug builds only: each new process waits before it says ready.
    let mut d = Daemon::start_with(&dir, "d", "flood_burst = 0\n", |cmd| {
        cmd.env("GROUPCHATD_TEST_READY_DELAY_MS", "1500");
    });
    let mut pair = Pair::join(&d).await;
    // An admin connection made before the upgrade (a script that keeps one open).
    let admin = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    admin.set_read_timeout(Some(WAIT)).unwrap();
    (&admin).write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
    let mut reader = std::io::BufReader::new(&admin);
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let socket = d.socket.clone();
    let upgrading = std::thread::spawn(move || upgrade(&socket, &[]));
    // The new process has everything and is about to say ready: the room is frozen.
    d.log_line("upgrade: test delay before ready");
    (&admin)
        .write_all(b"{\"cmd\":\"kick\",\"target\":\"bob\"}\n{\"cmd\":\"announce\",\"text\":\"hello all\"}\n")
        .unwrap();
    let out = upgrading.join().unwrap();
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let serving = Serving {
        pid: new_pid(&out.stdout),
    };
    let mut replies = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut replies);
    let kicked = replies
        .lines()
        .next()
        .is_some_and(|r| r.contains("\"ok\":true"));
    let bob_here = roster(&d.socket).iter().any(|(_, n)| n == "bob");
    assert!(
        kicked != bob_here,
        "kick replied {replies:?}, yet bob is still here: {bob_here}"
    );
    pair.relays("still here\n", "<alice> still here").await;
    assert_eq!(stop(&mut d, &serving), 0);
}

/// The script that runs [`fake_successor_hangs_after_hello`] as the "new binary".
fn hanging_successor(dir: &Scratch) -> PathBuf {
    let fake = dir.file(
        "hangs-after-hello.sh",
        &format!(
            "#!/bin/sh\n{FAKE_SUCCESSOR}=1 exec '{}' --exact upgrade::fake_successor_hangs_after_hello --nocapture --test-threads 1\n",
            std::env::current_exe().unwrap().display()
        ),
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

#[tokio::test]
async fn a_request_whose_caller_gave_up_during_an_upgrade_is_not_carried_out() {
    use std::io::Write;
    let dir = Scratch::new("upg-gave-up");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 0\n");
    let serving = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    let fake = hanging_successor(&dir);
    let socket = d.socket.clone();
    let upgrading = std::thread::spawn(move || {
        upgrade(
            &socket,
            &["--binary", fake.to_str().unwrap(), "--ready-timeout", "3"],
        )
    });
    // While the upgrade is under way (the fake says hello at once): a caller asks for a kick and
    // gives up before any reply (chatctl's own timeout), as chatctl does when it exits.
    d.log_line("upgrade: starting the new binary");
    let admin = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    (&admin)
        .write_all(b"{\"cmd\":\"kick\",\"target\":\"bob\"}\n")
        .unwrap();
    drop(admin);
    let out = upgrading.join().unwrap();
    assert_eq!(out.code, 1, "{} {}", out.stdout, out.stderr);
    // The rolled-back daemon serves on, and the kick nobody waits for any more was not done.
    pair.relays("still\n", "<alice> still").await;
    assert!(
        roster(&d.socket).iter().any(|(_, n)| n == "bob"),
        "bob was kicked by a request whose caller had given up"
    );
    assert_eq!(stop(&mut d, &serving), 0);
}

/// Reads `r` until EOF (bounded), returning what came.
async fn read_to_end(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut all = String::new();
    let _ = tokio::time::timeout(WAIT, r.read_to_string(&mut all)).await;
    all
}

#[tokio::test]
async fn a_stop_during_an_upgrade_stops_gracefully() {
    // Debug builds only: each new process waits before it says ready.
    let slow = |cmd: &mut std::process::Command| {
        cmd.env("GROUPCHATD_TEST_READY_DELAY_MS", "1500");
    };
    // SIGTERM while `chatctl upgrade` runs, and while a SIGUSR2 upgrade runs.
    for by_signal in [false, true] {
        let dir = Scratch::new(if by_signal {
            "upg-term-usr2"
        } else {
            "upg-term-ctl"
        });
        let mut d = Daemon::start_with(&dir, "d", "flood_burst = 0\n", slow);
        let old = Serving::of(&d.socket);
        let mut pair = Pair::join(&d).await;
        pair.a.write_all(b"sent before the stop\n").await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(WAIT, pair.b_r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        let upgrading = if by_signal {
            d.signal(Signal::SIGUSR2);
            None
        } else {
            let socket = d.socket.clone();
            Some(std::thread::spawn(move || upgrade(&socket, &[])))
        };
        d.log_line("upgrade: test delay before ready");
        d.signal(Signal::SIGTERM);
        // The stop wins: the upgrade is called off, everyone hears the shutdown notice, and the
        // daemon exits 0 with no successor left serving.
        let rest = read_to_end(&mut pair.b_r).await;
        let successor = std::os::unix::net::UnixStream::connect(&d.socket)
            .is_ok()
            .then(|| Serving::of(&d.socket));
        assert!(
            successor.is_none(),
            "by_signal={by_signal}: a successor serves on"
        );
        assert!(
            rest.contains("*** server shutting down"),
            "by_signal={by_signal}: {rest:?}"
        );
        assert_eq!(d.wait_exit(WAIT), 0);
        if let Some(u) = upgrading {
            assert_ne!(u.join().unwrap().code, 0);
        }
        drop(old);
    }
}

#[tokio::test]
async fn the_default_binary_is_the_path_started_from_not_where_it_pointed() {
    let dir = Scratch::new("upg-symlink");
    let exes = two_copies(&dir);
    // Started through a link that a deployment later switches to the new version (alternatives,
    // a `current` link).
    let link = dir.path("groupchatd");
    std::os::unix::fs::symlink(&exes[0], &link).unwrap();
    let mut d = Daemon::start_exe(&link, &dir, "d", "flood_burst = 0\n", |_| {});
    let old = Serving::of(&d.socket);
    let mut pair = Pair::join(&d).await;
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&exes[1], &link).unwrap();
    let out = upgrade(&d.socket, &[]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    std::mem::forget(old);
    let serving = Serving {
        pid: new_pid(&out.stdout),
    };
    let running = std::fs::read_link(format!("/proc/{}/exe", serving.pid)).unwrap();
    assert_eq!(running, exes[1], "the upgrade ran the old version again");
    pair.relays("on\n", "<alice> on").await;
    assert_eq!(stop(&mut d, &serving), 0);
}

/// Connects and joins as `nick`, consuming the greeting and the welcome (not any history).
async fn chatter(d: &Daemon, nick: &str) -> TestClient {
    let mut c = TestClient::connect(d.addr()).await;
    c.read_until_line("*** Choose a nickname:").await;
    c.send(nick).await;
    c.read_until_line("*** Type /help for commands.").await;
    c
}

/// Skips lines until one starts with `prefix`; returns it.
async fn until_prefix(c: &mut TestClient, prefix: &str) -> String {
    loop {
        let line = c.line().await;
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// `/join room`; returns the line saying so (its topic and who is there).
async fn enter(c: &mut TestClient, room: &str) -> String {
    c.send(&format!("/join {room}")).await;
    until_prefix(c, &format!("*** Now in {room} (")).await
}

/// A history replay, which must come next: its opening fence and its lines without their
/// `[HH:MM] ` stamps (date lines, from a test run across midnight UTC, left out).
async fn history(c: &mut TestClient) -> (String, Vec<String>) {
    let fence = c.line().await;
    assert!(fence.starts_with("*** History of "), "{fence:?}");
    let mut lines = Vec::new();
    loop {
        let line = c.line().await;
        if line == "*** End of history." {
            return (fence, lines);
        }
        if line.starts_with("*** 20") {
            continue;
        }
        let (stamp, text) = line.split_at_checked(8).unwrap_or(("", ""));
        let digits = stamp.bytes().filter(u8::is_ascii_digit).count();
        assert!(
            stamp.starts_with('[') && stamp.ends_with("] ") && &stamp[3..4] == ":" && digits == 4,
            "not a history line: {line:?}"
        );
        lines.push(text.to_owned());
    }
}

/// `/rooms`, as its lines.
async fn room_list(c: &mut TestClient) -> Vec<String> {
    c.send("/rooms").await;
    let head = loop {
        let line = c.line().await;
        if line.ends_with(" (/join NAME to enter one):") {
            break line;
        }
    };
    let n: usize = head
        .strip_prefix("*** ")
        .and_then(|h| h.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{head:?}"));
    let mut lines = vec![head];
    for _ in 0..n {
        lines.push(c.line().await);
    }
    lines
}

/// Runs `chatctl upgrade` and returns the new process, which serves from now on.
fn upgraded(socket: &Path, old: Serving) -> Serving {
    let out = upgrade(socket, &[]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    std::mem::forget(old);
    Serving {
        pid: new_pid(&out.stdout),
    }
}

#[tokio::test]
async fn rooms_topics_and_history_move_with_the_upgrade() {
    let dir = Scratch::new("upg-rooms");
    let mut d = Daemon::start(&dir, "d", "flood_burst = 0\n");
    let old = Serving::of(&d.socket);
    // ann and bob in #x (made by ann's /join), with a topic and two lines; cat in #lobby.
    let mut ann = chatter(&d, "ann").await;
    let mut bob = chatter(&d, "bob").await;
    let mut cat = chatter(&d, "cat").await;
    enter(&mut ann, "#x").await;
    enter(&mut bob, "#x").await;
    ann.send("/topic Treasure maps").await;
    ann.read_until_line("*** ann set the topic: Treasure maps")
        .await;
    bob.read_until_line("*** ann set the topic: Treasure maps")
        .await;
    ann.send("hello x").await;
    bob.expect("<ann> hello x").await;
    cat.send("hello lobby").await;
    cat.send("/topic").await;
    cat.read_until_line("*** #lobby has no topic; /topic TEXT sets one.")
        .await;

    let serving = upgraded(&d.socket, old);

    // Everyone is where they were, and nobody was told of any leave or join: bob's line is the
    // very next thing ann gets, and it does not reach cat in #lobby (his reply comes first).
    bob.send("after the upgrade").await;
    ann.expect("<bob> after the upgrade").await;
    cat.send("/topic").await;
    cat.expect("*** #lobby has no topic; /topic TEXT sets one.")
        .await;
    ann.send("/topic").await;
    ann.expect("*** Topic of #x: Treasure maps").await;
    // A newcomer gets each room's history, said before and after the upgrade.
    let mut dan = chatter(&d, "dan").await;
    let (fence, said) = history(&mut dan).await;
    assert_eq!(fence, "*** History of #lobby: the last line (times UTC)");
    assert_eq!(said, ["<cat> hello lobby"]);
    let now_in = enter(&mut dan, "#x").await;
    assert!(
        now_in.starts_with("*** Now in #x (topic: Treasure maps). "),
        "{now_in}"
    );
    let (fence, said) = history(&mut dan).await;
    assert_eq!(fence, "*** History of #x: the last 2 lines (times UTC)");
    assert_eq!(said, ["<ann> hello x", "<bob> after the upgrade"]);
    assert_eq!(
        room_list(&mut dan).await,
        [
            "*** 2 rooms (/join NAME to enter one):",
            "*** #lobby (1)",
            "*** #x (3, you are here): Treasure maps",
        ]
    );
    assert_eq!(stop(&mut d, &serving), 0);
}

#[tokio::test]
async fn a_version_1_snapshot_seats_everyone_in_the_default_room() {
    let dir = Scratch::new("upg-v1");
    // Debug builds only: the old process writes snapshot version 1, which has no rooms.
    let mut d = Daemon::start_with(&dir, "d", "flood_burst = 0\n", |cmd| {
        cmd.env("GROUPCHATD_TEST_SNAPSHOT_VERSION", "1");
    });
    let old = Serving::of(&d.socket);
    let mut ann = chatter(&d, "ann").await;
    let mut bob = chatter(&d, "bob").await;
    enter(&mut ann, "#x").await;
    bob.expect("*** ann left (moved to #x)").await;
    let serving = upgraded(&d.socket, old);
    assert_eq!(
        room_list(&mut ann).await,
        [
            "*** 1 room (/join NAME to enter one):",
            "*** #lobby (2, you are here)",
        ]
    );
    ann.send("back in the lobby").await;
    bob.expect("<ann> back in the lobby").await;
    assert_eq!(stop(&mut d, &serving), 0);
}

/// Needs the configuration branch (`[[rooms]]` in the file).
#[tokio::test]
async fn a_predefined_room_moves_with_the_upgrade_and_outlives_its_configuration() {
    let dir = Scratch::new("upg-predef");
    let config = "flood_burst = 0\n\n[[rooms]]\nname = \"help\"\ntopic = \"Ask here\"\n";
    let mut d = Daemon::start(&dir, "d", config);
    let old = Serving::of(&d.socket);
    // Three rooms: cat in #lobby (the default), bob in #help (predefined), ann in #x (hers).
    let mut ann = chatter(&d, "ann").await;
    let mut bob = chatter(&d, "bob").await;
    let mut cat = chatter(&d, "cat").await;
    enter(&mut ann, "#x").await;
    let now_in = enter(&mut bob, "#help").await;
    assert!(
        now_in.starts_with("*** Now in #help (topic: Ask here). "),
        "{now_in}"
    );
    bob.send("/topic Ask anything").await;
    bob.read_until_line("*** bob set the topic: Ask anything")
        .await;
    bob.send("how do I upgrade").await;
    ann.send("x marks the spot").await;
    // Their replies show both lines were taken before the upgrade.
    ann.send("/topic").await;
    ann.read_until_line("*** #x has no topic; /topic TEXT sets one.")
        .await;
    bob.send("/topic").await;
    bob.read_until_line("*** Topic of #help: Ask anything")
        .await;
    cat.read_until_line("*** bob left (moved to #help)").await;

    // The same configuration: bob's topic stands (the configuration's did not change).
    let serving = upgraded(&d.socket, old);
    bob.send("/topic").await;
    bob.expect("*** Topic of #help: Ask anything").await;
    cat.send("/topic").await;
    cat.expect("*** #lobby has no topic; /topic TEXT sets one.")
        .await;
    let mut dan = chatter(&d, "dan").await;
    enter(&mut dan, "#help").await;
    let (_, said) = history(&mut dan).await;
    assert_eq!(said, ["<bob> how do I upgrade"]);
    bob.expect("*** dan joined").await;
    dan.send("like this").await;
    bob.expect("<dan> like this").await;
    enter(&mut dan, "#x").await;
    let (_, said) = history(&mut dan).await;
    assert_eq!(said, ["<ann> x marks the spot"]);
    bob.expect("*** dan left (moved to #x)").await;
    assert_eq!(
        room_list(&mut dan).await,
        [
            "*** 3 rooms (/join NAME to enter one):",
            "*** #help (1): Ask anything",
            "*** #lobby (1)",
            "*** #x (2, you are here)",
        ]
    );

    // A configuration without #help: it stays while bob is in it, as a room users made, and
    // goes when he leaves.
    std::fs::write(dir.path("d.toml"), "flood_burst = 0\n").unwrap();
    let serving = upgraded(&d.socket, serving);
    let kept = d.log_line("event=\"room_kept\"");
    assert!(kept.contains("room=#help"), "{kept}");
    bob.send("/topic").await;
    bob.expect("*** Topic of #help: Ask anything").await;
    bob.send("/part").await;
    until_prefix(&mut bob, "*** Now in #lobby (").await;
    assert_eq!(
        room_list(&mut bob).await,
        [
            "*** 2 rooms (/join NAME to enter one):",
            "*** #lobby (2, you are here)",
            "*** #x (2)",
        ]
    );
    assert_eq!(stop(&mut d, &serving), 0);
}

#[tokio::test]
async fn the_http_port_moves_with_the_upgrade() {
    use crate::support::http::{Format, get, parse_exposition};
    let dir = Scratch::new("upg-http");
    let mut d = Daemon::start(&dir, "d", "http_listen = [\"127.0.0.1:0\"]\n");
    let old = Serving::of(&d.socket);
    let http = d.http_addr();
    assert_eq!(get(http, "/healthz").await.status, 200);

    let serving = upgraded(&d.socket, old);

    // The same port, bound all along (its own config says port 0, so a new bind would have
    // got another), now answered by the new process: only it counts the upgrade.
    let line = format!("listening for HTTP connections addr={http}");
    d.log_count(&line, 2, WAIT);
    let health = get(http, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let metrics = get(http, "/metrics").await;
    let m = parse_exposition(&metrics.body, Format::Prometheus).unwrap();
    assert_eq!(m.expect("groupchatd_upgrades_total", &[]), 1.0);
    assert_eq!(
        admin_stats(&d.socket)["pid"].as_u64(),
        Some(u64::from(serving.pid))
    );
    assert_eq!(stop(&mut d, &serving), 0);
}
