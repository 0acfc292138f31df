//! Access control (`API_AUTH`): `none` (anyone, like the original), `token` (one shared
//! bearer token for servers, compared in constant time) or `line` (a LINE ID token; a
//! user sees only their own traces).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Auth;
use crate::error::ApiError;
use crate::line_auth::LineVerifier;
use crate::state::AppState;

pub enum Authenticator {
    None,
    /// SHA-256 of the token: equal-length digests compare in constant time.
    Token([u8; 32]),
    Line(Box<LineVerifier>),
}

impl Authenticator {
    pub fn new(auth: &Auth) -> Self {
        match auth {
            Auth::None => Authenticator::None,
            Auth::Token(token) => Authenticator::Token(Sha256::digest(token.as_bytes()).into()),
            Auth::Line(line) => Authenticator::Line(Box::new(LineVerifier::new(line))),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Access control is off.
    Anyone,
    /// A holder of the shared token.
    Service,
    /// A LINE user (the token's `sub`).
    User(String),
}

impl Principal {
    /// Whether the caller may use the operators' views (jobs across users, statistics):
    /// a holder of the shared token, or anyone when access control is off; never a LINE
    /// user, who may see only their own traces.
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Anyone | Principal::Service)
    }

    /// Whether the caller may see a trace of `owner`.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        match self {
            Principal::Anyone | Principal::Service => true,
            Principal::User(user) => owner == Some(user.as_str()),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|token| !token.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let refuse = ApiError::Unauthenticated;
        let authenticator: &Arc<Authenticator> = &state.auth;
        match authenticator.as_ref() {
            Authenticator::None => Ok(Principal::Anyone),
            Authenticator::Token(expected) => {
                let token = bearer(parts).ok_or_else(|| refuse("Not authenticated"))?;
                let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if bool::from(given.ct_eq(expected)) {
                    Ok(Principal::Service)
                } else {
                    Err(refuse("Invalid token"))
                }
            }
            Authenticator::Line(verifier) => {
                let token = bearer(parts).ok_or_else(|| refuse("Not authenticated"))?;
                let claims = verifier.verify(token).await?;
                Ok(Principal::User(claims.sub))
            }
        }
    }
}
