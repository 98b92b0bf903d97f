//! The groupchatd daemon: parse flags, load the configuration, start logging, serve until stopped.

use std::process::ExitCode;

use clap::CommandFactory;
use groupchatd::app::StartError;
use groupchatd::cli::{self, DaemonArgs, Invocation};
use groupchatd::config::{Config, EX_CONFIG};

fn main() -> ExitCode {
    let args = match cli::parse_or_generate::<DaemonArgs>() {
        Invocation::Run(args) => args,
        Invocation::Generate(kind) => {
            return cli::print_generated(DaemonArgs::command(), cli::DAEMON_MAN_SECTION, kind);
        }
    };
    let (config, path) =
        match Config::load_effective(args.config.as_deref()).and_then(|(mut c, p)| {
            c.apply_overrides(&args.overrides())?;
            Ok((c, p))
        }) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("groupchatd: configuration error: {e}");
                // Started by an upgrade: the old process rolls back and says why.
                groupchatd::upgrade::refuse_if_upgrading(&format!("configuration error: {e}"));
                return ExitCode::from(EX_CONFIG as u8);
            }
        };
    let source = path
        .as_ref()
        .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    if args.check_config {
        // What start-up checks before binding, as if systemd passed no sockets.
        let checked = match groupchatd::preflight::check(&config, Default::default()) {
            Ok(checked) => checked,
            Err(e) => {
                eprintln!("groupchatd: configuration error: {e}");
                return ExitCode::from(EX_CONFIG as u8);
            }
        };
        println!("groupchatd: configuration OK ({source})");
        if let Some(tls) = checked.tls {
            println!(
                "groupchatd: TLS certificate {} (serial {}), valid until {}",
                tls.subject,
                tls.serial,
                humantime::format_rfc3339_seconds(tls.not_after)
            );
        }
        return ExitCode::SUCCESS;
    }
    match groupchatd::daemon::run(config, path, args.overrides()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupchatd: {e:#}");
            let config_error = e
                .downcast_ref::<StartError>()
                .is_some_and(StartError::is_config);
            if config_error {
                ExitCode::from(EX_CONFIG as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
