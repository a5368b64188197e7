//! Bearer-token authentication for every RPC (including health and reflection) when a token file is configured.
//!
//! The token file holds one token per line; blank lines and lines starting with `#` are ignored. Tokens are compared
//! in constant time and never logged.

use std::path::Path;
use std::sync::Arc;

use subtle::{Choice, ConstantTimeEq};
use tonic::{Request, Status};

use crate::error::ServeError;

/// A set of accepted tokens; cloned into the interceptor layer.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerAuth({} tokens)", self.tokens.len())
    }
}

impl BearerAuth {
    /// Parse the token file.
    pub fn from_file(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Model {
            path: path.into(),
            msg: format!("auth token file: {e}"),
        })?;
        Self::from_text(&text).map_err(|msg| ServeError::Model {
            path: path.into(),
            msg,
        })
    }

    /// Parse token-file text.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if tokens.is_empty() {
            return Err("auth token file has no token (one per line expected)".into());
        }
        if let Some(t) = tokens.iter().find(|t| t.len() < 16) {
            return Err(format!(
                "auth token of {} characters is too short; use at least 16",
                t.len()
            ));
        }
        Ok(Self {
            tokens: Arc::new(tokens),
        })
    }

    /// Check the `authorization: Bearer <token>` metadata of a request.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let value = req
            .metadata()
            .get("authorization")
            .map(|v| {
                v.to_str()
                    .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))
            })
            .transpose()?;
        self.check_value(value)
    }

    /// Check the value of an `authorization` header or metadata entry (`None` = absent).
    pub fn check_value(&self, value: Option<&str>) -> Result<(), Status> {
        let value = value.ok_or_else(|| {
            Status::unauthenticated(
                "missing bearer token: send metadata `authorization: Bearer <token>`",
            )
        })?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        let token = token.trim().as_bytes();
        // Constant-time comparison against every token, so the time taken depends neither on how much of a token
        // matched nor on which one did (only on the token lengths, which are not secret).
        let ok = self
            .tokens
            .iter()
            .fold(Choice::from(0), |acc, t| acc | t.as_slice().ct_eq(token));
        if bool::from(ok) {
            Ok(())
        } else {
            tracing::warn!("request rejected: invalid bearer token");
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }

    /// The function form used as a tonic interceptor.
    pub fn interceptor(self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |req: Request<()>| self.check(&req).map(|()| req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_are_checked() {
        let a =
            BearerAuth::from_text("# comment\n\n0123456789abcdef\n  fedcba9876543210  \n").unwrap();
        assert!(a.check(&req(Some("Bearer 0123456789abcdef"))).is_ok());
        assert!(a.check(&req(Some("Bearer fedcba9876543210"))).is_ok());
        let e = a.check(&req(None)).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("missing"));
        assert_eq!(
            a.check(&req(Some("Bearer 0123456789abcdeX")))
                .unwrap_err()
                .message(),
            "invalid bearer token"
        );
        assert!(a
            .check(&req(Some("Basic abc")))
            .unwrap_err()
            .message()
            .contains("Bearer"));
    }

    #[test]
    fn bad_token_files() {
        assert!(BearerAuth::from_text("# only a comment\n")
            .unwrap_err()
            .contains("no token"));
        assert!(BearerAuth::from_text("short\n")
            .unwrap_err()
            .contains("too short"));
    }
}
