//! One line for an error, as a person (or a script reading stderr) wants it: no Rust `Debug` dumps.

use std::error::Error;

use duet::{Code, Status};

/// `e` as one line, without the `error: ` prefix: a failed call as `code: message` (the code as
/// gRPC's snake_case name, e.g. `not_found: no VM "web-1"`), anything else as its chain of causes
/// joined with `: `.
pub fn render_error(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut next = Some(e);
    while let Some(err) = next {
        // A status renders its own causes; walking on would print them twice.
        let (text, source) = match err.downcast_ref::<Status>() {
            Some(status) => (render_status(status), None),
            None => (err.to_string(), err.source()),
        };
        // Many errors repeat their cause in their own message (`gRPC transport: {0}`), some repeat
        // one further down, and some wrappers print nothing of their own: say each thing once.
        if !text.is_empty() && !parts.iter().any(|said| said.contains(&text)) {
            parts.push(text);
        }
        next = source;
    }
    parts.join(": ")
}

/// A status as `code: message`, with its transport-level cause if it has one the message lacks.
fn render_status(status: &Status) -> String {
    let mut line = code_name(status.code()).to_owned();
    if !status.message().is_empty() {
        line.push_str(": ");
        line.push_str(status.message());
    }
    if let Some(source) = status.source() {
        // Drop the causes the message already names (tonic's says `tcp connect error`, and so
        // does its source).
        let causes = render_error(source);
        for cause in causes.split(": ").filter(|c| !line.contains(c)).collect::<Vec<_>>() {
            line.push_str(": ");
            line.push_str(cause);
        }
    }
    line
}

/// gRPC's name for `code`, in snake_case: what scripts match on.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_its_code_and_message() {
        let e: Box<dyn Error> = Box::new(Status::not_found("no VM \"nope\""));
        assert_eq!(render_error(&*e), "not_found: no VM \"nope\"");
        let e: Box<dyn Error> = Box::new(Status::failed_precondition(""));
        assert_eq!(render_error(&*e), "failed_precondition");
    }

    #[test]
    fn a_status_names_its_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = Status::from_error(Box::new(io));
        let line = render_error(&status);
        assert!(line.contains("connection refused"), "{line}");
        assert!(!line.contains('{') && !line.contains("Custom"), "{line}");
    }

    #[test]
    fn a_chain_is_joined_without_repeating_itself() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot bind 127.0.0.1:1: {}", self.0)
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"));
        assert_eq!(render_error(&e), "cannot bind 127.0.0.1:1: address in use");
        let e = duet::Error::Io(std::io::Error::other("disk on fire"));
        assert_eq!(render_error(&e), "disk on fire");
    }
}
