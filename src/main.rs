//! Entry point: PID 1 of the initramfs, or a userspace subcommand after boot.

use slotinit::{cli, init, kernel::kmsg};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::process::id() == 1 {
        init::run();
    }
    kmsg::init_stderr(log::LevelFilter::Warn);
    cli::main(std::env::args().skip(1).collect())
}
