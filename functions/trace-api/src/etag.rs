//! Entity tags: a hash of the rendered JSON, so an ETag changes exactly when the body
//! does, and is the same on every instance.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// A strong ETag (`"…"`, 32 hex digits) for a response body.
pub fn of(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        tag.push(char::from(HEX[usize::from(byte >> 4)]));
        tag.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    tag.push('"');
    tag
}

/// Strips `W/` and quotes: what two tags are compared by (If-None-Match uses the weak
/// comparison).
fn opaque(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"')
}

/// Whether an `If-None-Match` value (a list, or `*`) matches `etag`.
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let etag = opaque(etag);
    if_none_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == etag)
}

/// The `If-None-Match` header, when present and readable.
pub fn if_none_match(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Whether a `Last-Event-ID` names this tag (with or without quotes).
pub fn same_event(last_event_id: &str, etag: &str) -> bool {
    opaque(last_event_id) == opaque(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_body() {
        let a = of(b"{\"status\":\"queued\"}");
        assert_eq!(a, of(b"{\"status\":\"queued\"}"));
        assert_ne!(a, of(b"{\"status\":\"processing\"}"));
        assert_eq!(a.len(), 34);
        assert!(a.starts_with('"') && a.ends_with('"'));
        // The first half of SHA-256 in lowercase hex: tags stay what clients already hold.
        assert_eq!(of(b"x"), "\"2d711642b726b04401627ca9fbac32f5\"");
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let tag = of(b"x");
        assert!(none_match(&tag, &tag));
        assert!(none_match(&format!("\"nope\", W/{tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"nope\"", &tag));
        assert!(same_event(tag.trim_matches('"'), &tag));
    }
}
