//! Kernel command line: a tokenizer that splits exactly as the kernel does
//! (`next_arg()` in lib/cmdline.c, `parse_args()` in kernel/params.c), the
//! typed view of the keys slotinit reads, the arguments the kernel hands to
//! init, and the module options modprobe would apply.

use crate::config::MAX_WATCHDOG_S;
use crate::types::Slot;

/// The kernel's `isspace()`: its `_ctype` table (lib/ctype.c) marks HT, LF, VT,
/// FF, CR, space and also 0xA0 (Latin-1 no-break space) as `_S`. Rust's
/// `char::is_whitespace` differs (U+0085, U+2000.., not the byte 0xA0).
pub fn is_kernel_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

/// The most arguments the kernel passes to init besides its name
/// (`MAX_INIT_ARGS`, `CONFIG_INIT_ENV_ARG_LIMIT`, 32): one more and the kernel
/// panics before init runs, so slotinit never sees more.
pub const MAX_INIT_ARGS: usize = 32;

/// One token as `next_arg()` leaves it: the param and, after the first `=`
/// (not at index 0), the value. Byte ranges into the line.
struct Token {
    param: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

/// `next_arg()` of lib/cmdline.c on `s[start..]` (which starts at a non-space):
/// the token and where the next one starts (spaces skipped).
///
/// Its rules, kept byte for byte: a leading `"` is dropped and opens a quote;
/// a `"` anywhere toggles quoting (and stays in the text); unquoted whitespace
/// ends the token; the first `=` at an index above 0 splits param from value
/// (`=foo` is a param named `=foo`); a value starting with `"` loses that quote
/// and, if the token ends in `"`, that one too; a token that started with `"`
/// loses a final `"`.
fn next_arg(s: &[u8], start: usize) -> (Token, usize) {
    let mut a = start;
    let (mut in_quote, mut quoted) = (false, false);
    if s.get(a) == Some(&b'"') {
        a += 1;
        in_quote = true;
        quoted = true;
    }
    let mut i = 0;
    let mut equals = 0;
    while let Some(&c) = s.get(a + i) {
        if is_kernel_space(c) && !in_quote {
            break;
        }
        if equals == 0 && c == b'=' {
            equals = i;
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let end = a + i;
    // Where the C code writes a NUL over a closing quote, the strings end there.
    let mut cut = end;
    let mut value = None;
    if equals != 0 {
        let mut v = a + equals + 1;
        if v < end && s[v] == b'"' {
            v += 1;
            if s[end - 1] == b'"' {
                cut = end - 1;
            }
        }
        value = Some(v..end);
    }
    if quoted && i > 0 && s[end - 1] == b'"' {
        cut = end - 1;
    }
    let param_end = if equals != 0 {
        a + equals
    } else {
        end.min(cut)
    };
    let value = value.map(|v| v.start.min(cut)..cut.max(v.start.min(cut)));
    let mut next = if end < s.len() { end + 1 } else { end };
    while s.get(next).is_some_and(|b| is_kernel_space(*b)) {
        next += 1;
    }
    (
        Token {
            param: a..param_end.max(a),
            value,
        },
        next,
    )
}

/// The cmdline as the kernel split it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// The kernel parameters, before any `--`.
    params: Vec<(String, Option<String>)>,
    /// Everything after `--`, as `set_init_arg()` (init/main.c) hands it to
    /// init: `key=value` rejoined, quotes stripped as `next_arg()` strips them.
    init_args: Vec<String>,
}

impl Cmdline {
    /// Splits exactly like the kernel (`parse_args()` calling `next_arg()`):
    /// see [`next_arg`]. The line ends at the first NUL, as the C string does;
    /// a bare `--` ends the parameters and what follows goes to init (up to a
    /// second bare `--`, where the kernel's second `parse_args()` stops).
    /// Bytes that are not UTF-8 are replaced per token after splitting, so one
    /// odd byte cannot hide the rest of the line from PID 1.
    pub fn parse(text: &[u8]) -> Self {
        let text = match text.iter().position(|b| *b == 0) {
            Some(nul) => &text[..nul],
            None => text,
        };
        let lossy =
            |r: &std::ops::Range<usize>| String::from_utf8_lossy(&text[r.clone()]).into_owned();
        let mut pos = 0;
        while text.get(pos).is_some_and(|b| is_kernel_space(*b)) {
            pos += 1;
        }
        let mut out = Cmdline::default();
        let mut after_dashes = false;
        while pos < text.len() {
            let (token, next) = next_arg(text, pos);
            pos = next;
            let param = lossy(&token.param);
            if token.value.is_none() && param == "--" {
                if after_dashes {
                    break;
                }
                after_dashes = true;
                continue;
            }
            let value = token.value.as_ref().map(lossy);
            if after_dashes {
                // repair_env_string(): the param whole again, `=` restored.
                out.init_args.push(match value {
                    Some(v) => format!("{param}={v}"),
                    None => param,
                });
            } else {
                out.params.push((param, value));
            }
        }
        out
    }

    /// The value of the last `key=value`: the kernel and systemd let a later
    /// occurrence override an earlier one (a bootloader appends, a user appends more).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value `key` was given, in order, duplicates included: a key that
    /// two parties set must not silently be taken from the later one.
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// True if `key` is present, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// The kernel parameters (before `--`).
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// `gpt` on the cmdline: the kernel then reads a disk's alternate GPT when
    /// the primary is invalid. block/partitions/efi.c registers
    /// `__setup("gpt", force_gpt_fn)`, and `obsolete_checksetup()` (init/main.c)
    /// matches a `__setup` name as a prefix while `force_gpt_fn` ignores the
    /// rest: every parameter starting with `gpt` sets it.
    pub(crate) fn force_gpt(&self) -> bool {
        self.params.iter().any(|(k, _)| k.starts_with("gpt"))
    }

    /// The words after `--`, which the kernel hands to init as they are.
    pub fn init_args(&self) -> &[String] {
        &self.init_args
    }

    /// The arguments the kernel passes to init after its name, modelled on
    /// init/main.c: `unknown_bootoption()` hands init each parameter that has no
    /// value and no `.` (`single`, `emergency`, `3`, `=foo`), unless a kernel
    /// handler consumed it; `init=` and `rdinit=` (`init_setup()`,
    /// `rdinit_setup()`) drop those collected before them; the words after `--`
    /// follow (`set_init_arg()`); at most [`MAX_INIT_ARGS`].
    ///
    /// Which bare words a kernel consumes depends on its config (every
    /// `__setup`, `early_param` and `core_param`); [`CONSUMED`] lists the common
    /// ones. PID 1's own argv, which the kernel built with the real tables, is
    /// exact: prefer [`kernel_init_argv`] at boot.
    pub fn init_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = Vec::new();
        for (key, value) in self.params() {
            if value.is_some() && (key == "init" || key == "rdinit") {
                argv.clear();
                continue;
            }
            let whole = match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_string(),
            };
            // The bootloader identifiers unknown_bootoption() drops.
            if whole.starts_with("BOOT_IMAGE=") || whole.starts_with("kexec") {
                continue;
            }
            if value.is_some() || key.contains('.') || CONSUMED.contains(&key) {
                continue;
            }
            argv.push(key.to_string());
        }
        argv.extend(self.init_args.iter().cloned());
        argv.truncate(MAX_INIT_ARGS);
        argv
    }

