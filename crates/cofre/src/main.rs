//! The `cofre` binary; everything is in the library (`lib.rs`), which `cofre-bench` shares.

fn main() -> std::process::ExitCode {
    cofre::main()
}
