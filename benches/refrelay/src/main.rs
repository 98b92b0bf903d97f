//! refrelay: the floor a chat relay can reach, for benches/run.sh to compare groupchatd against.
//!
//! One thread, one mio poll. Each read (up to 64 KiB) from a connection is written to every other
//! connection with one write() each. No nicknames, no per-line work, no queues, no limits.
//! Two rules keep chatbench's accounting of it meaningful, at a cost per read, never per line:
//! - a read is forwarded up to its last newline and the rest kept for the next read (one
//!   `memrchr`): a line cut at a read boundary would otherwise interleave with another sender's
//!   bytes at every receiver and count as two lost lines;
//! - a write that would block (or is short) **closes that receiver**: dropping the write instead
//!   would cut lines out of its stream unseen, while a closed client shows in chatbench's
//!   `disconnected` count. The count is also printed on stderr at exit.
//!
//! Prints its bound address on stdout; exits 0 on SIGTERM or SIGINT (a signalfd in the poll).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use anyhow::Context;
use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{Backlog, listen};

/// Largest read, and the most bytes forwarded by one write().
const READ_MAX: usize = 64 * 1024;
/// Listen backlog. mio (like std) asks for 128; chatbench keeps 256 connects in flight, and a
/// connect past the backlog can end half-open for good when, as here, the server never speaks
/// first. groupchatd listens with a deep backlog too.
const BACKLOG: i32 = 4096;
/// Reads from one connection per readiness event before the others get a turn.
const READS_PER_TURN: usize = 16;
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

#[derive(Parser)]
#[command(
    name = "refrelay",
    version,
    about = "Reference relay: every read to every other client"
)]
struct Cli {
    /// Address to listen on; port 0 lets the kernel choose (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// One client: its socket and the bytes after the last newline of its previous reads.
struct Conn {
    stream: TcpStream,
    tail: Vec<u8>,
}

#[derive(Default)]
struct Relay {
    /// Indexed by token; a closed slot is reused by the next accept.
    conns: Vec<Option<Conn>>,
    /// Connections with data possibly left unread after their turn (mio is edge-triggered).
    unfinished: Vec<usize>,
    closed_on_full_socket: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Blocked before any other thread could exist, so only the signalfd sees them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("blocking SIGTERM")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(cli.listen).with_context(|| format!("{}", cli.listen))?;
    // A second listen() on a listening socket only changes its backlog.
    listen(&listener, Backlog::new(BACKLOG)?).context("raising the listen backlog")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let raw = signals.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&raw), SIGNALS, Interest::READABLE)?;
    println!("{}", listener.local_addr()?);

    let mut relay = Relay::default();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0; READ_MAX];
    loop {
        // Without leftovers, sleep until something happens; with them, only look for news.
        let timeout = (!relay.unfinished.is_empty()).then_some(std::time::Duration::ZERO);
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.context("poll")?,
        }
        let mut turn: Vec<usize> = std::mem::take(&mut relay.unfinished);
        for event in &events {
            match event.token() {
                LISTENER => relay.accept(&listener, &poll)?,
                SIGNALS => {
                    if signals.read_signal()?.is_some() {
                        eprintln!(
                            "refrelay: exiting; {} receivers were closed because their socket \
                             was full",
                            relay.closed_on_full_socket
                        );
                        return Ok(());
                    }
                }
                Token(i) => turn.push(i),
            }
        }
        turn.sort_unstable();
        turn.dedup();
        for i in turn {
            relay.serve(i, &mut buf, &poll);
        }
    }
}

impl Relay {
    fn accept(&mut self, listener: &TcpListener, poll: &Poll) -> io::Result<()> {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // Out of descriptors or a connection reset before accept: skip it, keep serving.
                Err(e) => {
                    eprintln!("refrelay: accept: {e}");
                    return Ok(());
                }
            };
            stream.set_nodelay(true)?;
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            poll.registry()
                .register(&mut stream, Token(slot), Interest::READABLE)?;
            let tail = Vec::new();
            self.conns[slot] = Some(Conn { stream, tail });
        }
    }

    /// Reads from connection `i` for one turn, forwarding each read.
    fn serve(&mut self, i: usize, buf: &mut [u8], poll: &Poll) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let kept = conn.tail.len();
            buf[..kept].copy_from_slice(&conn.tail);
            let n = match (&conn.stream).read(&mut buf[kept..]) {
                Ok(0) => return self.close(i, poll),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(i, poll),
            };
            let filled = kept + n;
            // Whole lines only; a buffer full of one endless line goes out as it is.
            let cut = match memchr::memrchr(b'\n', &buf[..filled]) {
                Some(nl) => nl + 1,
                None if filled == buf.len() => filled,
                None => 0,
            };
            conn.tail.clear();
            conn.tail.extend_from_slice(&buf[cut..filled]);
            if cut > 0 {
                self.forward(i, &buf[..cut], poll);
            }
        }
        self.unfinished.push(i);
    }

    /// One write() of `data` to every connection but `from`; closes those that cannot take it.
    fn forward(&mut self, from: usize, data: &[u8], poll: &Poll) {
        // (receiver, its socket was full rather than gone)
        let mut doomed = Vec::new();
        for (j, conn) in self.conns.iter().enumerate() {
            let Some(conn) = conn.as_ref().filter(|_| j != from) else {
                continue;
            };
            match (&conn.stream).write(data) {
                Ok(n) if n == data.len() => {}
                Ok(_) => doomed.push((j, true)),
                Err(e) => doomed.push((j, e.kind() == io::ErrorKind::WouldBlock)),
            }
        }
        for (j, full) in doomed {
            self.closed_on_full_socket += u64::from(full);
            self.close(j, poll);
        }
    }

    fn close(&mut self, i: usize, poll: &Poll) {
        if let Some(mut conn) = self.conns[i].take() {
            let _ = poll.registry().deregister(&mut conn.stream);
        }
    }
}
