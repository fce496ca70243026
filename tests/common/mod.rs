//! Helpers shared by the integration tests (`mod common;` in each).

use std::path::Path;
use std::process::Command;

/// `fw_printenv -c CONFIG -n VAR` (Debian's libubootenv): the value as the
/// bootloader's own tools read it; fails the test if the tool refuses.
pub fn fw_printenv(config: &Path, var: &str) -> String {
    let out = Command::new("fw_printenv")
        .arg("-c")
        .arg(config)
        .arg("-n")
        .arg(var)
        .output()
        .expect("fw_printenv missing: run tools/install-deps");
    assert!(
        out.status.success(),
        "fw_printenv {var}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
