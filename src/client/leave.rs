//! Why a client leaves, and how its connection ends: the words others see in `*** alice left (…)`
//! and whether what is still queued for it is delivered first.

/// Why a client left the room. Its `Display` is the text others see in `*** alice left (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client sent `/quit`, with an optional reason.
    Quit(Option<String>),
    /// The peer closed or reset the connection.
    Closed,
    /// An operator kicked the client, with an optional reason.
    Kicked(Option<String>),
    /// The client's send queue overflowed.
    QueueFull,
    /// The client's socket accepted nothing for the write timeout.
    WriteTimeout,
    /// No line from the client within the idle timeout.
    Idle,
    /// No valid nickname within the handshake timeout.
    HandshakeTimeout,
    /// The daemon is stopping.
    ShuttingDown,
    /// The daemon is upgrading and cannot hand this connection over (a TLS or WebSocket client).
    Upgrading,
    /// A WebSocket client sent nothing, not even an answer to a ping, for two ping intervals.
    PingTimeout,
}

impl LeaveReason {
    /// A short stable word for logs and metrics (`reason=kicked`).
    pub fn kind(&self) -> &'static str {
        match self {
            LeaveReason::Quit(_) => "quit",
            LeaveReason::Closed => "closed",
            LeaveReason::Kicked(_) => "kicked",
            LeaveReason::QueueFull | LeaveReason::WriteTimeout => "too_slow",
            LeaveReason::Idle => "idle",
            LeaveReason::HandshakeTimeout => "handshake_timeout",
            LeaveReason::ShuttingDown => "shutdown",
            LeaveReason::Upgrading => "upgrade",
            LeaveReason::PingTimeout => "ping_timeout",
        }
    }
}

impl std::fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaveReason::Quit(None) => f.write_str("quit"),
            LeaveReason::Quit(Some(r)) => write!(f, "quit: {r}"),
            LeaveReason::Closed => f.write_str("connection closed"),
            LeaveReason::Kicked(None) => f.write_str("kicked"),
            LeaveReason::Kicked(Some(r)) => write!(f, "kicked: {r}"),
            LeaveReason::QueueFull => f.write_str("too slow: send queue full"),
            LeaveReason::WriteTimeout => f.write_str("too slow: write timeout"),
            LeaveReason::Idle => f.write_str("idle timeout"),
            LeaveReason::HandshakeTimeout => f.write_str("no nickname in time"),
            LeaveReason::ShuttingDown => f.write_str("server shutting down"),
            LeaveReason::Upgrading => f.write_str("server upgrading"),
            LeaveReason::PingTimeout => f.write_str("no answer to pings"),
        }
    }
}

/// How the session should end once its outbox is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// Deliver what is queued (a kick notice, a goodbye, the shutdown line), then close.
    Flush(LeaveReason),
    /// Close now, dropping what is queued: the client is not reading, so flushing would only wait.
    Abort(LeaveReason),
}

impl Close {
    /// The mode a reason implies: a client that is not reading (or not there) is not waited for.
    pub fn for_reason(reason: LeaveReason) -> Close {
        match reason {
            LeaveReason::QueueFull | LeaveReason::WriteTimeout | LeaveReason::PingTimeout => {
                Close::Abort(reason)
            }
            other => Close::Flush(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_reason_texts() {
        let cases = [
            (LeaveReason::Quit(None), "quit"),
            (LeaveReason::Quit(Some("bye".into())), "quit: bye"),
            (LeaveReason::Closed, "connection closed"),
            (LeaveReason::Kicked(Some("spam".into())), "kicked: spam"),
            (LeaveReason::QueueFull, "too slow: send queue full"),
            (LeaveReason::WriteTimeout, "too slow: write timeout"),
            (LeaveReason::Idle, "idle timeout"),
            (LeaveReason::ShuttingDown, "server shutting down"),
            (LeaveReason::Upgrading, "server upgrading"),
            (LeaveReason::PingTimeout, "no answer to pings"),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
        }
    }
}
