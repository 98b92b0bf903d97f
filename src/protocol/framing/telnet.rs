//! The telnet command interpreter used by the line framer.
//!
//! Telnet commands are stripped at stream level and never answered: the daemon speaks plain
//! lines, and a telnet client works fine in its default mode without negotiation. Invariant:
//! every byte from an IAC to the end of its command is consumed, including the body of a
//! subnegotiation, whose length is bounded so that a hostile `IAC SB` cannot hide the stream.

/// Telnet "interpret as command".
pub(super) const IAC: u8 = 0xFF;
/// Subnegotiation begin / end.
const SB: u8 = 0xFA;
const SE: u8 = 0xF0;
/// Longest subnegotiation honoured, counting every byte after `IAC SB`.
const SB_MAX: u16 = 512;

/// Where the interpreter is, carried across reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Telnet {
    /// Not in a command: bytes are data.
    Data,
    /// Just saw IAC.
    Iac,
    /// Saw IAC WILL/WONT/DO/DONT; the next byte is the option.
    Option,
    /// Inside IAC SB, with the number of bytes consumed so far.
    Sub(u16),
    /// Inside IAC SB, just after an IAC.
    SubIac(u16),
}

impl Telnet {
    /// The state as two numbers (its kind and its count), for a snapshot.
    pub(super) fn to_parts(self) -> (u8, u16) {
        match self {
            Telnet::Data => (0, 0),
            Telnet::Iac => (1, 0),
            Telnet::Option => (2, 0),
            Telnet::Sub(n) => (3, n),
            Telnet::SubIac(n) => (4, n),
        }
    }

    /// The state [`to_parts`](Self::to_parts) gave, or None for numbers it never gives.
    pub(super) fn from_parts(kind: u8, n: u16) -> Option<Telnet> {
        let t = match kind {
            0 => Telnet::Data,
            1 => Telnet::Iac,
            2 => Telnet::Option,
            3 => Telnet::Sub(n),
            4 => Telnet::SubIac(n),
            _ => return None,
        };
        (n < SB_MAX && (matches!(t, Telnet::Sub(_) | Telnet::SubIac(_)) || n == 0)).then_some(t)
    }

    /// Consumes one byte of a command. The framer switches to `Iac` itself on seeing IAC in
    /// data, so this is never called in `Data`.
    pub(super) fn step(self, b: u8) -> Telnet {
        match self {
            Telnet::Data | Telnet::Option => Telnet::Data,
            // IAC IAC would be a literal 0xFF, which can never be valid UTF-8: drop it like
            // every other two-byte command.
            Telnet::Iac => match b {
                0xFB..=0xFE => Telnet::Option,
                SB => Telnet::Sub(0),
                _ => Telnet::Data,
            },
            Telnet::SubIac(_) if b == SE => Telnet::Data,
            Telnet::Sub(n) | Telnet::SubIac(n) if n + 1 >= SB_MAX => Telnet::Data,
            Telnet::Sub(n) if b == IAC => Telnet::SubIac(n + 1),
            Telnet::Sub(n) | Telnet::SubIac(n) => Telnet::Sub(n + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the bytes after an IAC through the interpreter.
    fn after_iac(bytes: &[u8]) -> Telnet {
        bytes.iter().fold(Telnet::Iac, |t, &b| t.step(b))
    }

    #[test]
    fn command_table() {
        let table: &[(&[u8], Telnet)] = &[
            (b"", Telnet::Iac),
            (b"\xff", Telnet::Data),
            (b"\xf1", Telnet::Data),
            (b"\xf4", Telnet::Data),
            (b"a", Telnet::Data),
            (b"\xfd", Telnet::Option),
            (b"\xfd\x01", Telnet::Data),
            (b"\xfb\xff", Telnet::Data),
            (b"\xfa", Telnet::Sub(0)),
            (b"\xfa\x18\x00\n", Telnet::Sub(3)),
            (b"\xfa\x18\xff", Telnet::SubIac(2)),
            (b"\xfa\x18\xff\xff", Telnet::Sub(3)),
            (b"\xfa\x18\xff\x01", Telnet::Sub(3)),
            (b"\xfa\x18\xff\xf0", Telnet::Data),
            (b"\xfa\xf0", Telnet::Sub(1)),
        ];
        for (bytes, expected) in table {
            assert_eq!(after_iac(bytes), *expected, "{bytes:?}");
        }
    }

    #[test]
    fn subnegotiation_is_bounded() {
        let mut bytes = vec![SB];
        bytes.extend([b'x'; SB_MAX as usize - 1]);
        assert_eq!(after_iac(&bytes), Telnet::Sub(SB_MAX - 1));
        bytes.push(b'x');
        assert_eq!(after_iac(&bytes), Telnet::Data);
        bytes[SB_MAX as usize] = IAC;
        assert_eq!(after_iac(&bytes), Telnet::Data);
    }
}
