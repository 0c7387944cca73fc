//! Byte sizes in config: an integer number of bytes, or a string with a unit (`"64MiB"`,
//! `"512 KiB"`, `"1GiB"`, `"100B"`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`, `"64 MiB"`, `"100"` or `"100B"`.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("expected a size such as \"64MiB\", found {s:?}"))?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?}; use B, KiB, MiB or GiB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// Splits `"64 MiB"` into `(64, "MiB")`; `None` unless it starts with digits that fit a u64.
pub(super) fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", n >> 30)
        } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, found {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    fn check(input: &str, expect: Result<u64, &str>) {
        let got = ByteSize::parse(input).map(|b| b.0);
        assert_eq!(
            got.as_ref().copied().map_err(String::as_str),
            expect,
            "input {input:?}"
        );
    }

    #[test]
    fn parse() {
        check("64MiB", Ok(64 << 20));
        check("64 MiB", Ok(64 << 20));
        check("100", Ok(100));
        check("100B", Ok(100));
        check("2GiB", Ok(2 << 30));
        check(
            "1.5MiB",
            Err("unknown size unit \".5MiB\" in \"1.5MiB\"; use B, KiB, MiB or GiB"),
        );
        check(
            "MiB",
            Err("expected a size such as \"64MiB\", found \"MiB\""),
        );
        check(
            "64mb",
            Err("unknown size unit \"mb\" in \"64mb\"; use B, KiB, MiB or GiB"),
        );
        check(
            "99999999999999GiB",
            Err("size \"99999999999999GiB\" is too large"),
        );
    }

    #[test]
    fn display_round_trips() {
        for n in [1u64, 1000, 1024, 64 << 20, 3 << 30] {
            let shown = ByteSize(n).to_string();
            assert_eq!(ByteSize::parse(&shown).unwrap().0, n, "{shown}");
        }
    }
}
