//! The real `refrelay` binary over loopback: what it relays, to whom, and how it stops.
//!
//! Every wait is bounded by [`WAIT`] (socket read timeouts, channel receive timeouts); "nothing
//! else arrived" is proven with a barrier line from another client, never by sleeping.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(10);

/// A running refrelay, killed if a test ends without stopping it.
struct Relay {
    child: Option<Child>,
    addr: String,
}

impl Relay {
    fn start() -> Relay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_refrelay"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start refrelay");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // Owned before the wait, so a refrelay that never prints is still killed (Drop).
        let mut relay = Relay {
            child: Some(child),
            addr: String::new(),
        };
        let line = rx.recv_timeout(WAIT).expect("refrelay printed its address");
        relay.addr = line.trim().to_owned();
        relay
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status and stderr.
    fn terminate(mut self) -> (ExitStatus, String) {
        let child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(WAIT) {
            Ok(out) => {
                let out = out.unwrap();
                (
                    out.status,
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            Err(_) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                panic!("refrelay did not exit within {WAIT:?} of SIGTERM");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(relay: &Relay) -> Client {
        let stream = TcpStream::connect(&relay.addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    /// The next line, without its newline; fails after [`WAIT`].
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line in time");
        assert!(line.ends_with('\n'), "connection closed after {line:?}");
        line.trim_end_matches('\n').to_owned()
    }
}

/// Connects `n` clients, each proven registered: a newcomer's line reaches the first client.
fn room(relay: &Relay, n: usize) -> Vec<Client> {
    let mut clients = vec![Client::connect(relay)];
    for i in 1..n {
        let mut c = Client::connect(relay);
        c.send(&format!("joined {i}\n"));
        for seen in &mut clients {
            assert_eq!(seen.line(), format!("joined {i}"));
        }
        clients.push(c);
    }
    clients
}

#[test]
fn lines_reach_every_other_client_whole_and_never_the_sender() {
    let relay = Relay::start();
    let mut c = room(&relay, 3);
    // A line written in pieces goes out whole, once its newline has arrived; the rest waits.
    c[0].send("ab");
    c[0].send("c\nd");
    c[0].send("e\n");
    for i in [1, 2] {
        assert_eq!(c[i].line(), "abc");
        assert_eq!(c[i].line(), "de");
    }
    // A piece of a line is held back while another client's line goes out, so the two never
    // mix at a receiver. (By the time client 1's line is read, client 0's piece is in the
    // relay's socket queue, and the relay serves lower tokens first; without the hold-back the
    // receiver would see "halfsync".)
    c[0].send("half");
    c[1].send("sync\n");
    assert_eq!(c[2].line(), "sync");
    c[0].send(" done\n");
    assert_eq!(c[1].line(), "half done");
    assert_eq!(c[2].line(), "half done");
    // The sender got none of its own: the next line it sees is another client's.
    c[2].send("from 2\n");
    assert_eq!(c[0].line(), "sync");
    assert_eq!(c[0].line(), "from 2");
    assert_eq!(c[1].line(), "from 2");

    // A client leaving does not disturb the others.
    drop(c.pop());
    c[1].send("after\n");
    assert_eq!(c[0].line(), "after");

    let (status, stderr) = relay.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("0 receivers were closed"), "{stderr}");
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_refrelay"))
        .arg("--bogus")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
