//! Targeted cache control (RFC 9213): the `CDN-Cache-Control` field, which an origin uses to
//! give CDN caches (authgate among them) a policy of their own. Valid means a Structured
//! Fields Dictionary (RFC 8941 §3.2), checked here; an empty or invalid one is ignored.

use pingora::cache::cache_control::CacheControl;
use pingora::http::ResponseHeader;

/// The targeted field authgate obeys.
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The response's `CDN-Cache-Control` directives, when the field is present, non-empty and a
/// valid dictionary (its lines joined with `,`, as RFC 8941 §4.2 parses them).
pub fn directives(resp: &ResponseHeader) -> Option<CacheControl> {
    let mut lines = resp.headers.get_all(CDN_CACHE_CONTROL).iter().peekable();
    lines.peek()?;
    let mut joined = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(line.as_bytes());
    }
    if joined.trim_ascii().is_empty() || !is_dictionary(&joined) {
        return None;
    }
    CacheControl::from_headers_named(CDN_CACHE_CONTROL, &resp.headers)
}

/// Whether `input` parses as an RFC 8941 Dictionary (§4.2.2).
pub fn is_dictionary(input: &[u8]) -> bool {
    let mut p = Parser {
        s: input.trim_ascii(),
        i: 0,
    };
    p.dictionary().is_some()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip(&mut self, ws: &[u8]) {
        while self.peek().is_some_and(|b| ws.contains(&b)) {
            self.i += 1;
        }
    }

    fn dictionary(&mut self) -> Option<()> {
        loop {
            self.key()?;
            if self.eat(b'=') {
                self.item_or_inner_list()?;
            } else {
                self.parameters()?;
            }
            self.skip(b" \t");
            if self.peek().is_none() {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.skip(b" \t");
            // A trailing comma is an error.
            self.peek()?;
        }
    }

    fn key(&mut self) -> Option<()> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        while self.peek().is_some_and(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        }) {
            self.i += 1;
        }
        Some(())
    }

    fn item_or_inner_list(&mut self) -> Option<()> {
        if self.eat(b'(') {
            loop {
                self.skip(b" ");
                if self.eat(b')') {
                    return self.parameters();
                }
                self.bare_item()?;
                self.parameters()?;
                // Items are separated by spaces; the list ends with `)`.
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
        self.bare_item()?;
        self.parameters()
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(b" ");
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<()> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.byte_sequence(),
            b'?' => {
                self.i += 1;
                (self.eat(b'0') || self.eat(b'1')).then_some(())
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.i += 1;
                while self
                    .peek()
                    .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
                {
                    self.i += 1;
                }
                Some(())
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let int = self.i - start;
        if int == 0 {
            return None;
        }
        if !self.eat(b'.') {
            return (int <= 15).then_some(());
        }
        let frac_start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let frac = self.i - frac_start;
        (int <= 12 && (1..=3).contains(&frac)).then_some(())
    }

    fn string(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => {
                    self.i += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.i += 1;
                }
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
    }

    fn byte_sequence(&mut self) -> Option<()> {
        self.i += 1;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            self.i += 1;
        }
        self.eat(b':').then_some(())
    }
}

/// RFC 9110 §5.6.2's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_valid_and_not() {
        for ok in [
            "max-age=60",
            "max-age=60, must-revalidate",
            "no-store",
            "max-age=60,private",
            "a=1;b=2;c, d=?1, e=\"x\\\"y\", f=:aGVsbG8=:, g=(1 2 \"x\");p, h=-1.5, i=tok/en:x",
            "*x=1",
            "max-age=60 ,  stale-while-revalidate=10",
            "a=()",
        ] {
            assert!(is_dictionary(ok.as_bytes()), "{ok:?}");
        }
        for bad in [
            "max-age=60,",
            ",max-age=60",
            "Max-Age=0",
            "max-age=0;;",
            "no-store, \"x\"",
            "max-age=(0",
            "max-age=",
            "a=1 b=2",
            "a=1.2345",
            "a=1234567890123456",
            "a=\"unterminated",
            "a=?2",
            "a=:bad",
            "a=(1,2)",
            "max-age = 60",
            "a=\"\\x\"",
        ] {
            assert!(!is_dictionary(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn only_a_valid_non_empty_field_counts() {
        let with = |values: &[&str]| {
            let mut r = ResponseHeader::build(200, None).unwrap();
            for v in values {
                r.append_header(CDN_CACHE_CONTROL, *v).unwrap();
            }
            directives(&r)
        };
        assert!(with(&[]).is_none());
        assert!(with(&[""]).is_none());
        assert!(with(&["  "]).is_none());
        assert!(with(&["max-age=60,"]).is_none());
        // Two lines are one dictionary: one bad line spoils it.
        assert!(with(&["max-age=60", "Bad"]).is_none());
        let cc = with(&["max-age=60", "must-revalidate"]).expect("valid");
        assert_eq!(cc.max_age().ok().flatten(), Some(60));
        assert!(cc.must_revalidate());
    }
}
