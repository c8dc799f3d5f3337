// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The name as the header maps' key, and in the case written on the wire. By default the
    /// key is parsed from the case form; a [`PreparedHeaderName`] hands over both as made.
    fn into_names(self) -> Result<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        let case_header_name = self.into_case_header_name();
        let header_name = HeaderName::from_bytes(case_header_name.as_slice())
            .or_err(InvalidHTTPHeader, "invalid header name")?;
        Ok((header_name, case_header_name))
    }
}

/// A header name made once, ahead (typically a `const`), as both the maps' key and the bytes
/// written on the wire: appending or inserting it neither parses the name nor copies it, where
/// any other form of a name that is not a standard header is parsed and copied into a new
/// buffer twice for each header added (one for each map).
#[derive(Debug, Clone)]
pub struct PreparedHeaderName {
    name: HeaderName,
    case: CaseHeaderName,
}

impl PreparedHeaderName {
    /// `name` is the key and is written as it is. Like [`HeaderName::from_static`], it must be
    /// a valid header name in lower case; otherwise this panics (at compile time in a `const`).
    pub const fn from_static(name: &'static str) -> Self {
        PreparedHeaderName {
            name: HeaderName::from_static(name),
            case: CaseHeaderName(Bytes::from_static(name.as_bytes())),
        }
    }

    /// The name as the header maps' key.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl IntoCaseHeaderName for PreparedHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case
    }

    fn into_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.name, self.case))
    }
}

impl IntoCaseHeaderName for &PreparedHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case.clone()
    }

    fn into_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.name.clone(), self.case.clone()))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    // The key is at hand: not parsed back from the titled form.
    fn into_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        let case_header_name = CaseHeaderName(titled_header_name(&self));
        Ok((self, case_header_name))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    #[test]
    fn prepared_names_are_handed_over_as_made() {
        const PREPARED: PreparedHeaderName = PreparedHeaderName::from_static("x-user-id");
        let (name, case) = (&PREPARED).into_names().unwrap();
        assert_eq!(name, "x-user-id");
        assert_eq!(case.as_slice(), b"x-user-id");
        // The same as the parsed form of the same bytes.
        let (parsed, parsed_case) = "x-user-id".into_names().unwrap();
        assert_eq!(name, parsed);
        assert_eq!(case.as_slice(), parsed_case.as_slice());
        assert!("bad name".into_names().is_err());
    }

    #[test]
    fn header_names_keep_their_key_and_get_their_titled_case() {
        for name in [header::DATE, header::CONNECTION, HeaderName::from_static("x-custom")] {
            let (key, case) = name.clone().into_names().unwrap();
            let (by_ref, by_ref_case) = (&name).into_names().unwrap();
            let (parsed, parsed_case) = name.clone().into_case_header_name().into_names().unwrap();
            assert_eq!(key, parsed);
            assert_eq!(by_ref, parsed);
            assert_eq!(case.as_slice(), parsed_case.as_slice());
            assert_eq!(by_ref_case.as_slice(), parsed_case.as_slice());
        }
        assert_eq!(header::DATE.into_names().unwrap().1.as_slice(), b"Date");
    }
}
