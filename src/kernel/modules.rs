//! Kernel modules: the initramfs builder lists them in load order (dependencies
//! and soft dependencies first, resolved from the kernel's own metadata); the init
//! loads each with finit_module, with the options the cmdline gives it
//! (`usb-storage.quirks=...`), as modprobe would.

use crate::kernel::cmdline::{module_name, ModuleOption};
use crate::kernel::sys::{enoent, errno_of, Sys};
use nix::errno::Errno;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// The module paths of a load list: one absolute path per line, `#` comments.
fn parse_load_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect()
}

/// What loading produced, for the log and the handoff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LoadReport {
    pub(crate) loaded: usize,
    /// Already in the kernel (built in or loaded before).
    pub(crate) present: usize,
    /// `path: error`, for each module that failed.
    pub(crate) failed: Vec<String>,
}

/// The module a file holds, as the kernel names it: the file name without
/// `.ko` (and a compression suffix), `-` read as `_` (Kbuild's KBUILD_MODNAME).
fn name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    (!stem.is_empty()).then(|| module_name(stem))
}

/// The parameter string finit_module gets for `module`: its cmdline options in
/// cmdline order, space separated, as modprobe (kmod's libkmod-config.c
/// `kmod_config_parse_kcmdline`) passes them.
fn params_for(module: &str, options: &[ModuleOption]) -> String {
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
pub(crate) fn load_all_with<S: Sys + ?Sized>(
    sys: &mut S,
    list: &Path,
    options: &[ModuleOption],
) -> LoadReport {
    let mut report = LoadReport::default();
    let text = match sys.read_file(list).and_then(|bytes| {
        let bytes = bytes.ok_or_else(enoent)?;
        String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })
    }) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no module list {}: {e}; loading no modules", list.display());
            return report;
        }
    };
    for path in parse_load_list(&text) {
        let params = name_of(&path).map_or_else(String::new, |m| params_for(&m, options));
        match load_with_params(sys, &path, &params, &mut report) {
            Ok(()) => report.loaded += 1,
            Err(Errno::EEXIST) => report.present += 1,
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
fn load_with_params<S: Sys + ?Sized>(
    sys: &mut S,
    path: &Path,
    params: &str,
    report: &mut LoadReport,
) -> Result<(), Errno> {
    if params.is_empty() {
        return load_one(sys, path, params);
    }
    match load_one(sys, path, params) {
        Err(Errno::EINVAL) => {
            let message = format!(
                "{}: the kernel rejected the cmdline options {params:?}; loading it without them",
                path.display()
            );
            log::error!("{message}");
            report.failed.push(message);
            load_one(sys, path, "")
        }
        other => other,
    }
}

fn load_one<S: Sys + ?Sized>(sys: &mut S, path: &Path, params: &str) -> Result<(), Errno> {
    // The cmdline was cut at its first NUL, so an option never holds one.
    let params = CString::new(params).map_err(|_| Errno::EINVAL)?;
    sys.finit_module(path, &params).map_err(|e| errno_of(&e))
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
        for (path, compressed) in [
            ("/m/virtio_blk.ko.xz", true),
            ("/m/ext4.ko.zst", true),
            ("/m/vfat.ko.gz", true),
            ("/m/overlay.ko", false),
            ("/m/odd.ko.bz2", false),
            ("/m/xz", false),
        ] {
            assert_eq!(
                crate::kernel::sys::is_compressed(Path::new(path)),
                compressed,
                "{path}"
            );
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

    /// Every module loads in list order; one already there is counted, one
    /// that fails is reported and the rest still load; options the kernel
    /// rejects are dropped for a second try.
    #[test]
    fn modules_load_in_order_through_sys() {
        let mut sys = crate::kernel::fake::Fake {
            errno: vec![
                ("finit_module /m/virtio_blk.ko".into(), libc::EEXIST),
                ("finit_module /m/bad.ko".into(), libc::ENOEXEC),
                (
                    "finit_module /m/usb-storage.ko \"quirks=x\"".into(),
                    libc::EINVAL,
                ),
            ],
            ..Default::default()
        };
        sys.files.insert(
            "/etc/slotinit/modules.load".into(),
            b"/m/virtio_blk.ko\n/m/bad.ko\n/m/usb-storage.ko\n/m/ext4.ko\n".to_vec(),
        );
        let c = crate::kernel::cmdline::Cmdline::parse(b"usb-storage.quirks=x");
        let report = load_all_with(
            &mut sys,
            Path::new("/etc/slotinit/modules.load"),
            &c.module_options(),
        );
        assert_eq!(
            sys.calls,
            [
                "read-file /etc/slotinit/modules.load",
                "finit_module /m/virtio_blk.ko \"\"",
                "finit_module /m/bad.ko \"\"",
                "finit_module /m/usb-storage.ko \"quirks=x\"",
                "finit_module /m/usb-storage.ko \"\"",
                "finit_module /m/ext4.ko \"\"",
            ]
        );
        assert_eq!((report.loaded, report.present), (2, 1));
        assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
        assert!(
            report.failed[0].starts_with("/m/bad.ko: ENOEXEC"),
            "{:?}",
            report.failed
        );
        // No list: nothing loads.
        let mut sys = crate::kernel::fake::Fake::default();
        let report = load_all_with(&mut sys, Path::new("/none"), &[]);
        assert_eq!(report, LoadReport::default());
        assert_eq!(sys.calls, ["read-file /none"]);
    }
}
