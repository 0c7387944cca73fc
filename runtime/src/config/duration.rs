//! Durations in config: a string with a unit (`"500ms"`, `"30s"`, `"15m"`, `"12h"`, `"7d"`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A span of time written with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// Parses `"500ms"`, `"30s"`, `"15m"`, `"12h"` or `"7d"`.
    pub fn parse(s: &str) -> Result<Span, String> {
        let (n, unit) = super::size::number_and_unit(s.trim())
            .ok_or_else(|| format!("expected a duration such as \"7d\" or \"30s\", found {s:?}"))?;
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("duration {s:?} needs a unit: ms, s, m, h or d")),
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}; use ms, s, m, h or d"
                ));
            }
        };
        n.checked_mul(ms)
            .map(|ms| Span(Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration {s:?} is too long"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"7d\", \"12h\" or \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<u64, &str>) {
        let got = Span::parse(input).map(|s| s.0.as_millis() as u64);
        assert_eq!(
            got.as_ref().copied().map_err(String::as_str),
            expect,
            "input {input:?}"
        );
    }

    #[test]
    fn parse() {
        check("500ms", Ok(500));
        check("30s", Ok(30_000));
        check("15m", Ok(900_000));
        check("12h", Ok(43_200_000));
        check("7d", Ok(604_800_000));
        check("7", Err("duration \"7\" needs a unit: ms, s, m, h or d"));
        check(
            "7w",
            Err("unknown duration unit \"w\" in \"7w\"; use ms, s, m, h or d"),
        );
        check(
            "d",
            Err("expected a duration such as \"7d\" or \"30s\", found \"d\""),
        );
    }
}
