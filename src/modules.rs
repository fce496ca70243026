//! Kernel modules: the initramfs builder lists them in load order (dependencies
//! and soft dependencies first, resolved from the kernel's own metadata); the init
//! loads each with finit_module.

use std::path::{Path, PathBuf};

/// Where the builder writes the load order inside the initramfs.
pub const LOAD_LIST: &str = "/etc/slotinit/modules.load";

/// The module paths of a load list: one absolute path per line, `#` comments.
pub fn parse_load_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect()
}

/// What loading produced, for the log and the handoff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    /// Already in the kernel (built in or loaded before).
    pub present: usize,
    /// `path: error`, for each module that failed.
    pub failed: Vec<String>,
}

/// Loads every module of the list in order. A failure is logged and the rest
/// still load: a missing filesystem module must not stop the disk driver.
pub fn load_all(list: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no module list {}: {e}; loading no modules", list.display());
            return report;
        }
    };
    for path in parse_load_list(&text) {
        match load_one(&path) {
            Ok(()) => report.loaded += 1,
            Err(nix::errno::Errno::EEXIST) => report.present += 1,
            Err(e) => {
                log::error!("cannot load module {}: {e}", path.display());
                report.failed.push(format!("{}: {e}", path.display()));
            }
        }
    }
    report
}

fn load_one(path: &Path) -> Result<(), nix::errno::Errno> {
    log::debug!("finit_module {}", path.display());
    let file = std::fs::File::open(path)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_list_keeps_order_and_skips_comments() {
        let list = "# generated\n/lib/modules/v/a.ko\n\n  /lib/modules/v/b.ko  \n";
        assert_eq!(
            parse_load_list(list),
            vec![
                PathBuf::from("/lib/modules/v/a.ko"),
                PathBuf::from("/lib/modules/v/b.ko")
            ]
        );
    }
}
