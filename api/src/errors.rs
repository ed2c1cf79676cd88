//! The one place where failures become wire errors with a stable `extensions.code`.

use async_graphql::{Error, ErrorExtensions};
use triad_domain::auction::AuctionError;
use triad_eventstore::CommandError;

pub fn coded(code: &str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

pub fn forbidden(message: impl Into<String>) -> Error {
    coded("FORBIDDEN", message)
}

pub fn unauthenticated(message: impl Into<String>) -> Error {
    coded("UNAUTHENTICATED", message)
}

pub fn invalid_input(message: impl Into<String>) -> Error {
    coded("INVALID_INPUT", message)
}

pub fn not_found(message: impl Into<String>) -> Error {
    coded("NOT_FOUND", message)
}

/// Store and other unexpected failures: logged in full, reported without internals.
pub fn internal(err: impl std::fmt::Display) -> Error {
    tracing::error!(error = %err, "internal error");
    coded("INTERNAL", "internal error; it has been logged")
}

pub fn auction_error(err: CommandError<AuctionError>) -> Error {
    match err {
        CommandError::Rejected(e) => coded(e.code(), e.to_string()),
        CommandError::Contention => coded("CONFLICT", err.to_string()),
        CommandError::Store(e) => internal(e),
    }
}

/// Gives every error that async-graphql produced by itself (parse, validation, argument
/// coercion) a code too, so clients can always branch on `extensions.code`.
pub fn ensure_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if has_code {
            continue;
        }
        let message = error.message.to_ascii_lowercase();
        let code = if message.contains("invalid value")
            || message.contains("failed to parse")
            || message.contains("expected type")
            || message.contains("only integers")
        {
            "INVALID_INPUT"
        } else if error.path.is_empty() && !error.locations.is_empty() {
            "GRAPHQL_VALIDATION_FAILED"
        } else if error.path.is_empty() {
            "GRAPHQL_PARSE_FAILED"
        } else {
            "INTERNAL"
        };
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}
