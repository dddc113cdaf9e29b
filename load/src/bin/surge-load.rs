//! `surge-load`: the load generator on its own (the same as `surge load`).

use clap::Parser;
use surge_load::LoadArgs;

#[derive(Parser)]
#[command(
    name = "surge-load",
    version,
    about = "surge's load generator: open/closed loop, scenarios, invariant checks, HTML report"
)]
struct Cli {
    #[command(flatten)]
    args: LoadArgs,
}

fn main() -> std::process::ExitCode {
    surge_load::run(Cli::parse().args)
}