    /// The module options on the cmdline, as modprobe takes them
    /// (`kmod_config_parse_kcmdline()` in kmod's libkmod-config.c): every
    /// parameter whose key has a `.` is `module.option[=value]`, the module name
    /// before the first `.` with `-` read as `_` (kmod's `underscores()`; the
    /// kernel's `parameq()` treats them alike). The kernel leaves these to
    /// modprobe for modules not built in, and slotinit loads without modprobe.
    pub fn module_options(&self) -> Vec<ModuleOption> {
        self.params()
            .filter_map(|(key, value)| {
                let (module, option) = key.split_once('.')?;
                if module.is_empty() || option.is_empty() {
                    return None;
                }
                Some(ModuleOption {
                    module: module_name(module),
                    option: option.to_string(),
                    value: value.map(str::to_string),
                })
            })
            .collect()
    }
}

/// Bare words every kernel slotinit targets consumes itself, so they never
/// reach init's argv: `__setup("ro")`, `__setup("rw")`, `__setup("rootwait")`
/// (init/do_mounts.c), `__setup("noinitrd")`, `early_param("quiet")`,
/// `early_param("debug")`, `core_param(initcall_debug)` (init/main.c),
/// `early_param("nosmp")` (kernel/smp.c), `early_param("earlycon")`,
/// `__setup("norandmaps")` (mm/memory.c). Handlers that depend on the kernel's
/// config or architecture (`nomodeset`, x86's `earlyprintk`) are not listed.
pub const CONSUMED: [&str; 10] = [
    "ro",
    "rw",
    "quiet",
    "debug",
    "rootwait",
    "noinitrd",
    "nosmp",
    "earlycon",
    "initcall_debug",
    "norandmaps",
];

