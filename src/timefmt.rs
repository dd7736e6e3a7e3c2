//! RFC 3339 timestamps as KES writes them: UTC, `Z`, and fractional seconds only when
//! non-zero, with trailing zeros removed (Go's `time.RFC3339Nano`).
//!
//! Times are plain `(seconds, nanoseconds)` since the Unix epoch rather than
//! `SystemTime`, because keys created before 2022 carry Go's zero time,
//! `0001-01-01T00:00:00Z`, and it must survive a parse/format round trip unchanged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Go's zero `time.Time`, `0001-01-01T00:00:00Z`, in seconds since the Unix epoch.
pub const ZERO_TIME_SECS: i64 = -62_135_596_800;

/// The current time as `(seconds, nanoseconds)` since the Unix epoch.
pub fn now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => (
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            since.subsec_nanos(),
        ),
        // A clock set before 1970: still a valid instant, just a negative one.
        Err(before) => {
            let before = before.duration();
            let secs = -i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            normalize(secs, -i64::from(before.subsec_nanos()))
        }
    }
}

/// `(seconds, nanoseconds)` since the Unix epoch as a `SystemTime`. Instants the
/// platform cannot represent are clamped to the epoch.
pub fn to_system_time(secs: i64, nanos: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
    let moved = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    moved
        .and_then(|t| t.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// Formats an instant as RFC 3339 in UTC, e.g. `2024-02-29T10:12:28.123456789Z` or
/// `2023-03-01T10:40:00.5Z`. `nanos` of a second or more carry into `secs`.
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let (secs, nanos) = normalize(secs, i64::from(nanos));
    let days = secs.div_euclid(SECS_PER_DAY);
    let second_of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`) into
/// `(seconds, nanoseconds)` since the Unix epoch. Digits of the fraction beyond
/// nanoseconds are dropped, as Go does. Returns `None` for anything else, including
/// out-of-range fields such as a 31st of April or a leap second.
pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let mut cursor = Cursor {
        rest: text.as_bytes(),
    };
    let year = cursor.digits(4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    cursor.expect(b'T')?;
    let hour = cursor.digits(2)?;
    cursor.expect(b':')?;
    let minute = cursor.digits(2)?;
    cursor.expect(b':')?;
    let second = cursor.digits(2)?;

    let mut nanos: i64 = 0;
    if cursor.rest.first().is_some_and(|&b| b == b'.' || b == b',') {
        cursor.rest = &cursor.rest[1..];
        let count = cursor
            .rest
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if count == 0 {
            return None;
        }
        for position in 0..9 {
            let digit = cursor
                .rest
                .get(position)
                .filter(|_| position < count)
                .map_or(0, |b| b - b'0');
            nanos = nanos * 10 + i64::from(digit);
        }
        cursor.rest = &cursor.rest[count..];
    }

    let offset_secs = match cursor.rest.first()? {
        b'Z' => {
            cursor.rest = &cursor.rest[1..];
            0
        }
        &sign @ (b'+' | b'-') => {
            cursor.rest = &cursor.rest[1..];
            let offset_hours = cursor.digits(2)?;
            cursor.expect(b':')?;
            let offset_minutes = cursor.digits(2)?;
            if offset_hours >= 24 || offset_minutes >= 60 {
                return None;
            }
            let offset = offset_hours * 3600 + offset_minutes * 60;
            if sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    if !cursor.rest.is_empty() {
        return None;
    }

    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour >= 24 || minute >= 60 || second >= 60 {
        return None;
    }
    let local =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second;
    Some(normalize(local - offset_secs, nanos))
}

/// Brings `nanos` into `0..1e9`, carrying whole seconds into `secs`.
fn normalize(secs: i64, nanos: i64) -> (i64, u32) {
    let carried = secs.saturating_add(nanos.div_euclid(NANOS_PER_SEC));
    // rem_euclid of a positive modulus is in 0..1e9, which always fits a u32.
    (carried, nanos.rem_euclid(NANOS_PER_SEC) as u32)
}

/// Reads fixed-width fields of a timestamp, front to back.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<i64> {
        let field = self.rest.get(..count)?;
        let mut value = 0;
        for &b in field {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.rest = &self.rest[count..];
        Some(value)
    }

    fn expect(&mut self, wanted: u8) -> Option<()> {
        let (&first, rest) = self.rest.split_first()?;
        if first != wanted {
            return None;
        }
        self.rest = rest;
        Some(())
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// The two calendar conversions below use the proleptic Gregorian calendar with years
// starting in March, so that the leap day is the last day of a "year"; see Howard
// Hinnant, "chrono-Compatible Low-Level Date Algorithms".

/// Days since 1970-01-01 of a calendar date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Calendar date `(year, month, day)` of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go_rfc3339_nano() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_709_201_548, 123_456_789),
            "2024-02-29T10:12:28.123456789Z"
        );
        assert_eq!(format_rfc3339(1_709_201_548, 0), "2024-02-29T10:12:28Z");
        assert_eq!(
            format_rfc3339(1_677_667_200, 500_000_000),
            "2023-03-01T10:40:00.5Z"
        );
        assert_eq!(
            format_rfc3339(1_677_667_200, 1_000),
            "2023-03-01T10:40:00.000001Z"
        );
        assert_eq!(format_rfc3339(ZERO_TIME_SECS, 0), "0001-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_rfc3339(253_402_300_799, 999_999_999),
            "9999-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn nanos_of_a_second_or_more_carry() {
        assert_eq!(format_rfc3339(0, 1_500_000_000), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for (secs, nanos) in [
            (0, 0),
            (ZERO_TIME_SECS, 0),
            (1_709_201_548, 123_456_789),
            (1_677_667_200, 500_000_000),
            (951_782_400, 1), // 2000-02-29
            (-1, 999_999_999),
            (253_402_300_799, 0),
        ] {
            let text = format_rfc3339(secs, nanos);
            assert_eq!(parse_rfc3339(&text), Some((secs, nanos)), "{text}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = days_from_civil(1900, 1, 1);
        for days in start..start + 146_097 {
            let (year, month, day) = civil_from_days(days);
            assert!((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month));
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn parses_offsets_and_long_fractions() {
        assert_eq!(
            parse_rfc3339("2023-03-01T11:40:00.5+01:00"),
            Some((1_677_667_200, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2023-03-01T05:10:00-05:30"),
            Some((1_677_667_200, 0))
        );
        assert_eq!(
            parse_rfc3339("2023-03-01T10:40:00.1234567891Z"),
            Some((1_677_667_200, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2023-03-01T10:40:00,25Z"),
            Some((1_677_667_200, 250_000_000))
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2023-03-01",
            "2023-03-01T10:40:00",
            "2023-03-01 10:40:00Z",
            "2023-03-01t10:40:00Z",
            "2023-03-01T10:40:00.Z",
            "2023-03-01T10:40:00ZZ",
            "2023-13-01T10:40:00Z",
            "2023-04-31T10:40:00Z",
            "2023-02-29T10:40:00Z",
            "2023-03-01T24:00:00Z",
            "2023-03-01T10:60:00Z",
            "2023-03-01T10:40:60Z",
            "2023-03-01T10:40:00+24:00",
            "2023-03-01T10:40:00+0100",
            "+2023-03-01T10:40:00Z",
            "２023-03-01T10:40:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn system_time_of_zero_time_is_before_the_epoch() {
        let zero = to_system_time(ZERO_TIME_SECS, 0);
        assert!(zero < UNIX_EPOCH);
        assert_eq!(to_system_time(1, 5), UNIX_EPOCH + Duration::new(1, 5));
    }

    #[test]
    fn now_is_after_2024() {
        let (secs, nanos) = now();
        assert!(secs > 1_704_067_200);
        assert!(nanos < 1_000_000_000);
    }
}
