//! The delivery settings of a binding: guarantee, ordering, concurrency, backoff and what a
//! poison message does to its key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a binding promises about how often a message's handling takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Acknowledged before the handler runs: never handled twice, lost if the host dies while
    /// handling it.
    AtMostOnce,
    /// Acknowledged only after the handler's outcome and effects are durable: never lost,
    /// handled again if the host dies before that.
    #[default]
    AtLeastOnce,
    /// The invocation's key-value writes, publishes and acknowledgement commit in one atomic
    /// step; publishes carry ids derived from the message, so a redelivery after a crash stores
    /// nothing twice.
    ExactlyOnce,
}

/// In which order a binding handles its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Any order; messages run in parallel up to the binding's concurrency.
    None,
    /// Source order, one message at a time (a retrying message holds everything behind it).
    Fifo,
    /// Messages of one key strictly in source order, including across retries; different keys
    /// in parallel. Messages without a key are not ordered.
    #[default]
    Key,
}

/// Under `key` ordering, what a message that failed for good does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Poison {
    /// The message goes to the dead-letter queue and the key moves on.
    #[default]
    DeadLetter,
    /// The message does not go to the dead-letter queue: it parks its key. The key's later
    /// messages wait, across restarts too, until an operator unparks it (`weir binding
    /// unpark`); then the message runs again from its first attempt and the rest follow in
    /// order.
    Park,
}

/// Delays between attempts: `initial * multiplier^(attempt-1)`, capped at `max`, each spread by
/// up to `jitter` (a fraction) either way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// Random spread, a fraction of the delay in `0..=1`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, with `unit` in `0..1` drawn at random for the
    /// jitter (0.5 gives the delay without spread).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * spread).clamp(0.0, self.max.as_secs_f64()))
    }
}

macro_rules! named {
    ($t:ty, $what:literal, $($name:literal => $v:path),+) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($v),)+
                    _ => Err(format!(concat!("unknown ", $what, " {:?}; expected one of {}"), s,
                        [$(concat!("`", $name, "`")),+].join(", "))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = match self { $($v => $name,)+ };
                f.write_str(name)
            }
        }
    };
}

named!(Guarantee, "guarantee",
    "at-most-once" => Guarantee::AtMostOnce,
    "at-least-once" => Guarantee::AtLeastOnce,
    "exactly-once" => Guarantee::ExactlyOnce);
named!(Ordering, "ordering",
    "none" => Ordering::None,
    "fifo" => Ordering::Fifo,
    "key" => Ordering::Key);
named!(Poison, "poison policy",
    "dead-letter" => Poison::DeadLetter,
    "park" => Poison::Park);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_spreads() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(3, 0.9), Duration::from_millis(400));
        assert_eq!(b.delay(40, 0.5), Duration::from_secs(60));
        let j = Backoff::default();
        assert_eq!(j.delay(1, 0.0), Duration::from_millis(80));
        assert_eq!(j.delay(1, 1.0), Duration::from_millis(120));
        assert_eq!(
            j.delay(40, 1.0),
            Duration::from_secs(60),
            "jitter stays under max"
        );
    }

    #[test]
    fn names_round_trip() {
        for g in ["at-most-once", "at-least-once", "exactly-once"] {
            assert_eq!(g.parse::<Guarantee>().unwrap().to_string(), g);
        }
        assert_eq!(
            "once".parse::<Guarantee>().unwrap_err(),
            "unknown guarantee \"once\"; expected one of `at-most-once`, `at-least-once`, `exactly-once`"
        );
        assert_eq!("key".parse::<Ordering>().unwrap(), Ordering::Key);
        assert_eq!("park".parse::<Poison>().unwrap(), Poison::Park);
    }
}