/// What the kernel passed PID 1 after its own name: exactly init's argument
/// list as init/main.c built it (argv_init), with the real handler tables.
/// Arguments that are not UTF-8 are replaced, not dropped.
pub(crate) fn kernel_init_argv(
    own_argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<String> {
    own_argv
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// A module name as the kernel and kmod compare it: `-` is `_`.
pub(super) fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// One `module.option[=value]` from the cmdline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleOption {
    /// Normalised (`usb_storage`).
    pub module: String,
    pub option: String,
    value: Option<String>,
}

impl ModuleOption {
    /// As the kernel's `parse_args()` reads a module's parameter string: a value
    /// with whitespace is quoted so that it stays one parameter.
    pub fn render(&self) -> String {
        match &self.value {
            None => self.option.clone(),
            Some(v) if v.bytes().any(is_kernel_space) => format!("{}=\"{v}\"", self.option),
            Some(v) => format!("{}={v}", self.option),
        }
    }
}

/// The values `key` was given more than once with, when they differ: the
/// message naming them all; None when it appears at most once or always alike.
pub fn conflict(cmdline: &Cmdline, key: &str) -> Option<String> {
    let values = cmdline.values(key);
    let first = values.first()?;
    if values.iter().all(|v| v == first) {
        return None;
    }
    let listed: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    Some(format!(
        "{key}= is set {} times with different values ({}): two parties disagree",
        values.len(),
        listed.join(", ")
    ))
}

/// The most threads `slotinit.module_threads=` may ask for.
pub const MAX_MODULE_THREADS: usize = 16;

/// What the user asked for on the cmdline, after validation. Invalid values are
/// kept as warnings so the caller can log them and carry on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// `slotinit.slot=a|b`; None as well when it was given twice with different values.
    pub slot_override: Option<Slot>,
    /// `init=`: the system's init; None means the configured default.
    pub init: Option<String>,
    /// The arguments for the system's init after its name (`single`, the words
    /// after `--`): [`Cmdline::init_argv`]. At boot, replace them with
    /// [`kernel_init_argv`] of PID 1's own argv, which the kernel built exactly.
    pub init_argv: Vec<String>,
    /// `slotinit.emergency=shell`.
    pub emergency_shell: bool,
    /// `slotinit.debug`: log every kernel call.
    pub debug: bool,
    /// `slotinit.watchdog=SECONDS`: the watchdog timeout, over the config's
    /// `boot.watchdog_s` (0: off); None when absent or unusable.
    pub watchdog_s: Option<u32>,
    /// `slotinit.module_threads=N`: how many threads load modules (1 to
    /// [`MAX_MODULE_THREADS`]); None: one per CPU, at most 4.
    pub module_threads: Option<usize>,
    /// Values that were present but unusable, each a complete message.
    pub warnings: Vec<String>,
}

