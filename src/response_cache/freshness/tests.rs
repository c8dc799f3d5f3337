//! Unit tests of `freshness`: HTTP dates in every form, `Age`, `Expires`, the initial age.

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    crate::testutil::request(pairs).headers.clone()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 9110 §5.6.7: the three forms, in any case, name the same instant.
#[test]
fn http_dates_in_every_form_and_case() {
    let want = Some(at(784_111_777));
    for form in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "sun, 06 nov 1994 08:49:37 gmt",
        "SUN, 06 NOV 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "sunday, 06-NOV-94 08:49:37 gmt",
        "Sun Nov  6 08:49:37 1994",
        "Sun Nov 6 08:49:37 1994",
        "sun nov  6 08:49:37 1994",
    ] {
        assert_eq!(parse_http_date(form.as_bytes()), want, "{form}");
    }
    assert_eq!(
        parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"),
        Some(UNIX_EPOCH)
    );
    assert_eq!(
        parse_http_date(b"Tue, 29 Feb 2000 23:59:60 GMT"),
        Some(at(951_868_800))
    );
    for bad in [
        "0",
        "",
        "-1",
        "tomorrow",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 1900 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37:00 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 94",
        "Sun, +6 Nov 1994 08:49:37 GMT",
    ] {
        assert_eq!(parse_http_date(bad.as_bytes()), None, "{bad:?}");
    }
    // Non-UTF-8 bytes are no date either.
    assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT\xff"), None);
}

/// RFC 9110 §5.6.7: a two-digit year over 50 years ahead is of the century before.
#[test]
fn rfc850_years_are_read_in_the_right_century() {
    let this_year = 1970
        + (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 31_556_952) as i64;
    let yy = |y: i64| y % 100;
    assert_eq!(century(yy(this_year)), this_year);
    assert_eq!(century(yy(this_year + 49)), this_year + 49);
    assert_eq!(century(yy(this_year + 51)), this_year + 51 - 100);
}

/// RFC 9111 §5.1: the first member of the first line; garbage ignored; huge capped at 2^31.
#[test]
fn age_values_hostile_and_not() {
    assert_eq!(age_value(&headers(&[("age", "7200")])), Some(7200));
    assert_eq!(age_value(&headers(&[("age", " 7200 ")])), Some(7200));
    assert_eq!(age_value(&headers(&[("age", "7200, 10")])), Some(7200));
    assert_eq!(
        age_value(&headers(&[("age", "7200"), ("age", "10")])),
        Some(7200)
    );
    assert_eq!(
        age_value(&headers(&[("age", "99999999999999999999999")])),
        Some(1 << 31)
    );
    assert_eq!(age_value(&headers(&[("age", "2147483649")])), Some(1 << 31));
    for bad in ["-7200", "abc", "7200a", "72.5", "", "+5", "0x10", "1e3"] {
        assert_eq!(age_value(&headers(&[("age", bad)])), None, "{bad:?}");
    }
    assert_eq!(age_value(&HeaderMap::new()), None);
}

/// RFC 9111 §4.2.1 and §5.3: `Expires` minus `Date`; invalid means expired; the time of
/// arrival stands in for a missing or doubtful `Date`.
#[test]
fn expires_lifetimes() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let later = "Sun, 06 Nov 1994 08:50:37 GMT";
    let arrival = at(784_111_777 + 3600);
    let lifetime = |h: &[(&str, &str)]| expires_lifetime(&headers(h), arrival);
    assert_eq!(lifetime(&[]), None);
    assert_eq!(
        lifetime(&[("date", date), ("expires", later)]),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        lifetime(&[("date", later), ("expires", date)]),
        Some(Duration::ZERO)
    );
    assert_eq!(
        lifetime(&[("date", date), ("expires", "0")]),
        Some(Duration::ZERO)
    );
    assert_eq!(
        lifetime(&[("date", date), ("expires", later), ("expires", date)]),
        Some(Duration::ZERO)
    );
    // The same value twice is one value.
    assert_eq!(
        lifetime(&[("date", date), ("expires", later), ("expires", later)]),
        Some(Duration::from_secs(60))
    );
    // No Date, or two that disagree: counted from the arrival (here, already past).
    assert_eq!(lifetime(&[("expires", later)]), Some(Duration::ZERO));
    assert_eq!(
        lifetime(&[
            ("date", date),
            ("date", later),
            ("expires", "Sun, 06 Nov 1994 09:50:37 GMT")
        ]),
        Some(Duration::from_secs(60))
    );
}

/// RFC 9111 §4.2.3: `Age` plus the response delay; the apparent age only through HTTP/1.0.
#[test]
fn initial_ages() {
    let exchange = Exchange {
        request_time: at(1_000_000),
        response_time: at(1_000_002),
    };
    let v11 = http::Version::HTTP_11;
    let age = |h: &[(&str, &str)], v| initial_age(&headers(h), v, exchange).as_secs();
    assert_eq!(age(&[], v11), 2);
    assert_eq!(age(&[("age", "100")], v11), 102);
    // A Date an hour behind: an origin's clock, not an age, unless an HTTP/1.0 hop was on
    // the way (which may have kept no Age).
    let behind = "Mon, 12 Jan 1970 12:46:42 GMT"; // 1_000_002 - 3600
    assert_eq!(age(&[("date", behind)], v11), 2);
    assert_eq!(age(&[("date", behind)], http::Version::HTTP_10), 3600);
    assert_eq!(
        age(&[("date", behind), ("via", "1.0 old-proxy")], v11),
        3600
    );
    assert_eq!(
        age(&[("date", behind), ("via", "1.1 a, HTTP/1.0 b")], v11),
        3600
    );
    assert_eq!(age(&[("date", behind), ("via", "1.1 a, 2 b")], v11), 2);
    // A response that arrived before it was asked for (a clock step): no negative delay.
    let stepped = Exchange {
        request_time: at(2_000_000),
        response_time: at(1_000_000),
    };
    assert_eq!(initial_age(&HeaderMap::new(), v11, stepped), Duration::ZERO);
}
