//! A small POSIX-style flag parser on top of lexopt, shaped like Go's pflag:
//! `--flag value`, `--flag=value`, `-k`, combined short switches, flags before or after
//! positional arguments, `--` ends the flags. A single-dash long flag (`-key x`, Go's
//! standard `flag` package style used by the oldest releases) is accepted too.

use std::ffi::OsString;

use super::Exit;

/// One flag a command accepts.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    /// Whether the flag takes a value (`--key PATH`) or is a switch (`--json`).
    pub takes_value: bool,
}

/// A switch such as `--json`.
pub const fn switch(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        takes_value: false,
    }
}

/// A flag with a value such as `--key PATH`.
pub const fn option(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        takes_value: true,
    }
}

/// `-k/--insecure`, accepted by every command that talks to a server.
pub const INSECURE: Flag = switch("insecure", Some('k'));
/// `--json`.
pub const JSON: Flag = switch("json", None);
/// `--color auto|never|always`.
pub const COLOR: Flag = option("color", None);
/// `-e/--enclave NAME`: accepted for compatibility, ignored (stateless servers).
pub const ENCLAVE: Flag = option("enclave", Some('e'));

/// `-k` and `-e` alone: the flags of `kes key create`, `import`, `rm`, `encrypt`,
/// `decrypt` and `dek`.
pub const BASIC_FLAGS: &[Flag] = &[INSECURE, ENCLAVE];

/// The parsed command line of one command.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Flags in the order given, with their value (empty for switches).
    flags: Vec<(&'static str, String)>,
    pub positionals: Vec<String>,
}

impl Parsed {
    /// Whether the flag was given.
    pub fn has(&self, long: &str) -> bool {
        self.flags.iter().any(|(name, _)| *name == long)
    }

    /// The last value given for the flag.
    pub fn value(&self, long: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(name, _)| *name == long)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for a repeatable flag, in order.
    pub fn values(&self, long: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(name, _)| *name == long)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Positional argument `i`, if present.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.positionals.get(i).map(String::as_str)
    }
}

thread_local! {
    /// The flag table of the last command on this thread that answered `--help`: the
    /// parser's own list, which `doc::tree` compares with what the help text documents.
    static HELP_FLAGS: std::cell::RefCell<Option<Vec<Flag>>> = const { std::cell::RefCell::new(None) };
}

/// Takes the flag table recorded by the last `--help` on this thread, if any.
pub fn take_help_flags() -> Option<Vec<Flag>> {
    HELP_FLAGS.with(|last| last.borrow_mut().take())
}

/// Parses `args` (without the command words themselves) for the command `command`
/// (e.g. "kes key create"). `-h`/`--help` anywhere returns `Exit::Help(usage)`.
pub fn parse(
    command: &str,
    usage: &'static str,
    flags: &[Flag],
    args: Vec<OsString>,
) -> Result<Parsed, Exit> {
    let args = rewrite_single_dash_long_flags(args, flags);
    let see_help = |message: String| Exit::Error(format!("{message}. See '{command} --help'"));
    let mut parser = lexopt::Parser::from_args(args);
    let mut parsed = Parsed::default();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(see_help(e.to_string())),
        };
        let flag = match arg {
            lexopt::Arg::Value(value) => {
                let value = value
                    .into_string()
                    .map_err(|v| see_help(format!("argument {v:?} is not valid UTF-8")))?;
                parsed.positionals.push(value);
                continue;
            }
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                HELP_FLAGS.with(|last| *last.borrow_mut() = Some(flags.to_vec()));
                return Err(Exit::Help(usage));
            }
            lexopt::Arg::Short(c) => flags
                .iter()
                .find(|f| f.short == Some(c))
                .ok_or_else(|| see_help(format!("unknown shorthand flag '{c}' in -{c}")))?,
            lexopt::Arg::Long(name) => flags
                .iter()
                .find(|f| f.long == name)
                .ok_or_else(|| see_help(format!("unknown flag: --{name}")))?,
        };
        let value = if flag.takes_value {
            let value = parser
                .value()
                .map_err(|_| see_help(format!("flag needs an argument: --{}", flag.long)))?;
            value.into_string().map_err(|v| {
                see_help(format!("value {v:?} of --{} is not valid UTF-8", flag.long))
            })?
        } else {
            String::new()
        };
        parsed.flags.push((flag.long, value));
    }
    Ok(parsed)
}

