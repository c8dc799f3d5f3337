//! What happened to one request, in one word: the access log's `resolver` field and the
//! `outcome` label of `authgate_resolver_calls_total`.

use crate::identity::{Answer, SessionState};
use crate::resolver::ResolveError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Nothing was decided (the request failed before routing, or is in progress).
    #[default]
    Undecided,
    /// A `public` route: no resolver call.
    Public,
    /// The resolver's answer: a valid session, an invalid one, no credentials.
    Valid,
    Invalid,
    Anonymous,
    /// The resolver answered 401 or 403 itself.
    Denied,
    /// A CORS preflight, answered by authgate from the route's policy.
    Preflight,
    /// A `require` route without a valid session.
    LoginRequired,
    /// A `require` route whose session has none of its roles.
    MissingRole,
    /// Refused before routing: request line, host, method, limits.
    BadRequest,
    BadPath,
    BadCredentials,
    NoRoute,
    /// The resolver could not be reached, was too slow, broke the exchange, or gave an
    /// answer that cannot be used.
    Unreachable,
    Timeout,
    Broken,
    BadAnswer,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Undecided => "-",
            Outcome::Public => "public",
            Outcome::Valid => "valid",
            Outcome::Invalid => "invalid",
            Outcome::Anonymous => "anonymous",
            Outcome::Denied => "denied",
            Outcome::Preflight => "preflight",
            Outcome::LoginRequired => "login_required",
            Outcome::MissingRole => "missing_role",
            Outcome::BadRequest => "bad_request",
            Outcome::BadPath => "bad_path",
            Outcome::BadCredentials => "bad_credentials",
            Outcome::NoRoute => "no_route",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::Broken => "broken",
            Outcome::BadAnswer => "bad_answer",
        }
    }

    pub fn of_session(session: SessionState) -> Outcome {
        match session {
            SessionState::Valid => Outcome::Valid,
            SessionState::Invalid => Outcome::Invalid,
            SessionState::Anonymous => Outcome::Anonymous,
        }
    }

    /// What a resolver call came to.
    pub fn of_resolve(result: &Result<Answer, ResolveError>) -> Outcome {
        match result {
            Ok(Answer::Identity(i)) => Outcome::of_session(i.session()),
            Ok(Answer::Denied { .. }) => Outcome::Denied,
            Err(e) => Outcome::of_error(e),
        }
    }

    pub fn of_error(e: &ResolveError) -> Outcome {
        match e {
            ResolveError::Unreachable(_) => Outcome::Unreachable,
            ResolveError::Timeout(_) => Outcome::Timeout,
            ResolveError::Broken(_) => Outcome::Broken,
            ResolveError::Answer(_) => Outcome::BadAnswer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolver labels its own calls (it is below this module); the words agree.
    #[test]
    fn resolver_calls_are_labelled_as_outcomes_are() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-authgear-session-valid", "true".parse().unwrap());
        let ns = crate::identity::Namespace::new("x-authgear-");
        let valid = Answer::from_reply(200, &headers, &ns).expect("a valid answer");
        for result in [
            Ok(valid),
            Ok(Answer::Denied {
                status: 401,
                headers: Vec::new(),
            }),
            Err(ResolveError::Timeout("t".into())),
        ] {
            let label = crate::resolver::call_outcome(&result);
            assert_eq!(Outcome::of_resolve(&result).as_str(), label);
            assert!(crate::resolver::CALL_OUTCOMES.contains(&label));
        }
        for o in crate::resolver::CALL_OUTCOMES {
            assert!(
                [
                    Outcome::Valid,
                    Outcome::Invalid,
                    Outcome::Anonymous,
                    Outcome::Denied,
                    Outcome::Unreachable,
                    Outcome::Timeout,
                    Outcome::Broken,
                    Outcome::BadAnswer
                ]
                .iter()
                .any(|x| x.as_str() == o),
                "{o}"
            );
        }
    }

    #[test]
    fn resolver_errors_keep_their_kind() {
        for e in [
            ResolveError::Timeout("t".into()),
            ResolveError::Answer(crate::identity::AnswerError::Status(500)),
        ] {
            assert_eq!(Outcome::of_error(&e).as_str(), e.kind());
        }
    }
}
