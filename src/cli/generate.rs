//! `--generate KIND`: man pages (clap_mangen) and shell completions (clap_complete) printed by the
//! binaries themselves from their clap definitions, for packaging. The flag is hidden and added only
//! at parse time, so neither `--help`, the man pages nor the completions mention it.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::error::ErrorKind;
use clap::{Arg, Command, Parser};
use clap_complete::Shell;

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The man page, in roff.
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script.
    CompleteZsh,
    /// A fish completion script.
    CompleteFish,
}

/// What a command line asks a binary to do.
#[derive(Debug)]
pub enum Invocation<T> {
    /// Run normally with these arguments.
    Run(T),
    /// Print a man page or completion script and exit (`--generate KIND`).
    Generate(Generate),
}

const GENERATE: &str = "generate";

/// The hidden `--generate KIND` flag. It is added to the command line only when parsing, not to
/// the clap definitions, so the man pages and completions generated from those never mention it.
fn generate_arg() -> Arg {
    Arg::new(GENERATE)
        .long(GENERATE)
        .value_name("KIND")
        .value_parser(clap::value_parser!(Generate))
        .hide(true)
        .help("Print the man page or a shell completion script to stdout and exit (for packaging)")
}

/// Parses the process's command line for `T`, exiting as clap does on a usage error (status 2),
/// `--help` or `--version`. `--generate KIND` is honoured even where `T` requires a subcommand.
pub fn parse_or_generate<T: Parser>() -> Invocation<T> {
    parse_or_generate_from(std::env::args_os())
}

/// [`parse_or_generate`] over the given arguments, the first being the program name.
pub fn parse_or_generate_from<T, I, A>(args: I) -> Invocation<T>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = T::command().arg(generate_arg());
    let matches = match cmd.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        // A required subcommand stays required for everything else (so `chatctl --json` is still
        // a usage error); only `--generate` may go without one.
        Err(e) if e.kind() == ErrorKind::MissingSubcommand => {
            let generate = cmd
                .clone()
                .subcommand_required(false)
                .try_get_matches_from(&args)
                .ok()
                .and_then(|m| m.get_one::<Generate>(GENERATE).copied());
            match generate {
                Some(kind) => return Invocation::Generate(kind),
                None => e.exit(),
            }
        }
        Err(e) => e.exit(),
    };
    if let Some(kind) = matches.get_one::<Generate>(GENERATE) {
        return Invocation::Generate(*kind);
    }
    match T::from_arg_matches(&matches) {
        Ok(parsed) => Invocation::Run(parsed),
        Err(e) => e.format(&mut cmd).exit(),
    }
}

