//! Impersonation and invisible text, as a hostile netcat user tries them against the daemon:
//! look-alike nicknames while the real owner is online, reserved names in disguise, and messages
//! that carry zero-width, tag or stacked combining characters.

use crate::support::*;

const TAKEN: &str = "that nickname is taken";
const RESERVED: &str = "that nickname is reserved";
const MIXED: &str =
    "a nickname cannot mix scripts such as Latin with Cyrillic or Greek (letters that look alike)";

/// A client at the nickname prompt.
async fn at_prompt(srv: &TestServer) -> TestClient {
    let mut c = srv.client().await;
    c.read_until_line("*** Choose a nickname:").await;
    c
}

/// Sends `nick` at the prompt and expects the refusal `reason`, then the prompt again.
async fn refused_at_prompt(c: &mut TestClient, nick: &str, reason: &str) {
    c.send(nick).await;
    assert_eq!(c.line().await, format!("*** {reason}"), "for {nick:?}");
    c.expect("*** Choose a nickname:").await;
}

#[tokio::test]
async fn look_alikes_of_online_names_are_taken_or_refused() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut online = Vec::new();
    for nick in ["bob", "mary", "Al"] {
        online.push(srv.join(nick).await);
        alice.expect(&format!("*** {nick} joined")).await;
    }
    let cases: &[(&str, &str)] = &[
        // The Hangul filler draws as nothing; the sanitiser drops it, so this is alice again.
        ("alice\u{1160}", TAKEN),
        ("alice\u{200b}", TAKEN),
        ("\u{2060}alice\u{feff}", TAKEN),
        ("ALICE", TAKEN),
        // Fullwidth letters are mapped to ASCII.
        ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", TAKEN),
        // Cyrillic а and Greek ο among Latin letters.
        ("\u{430}lice", MIXED),
        ("b\u{3bf}b", MIXED),
        // Mathematical bold letters are refused, not mapped.
        (
            "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}",
            "'\u{1d41a}' is a styled or compatibility form; type the plain letter or digit",
        ),
        // Latin look-alikes: rn for m, capital I for l.
        ("rnary", TAKEN),
        ("AI", TAKEN),
        // Bob in Cyrillic capitals (one script, so only the skeleton catches it).
        ("\u{412}\u{41e}\u{412}", TAKEN),
    ];
    let mut mallory = at_prompt(&srv).await;
    for (nick, reason) in cases {
        refused_at_prompt(&mut mallory, nick, reason).await;
    }
    mallory.send("mallory").await;
    mallory
        .expect("*** Welcome, mallory! 5 online: Al, alice, bob, mallory, mary")
        .await;
    // The first join notice alice sees since the others is mallory's: no look-alike got in.
    alice.expect("*** mallory joined").await;
    srv.stop().await;
}

#[tokio::test]
async fn one_name_in_different_encodings_or_cases_is_one_name() {
    let srv = TestServer::start(test_config());
    let mut first = srv.join("caf\u{e9}").await;
    let mut online = Vec::new();
    for nick in ["\u{d55c}", "\u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c2}"] {
        online.push(srv.join(nick).await);
        first.expect(&format!("*** {nick} joined")).await;
    }
    let mut c = at_prompt(&srv).await;
    for nick in [
        // NFD of café and of the Hangul syllable 한.
        "cafe\u{301}",
        "\u{1112}\u{1161}\u{11ab}",
        // Sigma beside final sigma, and capitals.
        "\u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c3}",
        "\u{39b}\u{38c}\u{393}\u{39f}\u{3a3}",
        "CAF\u{c9}",
    ] {
        refused_at_prompt(&mut c, nick, TAKEN).await;
    }
    // What is stored and shown is the composed form, whatever was typed.
    c.send("e\u{301}mile").await;
    c.expect("*** Welcome, \u{e9}mile! 4 online: caf\u{e9}, \u{e9}mile, \u{3bb}\u{3cc}\u{3b3}\u{3bf}\u{3c2}, \u{d55c}")
        .await;
    first.expect("*** \u{e9}mile joined").await;
    srv.stop().await;
}

#[tokio::test]
async fn reserved_names_in_disguise_and_invisible_names_are_refused() {
    let srv = TestServer::start(test_config());
    let mut c = at_prompt(&srv).await;
    let zalgo = format!("z{}", "\u{336}".repeat(23));
    let cases: &[(&str, &str)] = &[
        ("s\u{435}rver", MIXED),
        ("\u{ff52}\u{ff4f}\u{ff4f}\u{ff54}", RESERVED),
        (
            "\u{24c8}erver",
            "'\u{24c8}' is a styled or compatibility form; type the plain letter or digit",
        ),
        ("\u{ff21}\u{ff24}\u{ff2d}\u{ff29}\u{ff2e}", RESERVED),
        ("r00t", RESERVED),
        ("adrnin", RESERVED),
        ("Server", RESERVED),
        // 23 stacked marks: the sanitiser keeps four, the nickname rules allow two.
        (
            &zalgo,
            "at most 2 accents or other combining marks per letter",
        ),
        // A mark with no letter is named, escaped, never echoed raw.
        (
            "\u{301}bob",
            "'\\u{301}' is not allowed in a nickname (use letters, digits, _ and -)",
        ),
    ];
    for (nick, reason) in cases {
        refused_at_prompt(&mut c, nick, reason).await;
    }
    // A name of only a Hangul filler is nothing at all: no reply, no `<>` member. The next
    // line the client gets is the welcome for the name it sends after it.
    c.send("\u{1160}").await;
    c.send("\u{3164}\u{200b}").await;
    c.send("carol").await;
    c.expect("*** Welcome, carol! 1 online: carol").await;
    assert_eq!(srv.hub.counts().1, 1);
    srv.stop().await;
}

