//! Message ids and wall-clock time.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh message id: a UUIDv7, so ids sort by creation time.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A time in milliseconds since the Unix epoch as RFC 3339 in UTC, to the millisecond
/// (`2023-11-14T22:13:20.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, of_day) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), in 400-year eras from March 1.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        let check = |ms, expect| assert_eq!(super::rfc3339(ms), expect, "{ms}");
        check(0, "1970-01-01T00:00:00.000Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z");
        check(951_868_799_999, "2000-02-29T23:59:59.999Z");
        check(1_700_000_000_123, "2023-11-14T22:13:20.123Z");
        check(4_107_542_400_000, "2100-03-01T00:00:00.000Z");
    }
}