/// Writes what `kind` asks for, generated from `cmd`, to stdout and returns the exit status: 0, or 1
/// if stdout could not be written (a closed pipe included).
pub fn print_generated(cmd: Command, man_section: &str, kind: Generate) -> ExitCode {
    let mut out = io::stdout().lock();
    match generate(cmd, man_section, kind, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error writing the generated {kind:?}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Generates the man page (in section `man_section`) or a completion script for `cmd` into `out`.
pub fn generate(
    mut cmd: Command,
    man_section: &str,
    kind: Generate,
    out: &mut dyn Write,
) -> io::Result<()> {
    let shell = match kind {
        Generate::Man => return man_page(cmd, man_section, out),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// The man page: clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and OPTIONS, then the
/// subcommands described in full on this one page (clap_mangen would refer to a page per
/// subcommand, which is not shipped), then the `after_long_help` text turned into sections.
fn man_page(mut cmd: Command, section: &str, out: &mut dyn Write) -> io::Result<()> {
    cmd.build();
    let manual = if section == "8" {
        "System Administration"
    } else {
        "User Commands"
    };
    let man = clap_mangen::Man::new(cmd.clone())
        .title(cmd.get_name().to_uppercase())
        .section(section)
        .date(man_date())
        .manual(manual);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        subcommands_section(&mut cmd, out)?;
    }
    if let Some(after) = cmd.get_after_long_help() {
        help_text_sections(&after.to_string(), out)?;
    }
    man.render_version_section(out)
}

/// The page's date, YYYY-MM-DD: `$SOURCE_DATE_EPOCH` when set (reproducible packages), else today.
fn man_date() -> String {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|secs| secs.trim().parse::<u64>().ok())
        .map_or_else(SystemTime::now, |secs| {
            UNIX_EPOCH + Duration::from_secs(secs)
        });
    humantime::format_rfc3339_seconds(when).to_string()[..10].to_owned()
}

/// COMMANDS: each visible subcommand with its usage, description and own arguments.
fn subcommands_section(cmd: &mut Command, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, ".SH COMMANDS")?;
    // clap's own `help` subcommand is left out: the page itself is the help.
    for sub in cmd
        .get_subcommands_mut()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let usage = sub.render_usage().to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
        writeln!(out, ".TP\n\\fB{}\\fR", roff_escape(usage))?;
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            paragraphs(&about.to_string(), out)?;
        }
        let own: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .collect();
        if own.is_empty() {
            continue;
        }
        writeln!(out, ".RS")?;
        for arg in own {
            writeln!(out, ".TP\n{}", arg_term(arg))?;
            if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
                paragraphs(&help.to_string(), out)?;
            }
        }
        writeln!(out, ".RE")?;
    }
    Ok(())
}

/// How an argument is shown as a term: `-r, --reason TEXT` or `TARGET`.
fn arg_term(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    if arg.is_positional() {
        return format!("\\fI{}\\fR", roff_escape(&value));
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("\\fB\\-{}\\fR", roff_escape(&short.to_string())));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", roff_escape(long)));
    }
    let mut term = names.join(", ");
    if arg.get_num_args().is_some_and(|n| n.takes_values()) {
        term.push_str(&format!(" \\fI{}\\fR", roff_escape(&value)));
    }
    term
}

/// Text whose blank lines separate paragraphs.
fn paragraphs(text: &str, out: &mut dyn Write) -> io::Result<()> {
    for line in text.lines() {
        if line.trim().is_empty() {
            writeln!(out, ".PP")?;
        } else {
            writeln!(out, "{}", roff_escape(line.trim()))?;
        }
    }
    Ok(())
}

/// Turns the plain-text layout of an `after_long_help` into man page sections. The layout, as
/// written in this file: a line ending in `:` at column 0 starts a section; a line indented by two
/// spaces is an item (a term, two or more spaces, its description) or, without such a gap, plain
/// text; a line indented further continues the previous item; any other line is plain text.
fn help_text_sections(text: &str, out: &mut dyn Write) -> io::Result<()> {
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if body.is_empty() {
            continue;
        }
        if indent == 0 && body.ends_with(':') {
            let heading = body.trim_end_matches(':').to_uppercase();
            writeln!(out, ".SH \"{}\"", roff_escape(&heading))?;
        } else if indent == 2 {
            match body.split_once("  ") {
                Some((term, desc)) => writeln!(
                    out,
                    ".TP\n\\fB{}\\fR\n{}",
                    roff_escape(term),
                    roff_escape(desc.trim())
                )?,
                None => writeln!(out, "{}", roff_escape(body))?,
            }
        } else {
            writeln!(out, "{}", roff_escape(body))?;
        }
    }
    Ok(())
}

