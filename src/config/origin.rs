//! `WebOrigin`: a web origin (`https://chat.example.org`), for `allowed_origins`, and the rule a
//! WebSocket request's `Origin` header is judged by.
//!
//! An origin is a scheme (`http` or `https`), a host and a port, and nothing else: no path (not
//! even a trailing `/`), query, fragment or user name, exactly as a browser sends it in `Origin`.
//! Scheme and host are compared without regard to case and a port equal to the scheme's default
//! is the same as none, so `HTTPS://Chat.Example.org:443` and `https://chat.example.org` are one
//! origin. Host names must be ASCII: an international name is written in its `xn--` form, which
//! is what browsers send.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The scheme of a [`WebOrigin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`, default port 80.
    Http,
    /// `https://`, default port 443.
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A web origin such as `https://chat.example.org` or `http://127.0.0.1:7080`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebOrigin {
    scheme: Scheme,
    /// Lowercase ASCII; an IPv6 address in brackets.
    host: String,
    /// Always set: the scheme's default when the text named none.
    port: u16,
}

/// Why a string is not a [`WebOrigin`]; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseOriginError(String);

impl WebOrigin {
    /// Its scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Its host, lowercase (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port (the scheme's default if the text named none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a request whose `Host` header is `host` was made to this origin: the same host,
    /// and the same port, where a `Host` without one means this origin's scheme's default
    /// (behind a TLS proxy the request itself may have come over plain HTTP, so the scheme is
    /// the origin's to say). False for a `Host` that is not a plain `host[:port]`.
    pub fn is_host(&self, host: &str) -> bool {
        match split_authority(host.trim()) {
            Ok((name, port)) => {
                name.eq_ignore_ascii_case(&self.host)
                    && port.unwrap_or(self.scheme.default_port()) == self.port
            }
            Err(_) => false,
        }
    }
}

impl FromStr for WebOrigin {
    type Err = ParseOriginError;

    fn from_str(text: &str) -> Result<WebOrigin, ParseOriginError> {
        let bad = |why: &str| ParseOriginError(format!("'{text}' is not an origin: {why}"));
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            bad("it must start with http:// or https:// (e.g. \"https://chat.example.org\")")
        })?;
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else {
            return Err(bad("the scheme must be http or https"));
        };
        if rest.contains(['/', '?', '#']) {
            let shown = format!(
                "an origin has no path, query or fragment, not even a trailing / (write \"{}://{}\")",
                scheme.as_str(),
                rest.split(['/', '?', '#']).next().unwrap_or_default()
            );
            return Err(bad(&shown));
        }
        if rest.contains('@') {
            return Err(bad("an origin has no user name or password"));
        }
        if !rest.is_ascii() {
            return Err(bad(
                "write an international host name in its xn-- (punycode) form, as browsers send it",
            ));
        }
        let (host, port) = split_authority(rest).map_err(|why| bad(&why))?;
        Ok(WebOrigin {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(scheme.default_port()),
        })
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 in brackets), checking both parts: a host name of letters, digits,
/// `-`, `_` and dots, an IPv4 address or a bracketed IPv6 address; a port from 1 to 65535.
fn split_authority(text: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or("an IPv6 address needs its closing ]")?;
        let inner = &text[1..end];
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("[{inner}] is not an IPv6 address"));
        }
        let after = &text[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("only :PORT may follow the ] of an IPv6 address".into()),
        };
        (&text[..=end], port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if !host.starts_with('[') {
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !host.starts_with(['.', '-'])
            && !host.contains("..");
        // All digits and dots: it must then be an IPv4 address, not a name.
        let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !name_ok || (numeric && host.parse::<Ipv4Addr>().is_err()) {
            return Err(format!("'{host}' is not a host name or address"));
        }
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("'{p}' is not a port (1 to 65535)")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> WebOrigin {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        let table = [
            ("https://chat.example.org", "https://chat.example.org", 443),
            (
                "HTTPS://Chat.Example.ORG:443",
                "https://chat.example.org",
                443,
            ),
            ("http://127.0.0.1:7080", "http://127.0.0.1:7080", 7080),
            ("http://localhost:80", "http://localhost", 80),
            ("http://[::1]:7080", "http://[::1]:7080", 7080),
            ("https://[2001:DB8::1]", "https://[2001:db8::1]", 443),
            (
                "https://xn--bcher-kva.example",
                "https://xn--bcher-kva.example",
                443,
            ),
        ];
        for (text, shown, port) in table {
            let o = origin(text);
            assert_eq!(o.to_string(), shown, "{text}");
            assert_eq!(o.port(), port, "{text}");
            assert_eq!(origin(shown), o, "{text} round trip");
        }
        assert_eq!(origin("https://a.example").scheme(), Scheme::Https);
        assert_eq!(origin("http://a.example").host(), "a.example");
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_a_reason() {
        let table = [
            ("chat.example.org", "must start with http:// or https://"),
            ("ws://chat.example.org", "the scheme must be http or https"),
            ("https://chat.example.org/", "not even a trailing /"),
            (
                "https://chat.example.org/chat",
                "write \"https://chat.example.org\"",
            ),
            ("https://chat.example.org?x", "no path, query or fragment"),
            ("https://user@chat.example.org", "no user name or password"),
            ("https://bücher.example", "xn-- (punycode)"),
            ("https://", "'' is not a host name"),
            ("https://chat example", "is not a host name"),
            ("https://:443", "is not a host name"),
            ("https://a..b", "is not a host name"),
            ("https://300.1.1.1", "is not a host name or address"),
            ("https://a.example:0", "is not a port"),
            ("https://a.example:65536", "is not a port"),
            ("https://a.example:+80", "is not a port"),
            ("https://a.example:", "is not a port"),
            ("https://[::1", "closing ]"),
            ("https://[::g]", "is not an IPv6 address"),
            ("https://[::1]x", "only :PORT"),
            ("null", "must start with"),
        ];
        for (text, why) in table {
            let e = text.parse::<WebOrigin>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("'{text}' is not an origin: ")),
                "{e}"
            );
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn the_host_header_matches_its_own_origin_only() {
        let page = origin("http://127.0.0.1:7080");
        assert!(page.is_host("127.0.0.1:7080"));
        assert!(!page.is_host("127.0.0.1:7081"));
        assert!(!page.is_host("127.0.0.1"));
        assert!(!page.is_host("localhost:7080"));
        let public = origin("https://Chat.Example.org");
        assert!(public.is_host("chat.example.org"));
        assert!(public.is_host("CHAT.example.org:443"));
        assert!(!public.is_host("chat.example.org:80"));
        assert!(!public.is_host("evil.example"));
        assert!(!public.is_host("chat.example.org.evil.example"));
        assert!(!public.is_host("chat.example.org@evil"));
        assert!(!public.is_host(""));
        let v6 = origin("http://[::1]:7080");
        assert!(v6.is_host("[::1]:7080"));
        assert!(!v6.is_host("[::2]:7080"));
    }
}
