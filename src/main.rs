//! Entry point: PID 1 of the initramfs, or a userspace subcommand after boot.

use slotinit::config::Config;
use slotinit::handoff::{Handoff, HANDOFF_PATH};
use slotinit::{boot, kmsg};
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: slotinit <command>
  status [--json] [--handoff FILE]   what this boot did
  check-config FILE                  validate a config as the init would
  (run as PID 1, slotinit boots the system)";

fn main() -> ExitCode {
    if std::process::id() == 1 {
        boot::run();
    }
    kmsg::init_stderr(log::LevelFilter::Info);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["status", rest @ ..] => status(rest),
        ["check-config", file] => check_config(file),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check_config(file: &str) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("slotinit: cannot read {file}: {e}");
            return ExitCode::from(1);
        }
    };
    match Config::parse(&text, file) {
        Ok(_) => {
            println!("{file}: ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slotinit: {}", boot::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn status(rest: &[&str]) -> ExitCode {
    let mut json = false;
    let mut path = HANDOFF_PATH.to_string();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--json" => json = true,
            "--handoff" => match it.next() {
                Some(p) => path = p.to_string(),
                None => {
                    eprintln!("slotinit: --handoff needs a file");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("slotinit: status: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let handoff = match Handoff::load(Path::new(&path)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("slotinit: cannot read the handoff record {path}: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", handoff.to_json());
        return ExitCode::SUCCESS;
    }
    let slot = handoff.slot.map_or("unknown".into(), |s| s.to_string());
    let source = handoff.decision.as_ref().map_or("unknown".into(), |d| {
        format!("{:?}", d.source).to_lowercase()
    });
    println!("booted slot: {slot} ({source})");
    println!(
        "persistent:  {}",
        if handoff.persistent_degraded {
            "UNAVAILABLE (tmpfs /var)"
        } else {
            "mounted"
        }
    );
    if let Some(id) = &handoff.machine_id {
        println!(
            "machine-id:  {id} ({})",
            handoff.machine_id_source.as_deref().unwrap_or("?")
        );
    }
    for e in &handoff.errors {
        println!("error:       {e}");
    }
    for w in &handoff.warnings {
        println!("warning:     {w}");
    }
    ExitCode::SUCCESS
}
