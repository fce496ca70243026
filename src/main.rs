//! Entry point: PID 1 of the initramfs, or a userspace subcommand after boot.

use slotinit::{boot, cli, kmsg};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::process::id() == 1 {
        boot::run();
    }
    kmsg::init_stderr(log::LevelFilter::Warn);
    cli::main(std::env::args().skip(1).collect())
}
