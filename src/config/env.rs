//! Scalar config values with `${VAR}` substitution, and the value types they parse into.
//!
//! Every scalar of the config file (except policy rules, as in the original) may be
//! written as `${NAME}`: the whole trimmed value is replaced by the environment
//! variable `NAME`. A missing variable is an error, reported by the YAML layer with the
//! line it was referenced on.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A config scalar of type `T`, after `${VAR}` substitution.
#[derive(Clone, PartialEq, Eq)]
pub struct Env<T>(pub T);

impl<T: fmt::Debug> fmt::Debug for Env<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Substitutes `${NAME}` when it is the whole (trimmed) value.
pub fn substitute(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let Some(inner) = trimmed.strip_prefix("${").and_then(|s| s.strip_suffix('}')) else {
        return Ok(raw.to_string());
    };
    let name = inner.trim();
    if name.is_empty() {
        return Err("empty env variable name in '${}'".into());
    }
    std::env::var(name).map_err(|_| {
        format!(
            "referenced env variable '{name}' is not set; export it or write the value in the file"
        )
    })
}

impl<'de, T> Deserialize<'de> for Env<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarText<T>(PhantomData<T>);

        impl<T> Visitor<'_> for ScalarText<T>
        where
            T: FromStr,
            T::Err: fmt::Display,
        {
            type Value = Env<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar value")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Env<T>, E> {
                let text = substitute(v).map_err(E::custom)?;
                text.trim().parse().map(Env).map_err(E::custom)
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Env<T>, E> {
                self.visit_str(if v { "true" } else { "false" })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Env<T>, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Env<T>, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Env<T>, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_unit<E: de::Error>(self) -> Result<Env<T>, E> {
                self.visit_str("")
            }
        }

        d.deserialize_any(ScalarText(PhantomData))
    }
}

/// A Go-syntax duration (`300ms`, `30s`, `5m`, `1h30m`); a bare `0` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(GoDuration).ok_or_else(|| {
            format!("invalid duration '{s}': use a number with a unit, e.g. 500ms, 30s, 5m, 1h30m")
        })
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `tls.auth` / `--auth`: whether client certificates are verified against CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMode(pub bool);

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(AuthMode(true)),
            "off" | "false" | "" => Ok(AuthMode(false)),
            other => Err(format!("invalid auth '{other}': use 'on' or 'off'")),
        }
    }
}

/// A log threshold: `on`/`off` of the 2023 files, or a level of the last release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub log::LevelFilter);

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use log::LevelFilter as L;
        let upper = s.trim().to_ascii_uppercase();
        let (base, offset) = match upper.split_once('+') {
            Some((base, n)) => (base.trim(), n.trim().parse::<i32>().ok()),
            None => match upper.split_once('-') {
                Some((base, n)) if !base.is_empty() => {
                    (base.trim(), n.trim().parse::<i32>().ok().map(|n| -n))
                }
                _ => (upper.as_str(), Some(0)),
            },
        };
        let offset = offset.ok_or_else(|| format!("invalid log level '{s}'"))?;
        // slog numbering: DEBUG -4, INFO 0, WARN 4, ERROR 8; above ERROR logs nothing.
        let number = match base {
            "" | "ON" | "INFO" => 0,
            "OFF" => return Ok(LogLevel(L::Off)),
            "DEBUG" => -4,
            "WARN" => 4,
            "ERROR" => 8,
            n => n.parse::<i32>().map_err(|_| {
                format!("invalid log level '{s}': use on, off, DEBUG, INFO, WARN or ERROR")
            })?,
        } + offset;
        Ok(LogLevel(match number {
            i32::MIN..=-4 => L::Debug,
            -3..=0 => L::Info,
            1..=4 => L::Warn,
            5..=8 => L::Error,
            _ => L::Off,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5 minutes"), None);
    }

    #[test]
    fn log_levels_of_both_generations() {
        use log::LevelFilter as L;
        for (text, level) in [
            ("on", L::Info),
            ("off", L::Off),
            ("", L::Info),
            ("debug", L::Debug),
            ("WARN", L::Warn),
            ("ERROR", L::Error),
            ("INFO+2", L::Warn),
            ("ERROR+1", L::Off),
        ] {
            assert_eq!(text.parse::<LogLevel>().unwrap().0, level, "{text}");
        }
        assert!("loud".parse::<LogLevel>().is_err());
    }

    #[test]
    fn env_substitution_is_whole_value_only() {
        // SAFETY: tests in this module are the only users of this variable.
        unsafe { std::env::set_var("KES_TEST_ENV_SUBST", "value") };
        assert_eq!(substitute("${KES_TEST_ENV_SUBST}").unwrap(), "value");
        assert_eq!(substitute("  ${ KES_TEST_ENV_SUBST } ").unwrap(), "value");
        assert_eq!(
            substitute("a${KES_TEST_ENV_SUBST}").unwrap(),
            "a${KES_TEST_ENV_SUBST}"
        );
        assert!(substitute("${KES_TEST_ENV_SURELY_UNSET}").is_err());
    }
}