/// Turns `-key` into `--key` (and `-key=x` into `--key=x`) when `key` is one of the long
/// flags, as Go's `flag` package accepted; other arguments pass unchanged.
fn rewrite_single_dash_long_flags(args: Vec<OsString>, flags: &[Flag]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut flags_ended = false;
    for arg in args {
        if flags_ended {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            flags_ended = true;
            out.push(arg);
            continue;
        }
        if let Some(text) = arg.to_str() {
            if let Some(rest) = text.strip_prefix('-') {
                let name = rest.split('=').next().unwrap_or("");
                if !rest.starts_with('-') && name.len() > 1 && flags.iter().any(|f| f.long == name)
                {
                    out.push(OsString::from(format!("-{text}")));
                    continue;
                }
            }
        }
        out.push(arg);
    }
    out
}

/// Parses a Go duration string such as `720h`, `1h30m`, `1.5h`, `90s`, `500ms` (the
/// config file's parser).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    text.parse::<crate::config::GoDuration>().ok().map(|d| d.0)
}

/// Splits `args` into the subcommand name and the rest, for command groups.
pub(crate) fn subcommand(args: &[OsString]) -> Option<(String, Vec<OsString>)> {
    let first = args.first()?.to_string_lossy().into_owned();
    Some((first, args[1..].to_vec()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(
            parse_duration("720h"),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration(""), None);
    }

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    const FLAGS: &[Flag] = &[
        INSECURE,
        JSON,
        option("key", None),
        option("ip", None),
        switch("force", Some('f')),
    ];

    #[test]
    fn flags_before_and_after_positionals() {
        let p = parse("kes x", "usage", FLAGS, os(&["-k", "name", "--json"])).unwrap();
        assert!(p.has("insecure") && p.has("json"));
        assert_eq!(p.positionals, ["name"]);
        let p = parse("kes x", "usage", FLAGS, os(&["name", "-k"])).unwrap();
        assert!(p.has("insecure"));
        assert_eq!(p.positionals, ["name"]);
    }

    #[test]
    fn values_with_equals_or_space_and_repeated() {
        let p = parse(
            "kes x",
            "usage",
            FLAGS,
            os(&["--key=a.key", "--ip", "1.2.3.4", "--ip=::1"]),
        )
        .unwrap();
        assert_eq!(p.value("key"), Some("a.key"));
        assert_eq!(p.values("ip"), ["1.2.3.4", "::1"]);
    }

    #[test]
    fn combined_shorts_double_dash_and_go_style() {
        let p = parse("kes x", "usage", FLAGS, os(&["-kf", "--", "-not-a-flag"])).unwrap();
        assert!(p.has("insecure") && p.has("force"));
        assert_eq!(p.positionals, ["-not-a-flag"]);
        let p = parse(
            "kes x",
            "usage",
            FLAGS,
            os(&["-key", "x.key", "-ip=1.1.1.1"]),
        )
        .unwrap();
        assert_eq!(p.value("key"), Some("x.key"));
        assert_eq!(p.value("ip"), Some("1.1.1.1"));
    }

    #[test]
    fn help_and_errors() {
        assert!(matches!(
            parse("kes x", "usage", FLAGS, os(&["a", "-h"])),
            Err(Exit::Help("usage"))
        ));
        assert!(matches!(
            parse("kes x", "usage", FLAGS, os(&["--help"])),
            Err(Exit::Help(_))
        ));
        let Err(Exit::Error(message)) = parse("kes x", "usage", FLAGS, os(&["--nope"])) else {
            panic!("expected an error")
        };
        assert_eq!(message, "unknown flag: --nope. See 'kes x --help'");
        assert!(matches!(
            parse("kes x", "usage", FLAGS, os(&["--key"])),
            Err(Exit::Error(_))
        ));
        assert!(matches!(
            parse("kes x", "usage", FLAGS, os(&["--json=1"])),
            Err(Exit::Error(_))
        ));
    }
}