#[tokio::test]
async fn renames_cannot_impersonate_and_case_is_kept_for_display() {
    // The refusals are compared whole, on one row (wrapping is tested in forgery.rs).
    let srv = TestServer::start(groupchatd::config::Config {
        wrap_width: 0,
        ..test_config()
    });
    let mut alice = srv.join("Alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;
    for (nick, reason) in [
        ("\u{430}lice", MIXED),
        ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", TAKEN),
        ("alice", TAKEN),
        (
            "\u{24c7}oot",
            "'\u{24c7}' is a styled or compatibility form; type the plain letter or digit",
        ),
    ] {
        bob.send(&format!("/nick {nick}")).await;
        bob.expect(&format!("*** Cannot change nickname: {reason}"))
            .await;
    }
    // A change of case only is bob's own name: allowed, and shown as typed.
    bob.send("/nick \u{ff22}OB").await;
    for x in [&mut alice, &mut bob] {
        x.expect("*** bob is now known as BOB").await;
    }
    bob.send("hi").await;
    alice.expect("<BOB> hi").await;
    srv.stop().await;
}

#[tokio::test]
async fn a_fullwidth_name_is_shown_in_ascii_and_found_by_either_form() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut carol = at_prompt(&srv).await;
    carol.send("\u{ff43}\u{ff41}\u{ff52}\u{ff4f}\u{ff4c}").await;
    carol
        .expect("*** Welcome, carol! 2 online: alice, carol")
        .await;
    carol.read_until_line("*** Type /help for commands.").await;
    alice.expect("*** carol joined").await;
    carol.send("hello").await;
    alice.expect("<carol> hello").await;
    // Private messages find a member by any spelling of the name.
    carol.send("/msg \u{ff21}LICE psst").await;
    carol.expect("*** -> *alice* psst").await;
    alice.expect("*carol* psst").await;
    alice.send("/msg \u{ff43}arol hi").await;
    alice.expect("*** -> *carol* hi").await;
    carol.expect("*alice* hi").await;
    // A look-alike target is nobody.
    alice.send("/msg \u{441}arol hi").await;
    alice.expect("*** No such nickname: \u{441}arol").await;
    srv.stop().await;
}

#[tokio::test]
async fn invisible_text_is_stripped_and_emoji_sequences_arrive_whole() {
    let srv = TestServer::start(test_config());
    let mut alice = srv.join("alice").await;
    let mut bob = srv.join("bob").await;
    alice.expect("*** bob joined").await;

    let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
    let england = "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}";
    let cases: &[(String, String)] = &[
        // Zero-width chars inside a word (a filter evader) and a Hangul filler.
        (
            "pa\u{200b}ss\u{200c}wo\u{2060}rd\u{feff} \u{3164}!".into(),
            "password !".into(),
        ),
        // Hidden text for bots in tag characters ("Ignore").
        (
            "hello\u{e0049}\u{e0067}\u{e006e}\u{e006f}\u{e0072}\u{e0065}".into(),
            "hello".into(),
        ),
        // Zalgo: a stack of 30 marks keeps four.
        (
            format!("Z{}ALGO", "\u{336}".repeat(30)),
            format!("Z{}ALGO", "\u{336}".repeat(4)),
        ),
        // A ZWJ family, a subdivision flag, a keycap and a red heart arrive whole.
        (
            format!("{family} {england} 1\u{fe0f}\u{20e3} \u{2764}\u{fe0f}"),
            format!("{family} {england} 1\u{fe0f}\u{20e3} \u{2764}\u{fe0f}"),
        ),
        // Data smuggled in variation selectors after an emoji is dropped.
        (
            "\u{1f600}\u{e0100}\u{e0101}\u{e0142}\u{fe00} ok".into(),
            "\u{1f600} ok".into(),
        ),
    ];
    for (sent, shown) in cases {
        alice.send(sent).await;
        let got = bob.line().await;
        assert_eq!(got, format!("<alice> {shown}"), "sent {sent:?}");
    }
    // Actions go through the same rules.
    alice.send("/me waves\u{200b}\u{e0041}").await;
    bob.expect("* alice waves").await;
    srv.stop().await;
}
