//! Kernel command line: a tokenizer with the kernel's quoting rules and the typed
//! view of the keys slotinit reads.

use crate::slot::Slot;

/// The cmdline as the kernel split it: `key`, `key=value`, `"key=value with spaces"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Splits like the kernel's `next_arg()`: whitespace separates, double quotes
    /// group (and are dropped), the first `=` splits key from value. Bytes that are
    /// not UTF-8 are replaced rather than rejected: one odd byte must not hide the
    /// rest of the line from PID 1.
    pub fn parse(text: &[u8]) -> Self {
        let text = String::from_utf8_lossy(text);
        let mut params = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let mut token = String::new();
            let mut quoted = false;
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() && !quoted {
                    break;
                }
                chars.next();
                if c == '"' {
                    quoted = !quoted;
                } else {
                    token.push(c);
                }
            }
            match token.split_once('=') {
                Some((k, v)) => params.push((k.to_string(), Some(v.to_string()))),
                None => params.push((token, None)),
            }
        }
        Cmdline { params }
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

    /// True if `key` is present, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }
}

/// What the user asked for on the cmdline, after validation. Invalid values are
/// kept as warnings so the caller can log them and carry on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// `slotinit.slot=a|b`.
    pub slot_override: Option<Slot>,
    /// `init=`: the system's init; None means the configured default.
    pub init: Option<String>,
    /// `slotinit.emergency=shell`.
    pub emergency_shell: bool,
    /// `rauc.slot=<bootname>`, as the bootloader wrote it.
    pub rauc_slot: Option<String>,
    /// `slotinit.debug`: log every kernel call.
    pub debug: bool,
    /// Values that were present but unusable, each a complete message.
    pub warnings: Vec<String>,
}

impl BootArgs {
    pub fn from_cmdline(cmdline: &Cmdline) -> Self {
        let mut args = BootArgs {
            init: cmdline.get("init").map(str::to_string),
            rauc_slot: cmdline.get("rauc.slot").map(str::to_string),
            debug: cmdline.has("slotinit.debug"),
            ..BootArgs::default()
        };
        if let Some(value) = cmdline.get("slotinit.slot") {
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

    #[test]
    fn last_occurrence_wins() {
        let c = Cmdline::parse(b"slotinit.slot=a slotinit.slot=b");
        assert_eq!(c.get("slotinit.slot"), Some("b"));
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
    fn very_long_cmdline() {
        let mut text = "x=y ".repeat(10_000);
        text.push_str("slotinit.slot=b");
        let args = BootArgs::from_cmdline(&Cmdline::parse(text.as_bytes()));
        assert_eq!(args.slot_override, Some(Slot::B));
    }
}
