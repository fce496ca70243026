//! Kernel modules: the initramfs builder lists them in load order (dependencies
//! and soft dependencies first, resolved from the kernel's own metadata); the init
//! loads each with finit_module, with the options the cmdline gives it
//! (`usb-storage.quirks=...`), as modprobe would.

use crate::kernel::cmdline::{module_name, ModuleOption};
use std::ffi::CString;
use std::path::{Path, PathBuf};

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

/// The module a file holds, as the kernel names it: the file name without
/// `.ko` (and a compression suffix), `-` read as `_` (Kbuild's KBUILD_MODNAME).
pub fn name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    (!stem.is_empty()).then(|| module_name(stem))
}

/// The parameter string finit_module gets for `module`: its cmdline options in
/// cmdline order, space separated, as modprobe (kmod's libkmod-config.c
/// `kmod_config_parse_kcmdline`) passes them.
pub fn params_for(module: &str, options: &[ModuleOption]) -> String {
    let module = module_name(module);
    options
        .iter()
        .filter(|o| o.module == module)
        .map(ModuleOption::render)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads every module of the list in order, each with its cmdline `options`
/// ([`crate::kernel::cmdline::Cmdline::module_options`]). A failure is logged and the
/// rest still load: a missing filesystem module must not stop the disk driver.
pub fn load_all_with(list: &Path, options: &[ModuleOption]) -> LoadReport {
    let mut report = LoadReport::default();
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no module list {}: {e}; loading no modules", list.display());
            return report;
        }
    };
    for path in parse_load_list(&text) {
        let params = name_of(&path).map_or_else(String::new, |m| params_for(&m, options));
        match load_with_params(&path, &params, &mut report) {
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

/// Loads with the cmdline's options; when the kernel rejects them (EINVAL: a
/// value its parameter cannot take makes load_module fail), loads once more
/// without, so that a typo on the cmdline cannot keep the disk driver out.
fn load_with_params(
    path: &Path,
    params: &str,
    report: &mut LoadReport,
) -> Result<(), nix::errno::Errno> {
    if params.is_empty() {
        return load_one(path, params);
    }
    match load_one(path, params) {
        Err(nix::errno::Errno::EINVAL) => {
            let message = format!(
                "{}: the kernel rejected the cmdline options {params:?}; loading it without them",
                path.display()
            );
            log::error!("{message}");
            report.failed.push(message);
            load_one(path, "")
        }
        other => other,
    }
}

fn load_one(path: &Path, params: &str) -> Result<(), nix::errno::Errno> {
    log::debug!("finit_module {} {params:?}", path.display());
    // The cmdline was cut at its first NUL, so an option never holds one.
    let params = CString::new(params).map_err(|_| nix::errno::Errno::EINVAL)?;
    let file = std::fs::File::open(path)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_paths() {
        let cases = [
            (
                "/lib/modules/v/kernel/drivers/usb/storage/usb-storage.ko",
                Some("usb_storage"),
            ),
            ("/lib/modules/v/virtio_blk.ko.xz", Some("virtio_blk")),
            ("/lib/modules/v/ext4.ko.zst", Some("ext4")),
            ("/lib/modules/v/.ko", None),
        ];
        for (path, want) in cases {
            assert_eq!(name_of(Path::new(path)).as_deref(), want, "{path}");
        }
    }

    /// `usb-storage.quirks=` on the cmdline reaches usb-storage.ko, whichever
    /// of `-` and `_` either side spells it with; other modules get nothing.
    #[test]
    fn cmdline_options_reach_their_module() {
        let c = crate::kernel::cmdline::Cmdline::parse(
            b"usb_storage.quirks=0bda:9210:u console=ttyS0 usb-storage.delay_use=0               virtio_blk.queue_depth=\"8\" sdhci.debug_quirks=\"1 2\"",
        );
        let options = c.module_options();
        let usb = name_of(Path::new("/m/usb-storage.ko")).unwrap();
        assert_eq!(params_for(&usb, &options), "quirks=0bda:9210:u delay_use=0");
        assert_eq!(params_for("virtio-blk", &options), "queue_depth=8");
        assert_eq!(params_for("sdhci", &options), "debug_quirks=\"1 2\"");
        assert_eq!(params_for("ext4", &options), "");
    }

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