/// Escapes text for roff: backslashes and hyphens are written as escapes, and a line that would
/// start with a control character (`.` or `'`) is guarded with a zero-width `\&`.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::{CtlArgs, CtlCommand, DaemonArgs};

    fn generated(cmd: Command, kind: Generate) -> String {
        let mut out = Vec::new();
        generate(cmd, "1", kind, &mut out).expect("generate");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn generate_needs_no_subcommand_and_wins_over_other_flags() {
        let got = parse_or_generate_from::<CtlArgs, _, _>(["chatctl", "--generate", "man"]);
        assert!(matches!(got, Invocation::Generate(Generate::Man)));
        let got = parse_or_generate_from::<CtlArgs, _, _>([
            "chatctl",
            "--json",
            "--generate",
            "complete-zsh",
            "stats",
        ]);
        assert!(matches!(got, Invocation::Generate(Generate::CompleteZsh)));
        let got = parse_or_generate_from::<DaemonArgs, _, _>([
            "groupchatd",
            "--config",
            "/nonexistent.toml",
            "--generate",
            "complete-fish",
        ]);
        assert!(matches!(got, Invocation::Generate(Generate::CompleteFish)));
    }

    #[test]
    fn without_generate_the_arguments_parse_as_before() {
        let got = parse_or_generate_from::<CtlArgs, _, _>(["chatctl", "--json", "kick", "7"]);
        let Invocation::Run(args) = got else {
            panic!("expected Run, got {got:?}");
        };
        assert!(args.json);
        assert!(matches!(args.command, CtlCommand::Kick { ref target, .. } if target == "7"));
        let got = parse_or_generate_from::<DaemonArgs, _, _>(["groupchatd", "-l", "[::1]:7000"]);
        let Invocation::Run(args) = got else {
            panic!("expected Run, got {got:?}");
        };
        assert_eq!(args.listen, ["[::1]:7000"]);
    }

    #[test]
    fn man_page_has_every_subcommand_and_the_after_help_sections() {
        let page = generated(CtlArgs::command(), Generate::Man);
        assert!(page.contains(".TH CHATCTL 1 "), "{page}");
        for sub in [
            "list", "kick", "announce", "rooms", "topic", "move", "stats", "reload",
        ] {
            assert!(
                page.contains(&format!("\\fBchatctl {sub} ")),
                "{sub} missing"
            );
        }
        assert!(
            !page.contains("chatctl help"),
            "clap's help subcommand is listed"
        );
        assert!(page.contains(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nSuccess."));
        assert!(page.contains("\\fB\\-r\\fR, \\fB\\-\\-reason\\fR \\fITEXT\\fR"));
        assert!(page.contains("\\fB\\-\\-room\\fR \\fINAME\\fR"));
        assert!(!page.contains("generate"), "the hidden flag leaked");
        let page = generated(DaemonArgs::command(), Generate::Man);
        for needle in [
            "/etc/groupchatd/groupchatd.toml",
            "SIGHUP",
            "SIGTERM",
            "\\fB78\\fR",
        ] {
            assert!(page.contains(needle), "{needle} missing");
        }
    }

    #[test]
    fn completions_know_the_subcommands() {
        for kind in [
            Generate::CompleteBash,
            Generate::CompleteZsh,
            Generate::CompleteFish,
        ] {
            let script = generated(CtlArgs::command(), kind);
            for sub in [
                "list", "kick", "announce", "rooms", "topic", "move", "stats", "reload", "socket",
            ] {
                assert!(script.contains(sub), "{kind:?} lacks {sub}");
            }
            assert!(!script.contains("generate"), "{kind:?} offers --generate");
        }
    }

    #[test]
    fn help_text_layout_becomes_sections_items_and_continuations() {
        let mut out = Vec::new();
        let text = "Exit status:\n  0   Fine.\n  78  Bad\n      file.\nSee also:\n  x(1), y(8)\n";
        help_text_sections(text, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nFine.\n.TP\n\\fB78\\fR\nBad\nfile.\n\
             .SH \"SEE ALSO\"\nx(1), y(8)\n"
        );
    }

    #[test]
    fn roff_escape_guards_control_lines_backslashes_and_hyphens() {
        assert_eq!(roff_escape("a-b"), "a\\-b");
        assert_eq!(roff_escape(r"C:\x"), r"C:\ex");
        assert_eq!(roff_escape(".SH x"), "\\&.SH x");
        assert_eq!(roff_escape("'quoted'"), "\\&'quoted'");
    }
}
