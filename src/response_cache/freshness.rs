//! How old a backend's response is on arrival and how long it stays fresh, by RFC 9111 §4.2:
//! `Age` (§5.1), `Date` and `Expires` in every HTTP date form (RFC 9110 §5.6.7), and the
//! corrected initial age of §4.2.3. Pingora's cache meta only knows instants: the stored object's
//! epoch is set back by its age on arrival, so Pingora's own `age()` (served as `Age`) and
//! `fresh_until` follow the RFC's current_age.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AGE, DATE, EXPIRES, VIA};
use http::HeaderMap;

/// What §1.2.2 says a cache must use for a delta-seconds too large to represent: 2^31.
const MAX_DELTA: u64 = 1 << 31;

/// When authgate sent the request that brought the response, and when the response came.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// The response's `Age` (§5.1): the first member of the first field line; an invalid value
/// (anything but digits) is ignored, one too large counts as 2^31 seconds.
pub fn age_value(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(AGE)?.as_bytes().split(|&b| b == b',').next()?;
    delta_seconds(first.trim_ascii())
}

/// A delta-seconds (§1.2.2): digits only, capped at 2^31.
pub fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Some(n.min(MAX_DELTA))
}

/// The value of a field that must appear once: `None` when absent or when its lines disagree
/// (then no line can be trusted).
fn singleton(headers: &HeaderMap, name: http::header::HeaderName) -> Option<Option<&[u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.as_bytes();
    if values.any(|v| v.as_bytes() != first) {
        return Some(None);
    }
    Some(Some(first))
}

/// The response's `Date`, if it has exactly one valid one (RFC 9110 §6.6.1: otherwise the
/// time of arrival stands in for it).
pub fn date_value(headers: &HeaderMap) -> Option<SystemTime> {
    parse_http_date(singleton(headers, DATE)??)
}

/// The freshness lifetime `Expires` gives (§4.2.1: `Expires` minus `Date`), `None` without
/// `Expires`. An invalid one (`0`, garbage, lines that disagree) has already expired (§5.3).
pub fn expires_lifetime(headers: &HeaderMap, response_time: SystemTime) -> Option<Duration> {
    let expires = singleton(headers, EXPIRES)?.and_then(parse_http_date);
    let Some(expires) = expires else {
        return Some(Duration::ZERO);
    };
    let date = date_value(headers).unwrap_or(response_time);
    Some(expires.duration_since(date).unwrap_or_default())
}

/// Whether the response came through an HTTP/1.0 hop (§4.2.3: then its `Age` may be missing
/// or low, and the apparent age from `Date` counts too): an HTTP/1.0 response, or a `Via`
/// member with protocol version 1.0.
fn through_http10(headers: &HeaderMap, version: http::Version) -> bool {
    version == http::Version::HTTP_10
        || headers.get_all(VIA).iter().any(|via| {
            via.as_bytes().split(|&b| b == b',').any(|member| {
                let protocol = member.trim_ascii().split(|&b| b == b' ').next();
                protocol.is_some_and(|p| p == b"1.0" || p.eq_ignore_ascii_case(b"HTTP/1.0"))
            })
        })
}

/// The corrected initial age of §4.2.3: the `Age` the response arrived with plus the time its
/// request took. The apparent age (arrival minus `Date`) counts only for a response that came
/// through an HTTP/1.0 hop: otherwise every cache on the way kept `Age`, and the RFC lets a
/// cache confident of it use it alone, so an origin whose clock is off cannot age a response.
pub fn initial_age(headers: &HeaderMap, version: http::Version, exchange: Exchange) -> Duration {
    let response_delay = exchange
        .response_time
        .duration_since(exchange.request_time)
        .unwrap_or_default();
    let age = Duration::from_secs(age_value(headers).unwrap_or(0));
    let corrected = age.saturating_add(response_delay);
    if !through_http10(headers, version) {
        return corrected;
    }
    let apparent = date_value(headers)
        .and_then(|date| exchange.response_time.duration_since(date).ok())
        .unwrap_or_default();
    corrected.max(apparent)
}

/// An HTTP date in any of RFC 9110 §5.6.7's three forms, in any letter case: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`).
pub fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (weekday, rest) = match text.split_once(',') {
        Some((weekday, rest)) => (weekday, rest),
        None => text.split_once(' ')?,
    };
    let long_weekday = weekday.len() > 3;
    if !WEEKDAYS
        .iter()
        .any(|d| weekday.eq_ignore_ascii_case(if long_weekday { d.1 } else { d.0 }))
    {
        return None;
    }
    let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
    let (day, month, year, time) = match (text.contains(','), parts.as_slice()) {
        // IMF-fixdate
        (true, [day, month, year, time, gmt]) if gmt.eq_ignore_ascii_case("GMT") => {
            (*day, *month, four_digits(year)?, *time)
        }
        // RFC 850: a two-digit year, read as the most recent such year not over 50 years
        // ahead.
        (true, [date, time, gmt]) if gmt.eq_ignore_ascii_case("GMT") && long_weekday => {
            let mut it = date.split('-');
            let (day, month, yy) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() || yy.len() != 2 {
                return None;
            }
            (day, month, century(yy.parse().ok()?), *time)
        }
        // asctime: the day of the month may be one digit (padded with a space).
        (false, [month, day, time, year]) if !long_weekday => {
            (*day, *month, four_digits(year)?, *time)
        }
        _ => return None,
    };
    let month = MONTHS.iter().position(|m| month.eq_ignore_ascii_case(m))? as u32 + 1;
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut hms = time.split(':');
    let mut field = |max: u64| -> Option<u64> {
        let f = hms.next()?;
        let n = (f.len() == 2).then(|| f.parse::<u64>().ok())??;
        (n <= max).then_some(n)
    };
    // A leap second (60) is allowed by the grammar.
    let (h, m, s) = (field(23)?, field(59)?, field(60)?);
    if hms.next().is_some() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (h * 3600 + m * 60 + s) as i64;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

const WEEKDAYS: [(&str, &str); 7] = [
    ("Mon", "Monday"),
    ("Tue", "Tuesday"),
    ("Wed", "Wednesday"),
    ("Thu", "Thursday"),
    ("Fri", "Friday"),
    ("Sat", "Saturday"),
    ("Sun", "Sunday"),
];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn four_digits(year: &str) -> Option<i64> {
    (year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()))
        .then(|| year.parse().ok())
        .flatten()
}

/// RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is of the century before.
fn century(yy: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 31_556_952) as i64
        + 1970;
    let year = now - now % 100 + yy;
    if year > now + 50 {
        year - 100
    } else {
        year
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "freshness/tests.rs"]
mod tests;