impl BootArgs {
    pub fn from_cmdline(cmdline: &Cmdline) -> Self {
        let mut args = BootArgs {
            init: cmdline.get("init").map(str::to_string),
            init_argv: cmdline.init_argv(),
            debug: cmdline.has("slotinit.debug"),
            ..BootArgs::default()
        };
        if let Some(message) = conflict(cmdline, "slotinit.slot") {
            // Whoever appended last must not win silently: no override at all,
            // the boot state and the bootloader decide as if none was given.
            args.warnings
                .push(format!("ignoring the override: {message}"));
        } else if let Some(value) = cmdline.get("slotinit.slot") {
            match Slot::parse(value) {
                Some(slot) => args.slot_override = Some(slot),
                None => args.warnings.push(format!(
                    "ignoring slotinit.slot={value:?}: expected \"a\" or \"b\""
                )),
            }
        }
        match cmdline.get("slotinit.emergency") {
            None => {}
            Some("shell") => args.emergency_shell = true,
            Some(other) => args.warnings.push(format!(
                "ignoring slotinit.emergency={other:?}: the only value is \"shell\""
            )),
        }
        if let Some(message) = conflict(cmdline, "slotinit.watchdog") {
            args.warnings
                .push(format!("ignoring slotinit.watchdog: {message}"));
        } else if let Some(value) = cmdline.get("slotinit.watchdog") {
            match value.parse::<u32>() {
                Ok(s) if s <= MAX_WATCHDOG_S => args.watchdog_s = Some(s),
                _ => args.warnings.push(format!(
                    "ignoring slotinit.watchdog={value:?}: expected seconds, 0 (off) to {MAX_WATCHDOG_S}"
                )),
            }
        }
        if let Some(message) = conflict(cmdline, "slotinit.module_threads") {
            args.warnings
                .push(format!("ignoring slotinit.module_threads: {message}"));
        } else if let Some(value) = cmdline.get("slotinit.module_threads") {
            match value.parse::<usize>() {
                Ok(n) if (1..=MAX_MODULE_THREADS).contains(&n) => args.module_threads = Some(n),
                _ => args.warnings.push(format!(
                    "ignoring slotinit.module_threads={value:?}: expected 1 to {MAX_MODULE_THREADS}"
                )),
            }
        }
        if let Some(init) = &args.init {
            if !init.starts_with('/') {
                args.warnings.push(format!(
                    "ignoring init={init:?}: it must be an absolute path"
                ));
                args.init = None;
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Params = Vec<(String, Option<String>)>;

    fn split(text: &[u8]) -> Params {
        Cmdline::parse(text)
            .params()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    /// What the kernel's next_arg() makes of each line (worked through
    /// lib/cmdline.c by hand): (param, value) per token.
    #[test]
    fn tokenizes_like_next_arg() {
        let p = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
        let cases: &[(&[u8], Params)] = &[
            (b"a b=c", vec![p("a", None), p("b", Some("c"))]),
            (b"x=1=2", vec![p("x", Some("1=2"))]),
            // A quote opening the token is dropped, as is the one closing it.
            (b"\"foo=a b\"", vec![p("foo", Some("a b"))]),
            (b"\"a b\"", vec![p("a b", None)]),
            // A value's opening quote is dropped, and a quote ending the token.
            (b"k=\"v w\" z", vec![p("k", Some("v w")), p("z", None)]),
            // Quotes inside a word group whitespace but stay in the text.
            (b"a\"b c\"d e", vec![p("a\"b c\"d", None), p("e", None)]),
            (b"k=a\"b c\"d", vec![p("k", Some("a\"b c\"d"))]),
            // Only the value's leading quote goes; the inner one stays.
            (b"k=\"v\"x", vec![p("k", Some("v\"x"))]),
            (b"k=\"", vec![p("k", Some(""))]),
            // An `=` at index 0 does not split: the kernel tests `equals == 0`.
            (b"=foo", vec![p("=foo", None)]),
            (b"=a=b", vec![p("=a", Some("b"))]),
            (b"\"=foo\"", vec![p("=foo", None)]),
            (b"k=", vec![p("k", Some(""))]),
            // An unterminated quote runs to the end of the line.
            (b"a=\"x y z", vec![p("a", Some("x y z"))]),
            (b"a=v\" b c", vec![p("a", Some("v\" b c"))]),
            (b"\"\"", vec![p("", None)]),
            (b"\"", vec![p("", None)]),
            // 0xA0 is whitespace in the kernel's _ctype table; VT and FF too.
            (
                b"a\xa0b\x0bc\x0cd",
                vec![p("a", None), p("b", None), p("c", None), p("d", None)],
            ),
            // ... but U+0085 and U+2003 are not (Rust's is_whitespace says they are).
            (
                "a\u{85}b c\u{2003}d".as_bytes(),
                vec![p("a\u{85}b", None), p("c\u{2003}d", None)],
            ),
            // The C string ends at a NUL.
            (b"a b\0c d", vec![p("a", None), p("b", None)]),
            (b" \t\n ", vec![]),
            (b"", vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(&split(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        let c = Cmdline::parse(b"console=ttyAMA0  ro \"foo=a b\" quiet x=1=2\n");
        let got: Vec<_> = c.params().collect();
        assert_eq!(
            got,
            vec![
                ("console", Some("ttyAMA0")),
                ("ro", None),
                ("foo", Some("a b")),
                ("quiet", None),
                ("x", Some("1=2")),
            ]
        );
    }

    #[test]
    fn quotes_inside_a_value() {
        let c = Cmdline::parse(b"init=\"/sbin/my init\" k=\"v\"");
        assert_eq!(c.get("init"), Some("/sbin/my init"));
        assert_eq!(c.get("k"), Some("v"));
    }

    /// `--` ends the parameters: a key after it is init's argument, not a
    /// parameter slotinit reads; a second `--` ends init's arguments too.
    #[test]
    fn dashes_end_the_parameters() {
        let c = Cmdline::parse(b"a=1 -- rauc.slot=B \"x y\" k=\"v\" -- z");
        assert_eq!(c.get("rauc.slot"), None);
        assert_eq!(c.params().count(), 1);
        assert_eq!(c.init_args(), ["rauc.slot=B", "x y", "k=v"]);
        // `--` with a value, or quoted with a value, is an ordinary parameter.
        let c = Cmdline::parse(b"--=1 b");
        assert_eq!(c.get("--"), Some("1"));
        assert!(c.init_args().is_empty());
        let c = Cmdline::parse(b"\"--\" b");
        assert_eq!(c.init_args(), ["b"]);
    }

    /// The words the kernel hands to init (init/main.c unknown_bootoption,
    /// set_init_arg, init_setup).
    #[test]
    fn init_argv_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"console=ttyAMA0 root=/dev/vda2 ro quiet", &[]),
            (b"single", &["single"]),
            (b"quiet emergency splash 3", &["emergency", "splash", "3"]),
            // Dotted keys are module options; key=value goes to the environment.
            (b"usb-storage.quirks=1:2:u rauc.slot=A foo=bar debug", &[]),
            (b"fsck.mode", &[]),
            (b"=foo", &["=foo"]),
            (b"\"a b\"", &["a b"]),
            // init= drops what came before it, not what follows.
            (b"single init=/sbin/init emergency", &["emergency"]),
            (b"single rdinit=/init", &[]),
            // A bare `init` is no init= and goes to init.
            (b"init", &["init"]),
            (b"kexec BOOT_IMAGE=/vmlinuz single", &["single"]),
            (
                b"single -- a=1 \"b c\" x.y",
                &["single", "a=1", "b c", "x.y"],
            ),
            (b"-- -- s", &[]),
        ];
        for (text, want) in cases {
            let c = Cmdline::parse(text);
            assert_eq!(c.init_argv(), *want, "{}", String::from_utf8_lossy(text));
            assert_eq!(BootArgs::from_cmdline(&c).init_argv, *want);
        }
        let many = "w ".repeat(40);
        assert_eq!(
            Cmdline::parse(many.as_bytes()).init_argv().len(),
            MAX_INIT_ARGS
        );
    }

    #[test]
    fn force_gpt_is_any_gpt_prefix() {
        for (text, want) in [
            (&b"root=/dev/vda2 gpt"[..], true),
            (b"gpt=0", true),
            (b"gptx", true),
            (b"xgpt", false),
            (b"-- gpt", false),
            (b"", false),
        ] {
            assert_eq!(Cmdline::parse(text).force_gpt(), want, "{text:?}");
        }
    }

    #[test]
    fn kernel_argv_skips_pid1s_name() {
        let argv = ["/init", "single", "a=1"].map(std::ffi::OsString::from);
        assert_eq!(kernel_init_argv(argv), ["single", "a=1"]);
    }

    #[test]
    fn module_options_from_the_cmdline() {
        let c = Cmdline::parse(
            b"usb-storage.quirks=0bda:9210:u usb_storage.delay_use=\"1 2\" \
              sdhci.debug_quirks2 rauc.slot=A .x=1 m.=2 console=ttyS0 -- e1000.x=1",
        );
        let got: Vec<(String, String)> = c
            .module_options()
            .iter()
            .map(|o| (o.module.clone(), o.render()))
            .collect();
        let want = [
            ("usb_storage", "quirks=0bda:9210:u"),
            ("usb_storage", "delay_use=\"1 2\""),
            ("sdhci", "debug_quirks2"),
            ("rauc", "slot=A"),
        ];
        assert_eq!(
            got,
            want.map(|(m, o)| (m.to_string(), o.to_string())).to_vec()
        );
    }

    #[test]
    fn last_occurrence_wins() {
        let c = Cmdline::parse(b"slotinit.slot=a slotinit.slot=b");
        assert_eq!(c.get("slotinit.slot"), Some("b"));
        assert_eq!(c.values("slotinit.slot"), ["a", "b"]);
    }

    #[test]
    fn empty_and_whitespace_only() {
        assert_eq!(Cmdline::parse(b"").params().count(), 0);
        assert_eq!(Cmdline::parse(b" \t\n ").params().count(), 0);
    }

    #[test]
    fn odd_bytes_do_not_hide_the_rest() {
        let c = Cmdline::parse(b"a=\xff\xfe slotinit.slot=b \x01");
        assert_eq!(c.get("slotinit.slot"), Some("b"));
    }

    #[test]
    fn unterminated_quote_takes_the_rest() {
        let c = Cmdline::parse(b"a=\"x y z");
        assert_eq!(c.get("a"), Some("x y z"));
    }

    #[test]
    fn boot_args_table() {
        let cases: &[(&[u8], Option<Slot>, usize)] = &[
            (b"", None, 0),
            (b"slotinit.slot=a", Some(Slot::A), 0),
            (b"slotinit.slot=B", Some(Slot::B), 0),
            (b"slotinit.slot=c", None, 1),
            (b"slotinit.slot=", None, 1),
            (b"slotinit.slot=b slotinit.slot=z", None, 1),
            // The same value twice is one word; two different ones are a conflict.
            (b"slotinit.slot=b slotinit.slot=b", Some(Slot::B), 0),
            (b"slotinit.slot=a slotinit.slot=b", None, 1),
        ];
        for (text, slot, warnings) in cases {
            let args = BootArgs::from_cmdline(&Cmdline::parse(text));
            assert_eq!(
                args.slot_override,
                *slot,
                "{}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(args.warnings.len(), *warnings, "{:?}", args.warnings);
        }
    }

    #[test]
    fn conflicting_override_names_both_values() {
        let args = BootArgs::from_cmdline(&Cmdline::parse(b"slotinit.slot=a slotinit.slot=b"));
        assert!(
            args.warnings[0].contains("\"a\", \"b\""),
            "{}",
            args.warnings[0]
        );
    }

    #[test]
    fn bad_override_names_the_value() {
        let args = BootArgs::from_cmdline(&Cmdline::parse(b"slotinit.slot=c"));
        assert!(args.warnings[0].contains("\"c\""), "{}", args.warnings[0]);
    }

    #[test]
    fn init_and_emergency() {
        let args = BootArgs::from_cmdline(&Cmdline::parse(
            b"init=/lib/systemd/systemd slotinit.emergency=shell",
        ));
        assert_eq!(args.init.as_deref(), Some("/lib/systemd/systemd"));
        assert!(args.emergency_shell);
        let args = BootArgs::from_cmdline(&Cmdline::parse(b"init=sbin/init slotinit.emergency=x"));
        assert_eq!(args.init, None);
        assert!(!args.emergency_shell);
        assert_eq!(args.warnings.len(), 2);
    }

    #[test]
    fn watchdog_seconds() {
        let cases: &[(&[u8], Option<u32>, usize)] = &[
            (b"", None, 0),
            (b"slotinit.watchdog=30", Some(30), 0),
            (b"slotinit.watchdog=0", Some(0), 0),
            (b"slotinit.watchdog=3600", Some(3600), 0),
            (b"slotinit.watchdog=3601", None, 1),
            (b"slotinit.watchdog=-1", None, 1),
            (b"slotinit.watchdog=10s", None, 1),
            (b"slotinit.watchdog", None, 0),
            (b"slotinit.watchdog=", None, 1),
            (b"slotinit.watchdog=5 slotinit.watchdog=5", Some(5), 0),
            (b"slotinit.watchdog=5 slotinit.watchdog=0", None, 1),
        ];
        for (text, want, warnings) in cases {
            let args = BootArgs::from_cmdline(&Cmdline::parse(text));
            let line = String::from_utf8_lossy(text);
            assert_eq!(args.watchdog_s, *want, "{line}");
            assert_eq!(
                args.warnings.len(),
                *warnings,
                "{line}: {:?}",
                args.warnings
            );
        }
        let args = BootArgs::from_cmdline(&Cmdline::parse(b"slotinit.watchdog=10s"));
        assert!(args.warnings[0].contains("\"10s\""), "{}", args.warnings[0]);
    }

    #[test]
    fn module_threads() {
        let cases: &[(&[u8], Option<usize>, usize)] = &[
            (b"", None, 0),
            (b"slotinit.module_threads=1", Some(1), 0),
            (b"slotinit.module_threads=16", Some(16), 0),
            (b"slotinit.module_threads=0", None, 1),
            (b"slotinit.module_threads=17", None, 1),
            (b"slotinit.module_threads=two", None, 1),
            (
                b"slotinit.module_threads=2 slotinit.module_threads=3",
                None,
                1,
            ),
        ];
        for (text, want, warnings) in cases {
            let args = BootArgs::from_cmdline(&Cmdline::parse(text));
            let line = String::from_utf8_lossy(text);
            assert_eq!(args.module_threads, *want, "{line}");
            assert_eq!(
                args.warnings.len(),
                *warnings,
                "{line}: {:?}",
                args.warnings
            );
        }
    }

    #[test]
    fn very_long_cmdline() {
        let mut text = "x=y ".repeat(10_000);
        text.push_str("slotinit.slot=b");
        let args = BootArgs::from_cmdline(&Cmdline::parse(text.as_bytes()));
        assert_eq!(args.slot_override, Some(Slot::B));
    }
}
