//! The browser client: `web/index.html`, `web/app.js`, `web/app.css` and `web/favicon.svg`,
//! compiled into the binary, so the page is always the one that speaks this daemon's protocol
//! (an upgrade serves the new binary's page, and nothing is read from disk).
//!
//! Every file goes out with a strict Content-Security-Policy: scripts, styles, images and
//! connections from this origin only (`connect-src 'self'` covers the page's own `ws:`/`wss:`
//! origin in CSP Level 3, which current browsers implement), no inline script or style, no
//! plugins, no `<base>`, no form submissions, and no framing by other sites. With `nosniff`
//! a browser runs the script only as the JavaScript it is labelled. The page sets every piece
//! of server text with `textContent`, never as HTML.
//!
//! Two things are filled in per request: the line telling terminal users how to connect
//! (`nc HOST 7000`, with the host the browser used when a chat listener is on every address), and
//! `max_line_bytes`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::Site;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");
const ICON: &str = include_str!("../../web/favicon.svg");

/// Where `index.html` wants the chat ports (`nc HOST PORT` lines, separated by " or ").
const CHAT_PORTS: &str = "{{chat-ports}}";
/// Where `index.html` wants `max_line_bytes`, so the page keeps a line too long to send in the
/// input instead of sending it to be refused.
const MAX_LINE_BYTES: &str = "{{max-line-bytes}}";

/// The policy every file of the page is served with.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /`: the page.
pub(super) async fn index(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(host_name);
    let commands: Vec<String> = site
        .chat
        .iter()
        .map(|addr| {
            // A wildcard address is every address of this host: the one the browser used.
            let ip = if addr.ip().is_unspecified() {
                host.unwrap_or("HOST").to_owned()
            } else {
                addr.ip().to_string()
            };
            format!("nc {ip} {}", addr.port())
        })
        .collect();
    let max_line = site.hub.config().max_line_bytes.to_string();
    let page = INDEX
        .replacen(CHAT_PORTS, &commands.join(" or "), 1)
        .replacen(MAX_LINE_BYTES, &max_line, 1);
    file("text/html; charset=utf-8", page)
}

/// `GET /app.js`.
pub(super) async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /app.css`.
pub(super) async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

/// `GET /favicon.svg`.
pub(super) async fn icon() -> Response {
    file("image/svg+xml", ICON)
}

/// One of the page's files, with the headers they all get. `no-cache`: the browser checks again
/// each time, so after an upgrade it runs the new binary's script, not a cached old one.
fn file(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The host part of a `Host` header if it is a plain name or address (so it can go into the page
/// as it is, with nothing to escape); else None.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next()?,
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    (!name.is_empty() && name.len() <= 253 && name.chars().all(plain)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_host_names_reach_the_page() {
        assert_eq!(host_name("chat.example.org:7080"), Some("chat.example.org"));
        assert_eq!(host_name("chat.example.org"), Some("chat.example.org"));
        assert_eq!(host_name("[2001:db8::1]:7080"), Some("[2001:db8::1]"));
        assert_eq!(host_name("<script>:7080"), None);
        assert_eq!(host_name("a\"b"), None);
        assert_eq!(host_name("[::1"), None);
        assert_eq!(host_name(""), None);
    }

    #[test]
    fn the_page_has_its_placeholder_and_no_inline_code() {
        assert_eq!(INDEX.matches(CHAT_PORTS).count(), 1);
        assert_eq!(INDEX.matches(MAX_LINE_BYTES).count(), 1);
        // The policy allows no inline script or style: the page must not need any.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        // No inline event handlers (` onclick=` and the like) either.
        let handler = INDEX.match_indices(" on").any(|(at, _)| {
            let rest = &INDEX[at + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "an inline event handler in index.html");
        assert!(INDEX.contains(r#"<script src="/app.js""#));
        assert!(INDEX.contains(r#"href="/app.css""#));
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("eval("));
    }
}
