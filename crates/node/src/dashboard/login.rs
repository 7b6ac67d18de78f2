//! How a browser logs in to the dashboard. A browser cannot send the admin
//! bearer token on a page load, so the CLI (which holds the token) asks the
//! node for a one-time login link: a random token valid for
//! [`LOGIN_TTL`] and for one use. Opening the link exchanges it for a
//! session cookie — `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it), valid for [`SESSION_TTL`] — and
//! redirects to the dashboard, so the token leaves the address bar.
//!
//! Only SHA-256 digests of tokens and session ids are kept, so a lookup
//! does not compare secrets byte by byte.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a login link works.
pub const LOGIN_TTL: Duration = Duration::from_secs(60);

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// At most this many live sessions (and pending links); the oldest go first.
const MAX_ENTRIES: usize = 256;

/// Why a login link was refused (all answered 401 alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Never issued, already used, or expired.
    #[error(
        "the login link is unknown, already used or expired; run `mortar dashboard` for a new one"
    )]
    Invalid,
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

type Digest32 = [u8; 32];

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// 32 random bytes, hex.
fn random_secret() -> Result<String, LoginError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| LoginError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Pending login links and live sessions of one node.
#[derive(Debug)]
pub struct Sessions {
    /// The cookie's name: per admin port, since browsers share cookies
    /// between the ports of one host.
    cookie: String,
    links: Mutex<HashMap<Digest32, Instant>>,
    sessions: Mutex<HashMap<Digest32, Instant>>,
}

/// Removes expired entries and, beyond [`MAX_ENTRIES`], those expiring first.
fn prune(map: &mut HashMap<Digest32, Instant>, now: Instant) {
    map.retain(|_, expires| *expires > now);
    while map.len() >= MAX_ENTRIES {
        let Some(first) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
            break;
        };
        map.remove(&first);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    /// No links or sessions yet; the cookie is named after `admin_port`.
    pub fn new(admin_port: u16) -> Sessions {
        Sessions {
            cookie: format!("mortar_dashboard_{admin_port}"),
            links: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// Issues a one-time login token valid for [`LOGIN_TTL`] from `now`.
    pub fn issue_link(&self, now: Instant) -> Result<String, LoginError> {
        let token = random_secret()?;
        let mut links = lock(&self.links);
        prune(&mut links, now);
        links.insert(digest(&token), now + LOGIN_TTL);
        Ok(token)
    }

    /// Spends a login token: a new session id when the token was issued,
    /// is unused and has not expired at `now`.
    pub fn redeem(&self, token: &str, now: Instant) -> Result<String, LoginError> {
        let expires = lock(&self.links).remove(&digest(token));
        match expires {
            Some(expires) if expires > now => {}
            _ => return Err(LoginError::Invalid),
        }
        let session = random_secret()?;
        let mut sessions = lock(&self.sessions);
        prune(&mut sessions, now);
        sessions.insert(digest(&session), now + SESSION_TTL);
        Ok(session)
    }

    /// Whether `session` is a live session at `now`.
    pub fn is_valid(&self, session: &str, now: Instant) -> bool {
        lock(&self.sessions)
            .get(&digest(session))
            .is_some_and(|expires| *expires > now)
    }

    /// The `Set-Cookie` value of a new session.
    pub fn set_cookie(&self, session: &str) -> String {
        format!(
            "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.cookie,
            SESSION_TTL.as_secs()
        )
    }

    /// The session id in a `Cookie` header value, if it names ours.
    pub fn session_in<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        cookie_header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once_and_only_before_it_expires() {
        let sessions = Sessions::new(4300);
        let now = Instant::now();
        let token = sessions.issue_link(now).unwrap();
        assert_eq!(token.len(), 64);
        let session = sessions.redeem(&token, now).unwrap();
        assert!(sessions.is_valid(&session, now));
        assert_eq!(sessions.redeem(&token, now), Err(LoginError::Invalid));
        assert_eq!(sessions.redeem("made-up", now), Err(LoginError::Invalid));
        let late = sessions.issue_link(now).unwrap();
        assert_eq!(
            sessions.redeem(&late, now + LOGIN_TTL),
            Err(LoginError::Invalid)
        );
        assert!(!sessions.is_valid(&session, now + SESSION_TTL));
        assert!(!sessions.is_valid(&token, now));
    }

    #[test]
    fn the_cookie_is_per_port_http_only_and_strict() {
        let sessions = Sessions::new(4300);
        let set = sessions.set_cookie("abc");
        assert!(set.starts_with("mortar_dashboard_4300=abc;"), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert_eq!(
            sessions.session_in("a=1; mortar_dashboard_4300=abc ; b=2"),
            Some("abc")
        );
        assert_eq!(sessions.session_in("mortar_dashboard_4301=abc"), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::new(1);
        let now = Instant::now();
        let ids: Vec<String> = (0..MAX_ENTRIES + 3)
            .map(|i| {
                let at = now + Duration::from_millis(i as u64);
                let token = sessions.issue_link(at).unwrap();
                sessions.redeem(&token, at).unwrap()
            })
            .collect();
        assert!(lock(&sessions.sessions).len() <= MAX_ENTRIES);
        assert!(!sessions.is_valid(&ids[0], now));
        assert!(sessions.is_valid(ids.last().unwrap(), now));
    }
}
