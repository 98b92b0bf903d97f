//! chatctl: the operator's command line for a running groupchatd.

use std::process::ExitCode;

use clap::Parser;
use groupchatd::cli::CtlArgs;

fn main() -> ExitCode {
    ExitCode::from(groupchatd::ctl::run(&CtlArgs::parse()))
}
