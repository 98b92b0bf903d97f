//! chatctl: the operator's command line for a running groupchatd.

use std::process::ExitCode;

use clap::CommandFactory;
use groupchatd::cli::{self, CtlArgs, Invocation};

fn main() -> ExitCode {
    match cli::parse_or_generate::<CtlArgs>() {
        Invocation::Run(args) => ExitCode::from(groupchatd::ctl::run(&args)),
        Invocation::Generate(kind) => {
            cli::print_generated(CtlArgs::command(), cli::CTL_MAN_SECTION, kind)
        }
    }
}
