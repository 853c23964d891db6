//! The CLI's standard output. A reader that stops early (`cofre audit list | head -1`) closes the
//! pipe; then the command ends quietly with status 0, as Unix tools do, instead of panicking in
//! `outln!` with a backtrace.

use std::io::Write;

pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut stdout = std::io::stdout().lock();
    let mut result = stdout.write_fmt(args);
    if newline && result.is_ok() {
        result = stdout.write_all(b"\n");
    }
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        drop(stdout);
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}
