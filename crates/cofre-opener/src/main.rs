//! `cofre-opener`: the offline break-glass opener alone, for a custodian's USB stick.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cofre-opener",
    version,
    about = "Open a Cofre break-glass file offline with the custodians' shares",
    long_about = "Open a Cofre break-glass file offline with the custodians' shares. The same \
commands as `cofre breakglass open|combine`, in a binary with no server, database, network or \
async runtime in it: it needs nothing but the file and the shares, and reads no configuration."
)]
struct Cli {
    /// `json`: the session's replies as JSON lines.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Open a break-glass file: asks for the shares of the file's key epoch, then reads commands:
    /// `search TEXT`, `show TARGET ACCOUNT [--version N]`, `list`, `quit`. Everything shown is
    /// logged to FILE.log.
    Open(cofre_opener::OpenArgs),
    /// Combine shares into the key epoch's age identity and print it, for the standard `age`
    /// tool: `age -d -i identity.txt FILE`.
    Combine(cofre_opener::CombineArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cofre_opener::report(match cli.command {
        Command::Open(args) => cofre_opener::open(args, cli.output == Output::Json),
        Command::Combine(args) => cofre_opener::combine(args),
    })
}
