//! Bearer tokens: HS256 JWTs with `sub` and `role` (CONTRACT.md, Auth).

use chrono::Utc;
use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use triad_domain::{Actor, Role, UserId};

/// Used when TRIAD_JWT_SECRET is unset: fine on a laptop, refused nowhere, warned about at start.
pub const DEV_SECRET: &str = "triad-dev-secret-change-me";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: i64,
    iat: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
}

#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(HS256)")
    }
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Mints a token for `sub` with `role`, valid for `ttl`.
    pub fn mint(&self, sub: &UserId, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            role: role.as_str().to_string(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs() as i64),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Actor, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let role = Role::parse_token_role(&data.claims.role)
            .ok_or_else(|| AuthError::UnknownRole(data.claims.role.clone()))?;
        let sub = UserId::parse(data.claims.sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(Actor { sub, role })
    }

    /// Parses an `Authorization` value (`Bearer <token>`); `None` when there is no header.
    pub fn from_header(&self, value: Option<&str>) -> Result<Option<Actor>, AuthError> {
        match value {
            None => Ok(None),
            Some(v) => {
                let token = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or(AuthError::Malformed)?;
                self.verify(token.trim()).map(Some)
            }
        }
    }
}

/// Parses `1h`, `30m`, `45s`, `7d` or a plain number of seconds.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad duration {raw:?}: expected e.g. 1h, 30m, 45s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("bad duration unit in {raw:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let auth = Auth::new("s3cret");
        let sub = UserId::parse("dealer-1").unwrap();
        let token = auth
            .mint(&sub, Role::Dealer, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.verify(&token).unwrap(),
            Actor {
                sub: sub.clone(),
                role: Role::Dealer
            }
        );
        assert!(matches!(
            Auth::new("other").verify(&token),
            Err(AuthError::Invalid(_))
        ));
        let expired = auth
            .mint(&sub, Role::Dealer, Duration::from_secs(0))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1_100));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        assert_eq!(auth.from_header(Some("Token x")), Err(AuthError::Malformed));
        assert_eq!(auth.from_header(None), Ok(None));
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("1y").is_err());
    }
}
