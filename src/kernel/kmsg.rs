//! The one logging path: `log` records to /dev/kmsg with the `slotinit:` prefix
//! (kernel ring buffer and console), or to stderr for the userspace subcommands.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

/// The prefix every line carries, so `dmesg | grep slotinit:` finds the boot.
const PREFIX: &str = "slotinit";

enum Sink {
    Kmsg(Mutex<Kmsg>),
    Stderr,
}

/// /dev/kmsg, reopened every few records: the kernel rate-limits writes per open
/// file (burst of 10 per 5 s, `devkmsg_open()` in kernel/printk/printk.c) unless
/// `printk.devkmsg=on`, and a boot logs more than 10 lines in its first second.
struct Kmsg {
    file: File,
    written: u32,
}

/// Records written before a fresh open, below the kernel's burst of 10.
const REOPEN_EVERY: u32 = 8;

impl Kmsg {
    fn open() -> std::io::Result<Kmsg> {
        let file = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
        Ok(Kmsg { file, written: 0 })
    }

    fn write(&mut self, record: &str) {
        if self.written >= REOPEN_EVERY {
            if let Ok(fresh) = Kmsg::open() {
                *self = fresh;
            }
        }
        self.written += 1;
        // One write per record: /dev/kmsg takes a record per write(2).
        let _ = self.file.write_all(record.as_bytes());
    }
}

struct Logger {
    sink: Sink,
}

/// syslog priority of a `log` level, as /dev/kmsg wants it in `<N>`.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One kmsg record: the kernel truncates a write at about 1 KiB, so long messages
/// are cut on a character boundary rather than lost.
fn format_record(level: Level, message: &str) -> String {
    const MAX: usize = 900;
    let mut end = message.len().min(MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < message.len() { "..." } else { "" };
    format!("<{}>{PREFIX}: {}{cut}\n", priority(level), &message[..end])
}

impl Log for Logger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        match &self.sink {
            Sink::Kmsg(kmsg) => {
                if let Ok(mut k) = kmsg.lock() {
                    k.write(&format_record(record.level(), &message));
                }
            }
            Sink::Stderr => eprintln!("{PREFIX}: {message}"),
        }
    }

    fn flush(&self) {}
}

/// Logs to /dev/kmsg, falling back to stderr if it cannot be opened.
pub(crate) fn init_kmsg(level: LevelFilter) {
    let sink = match Kmsg::open() {
        Ok(k) => Sink::Kmsg(Mutex::new(k)),
        Err(_) => Sink::Stderr,
    };
    install(sink, level);
}

/// Logs to stderr (userspace subcommands).
pub fn init_stderr(level: LevelFilter) {
    install(Sink::Stderr, level);
}

fn install(sink: Sink, level: LevelFilter) {
    // A second init (tests) keeps the first logger; nothing to do about it.
    let _ = log::set_boxed_logger(Box::new(Logger { sink }));
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_priority_and_prefix() {
        assert_eq!(format_record(Level::Error, "x"), "<3>slotinit: x\n");
        assert_eq!(format_record(Level::Info, "mount"), "<6>slotinit: mount\n");
        assert_eq!(format_record(Level::Debug, "d"), "<7>slotinit: d\n");
    }

    #[test]
    fn long_records_are_cut_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let rec = format_record(Level::Warn, &long);
        assert!(rec.len() < 1000);
        assert!(rec.ends_with("...\n"));
    }
}
