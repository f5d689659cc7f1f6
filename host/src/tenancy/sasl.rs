//! SASL on a Kafka connection: SaslHandshake chooses a mechanism, then SaslAuthenticate
//! carries its tokens until the client is authenticated or refused.
//!
//! Mechanisms: PLAIN (RFC 4616), checked against the user's SCRAM credential so the
//! broker never stores a password, and SCRAM-SHA-256/512 ([`super::scram`]). Which
//! mechanisms a listener offers is decided by the caller: PLAIN sends the password
//! itself, so it is offered on a listener without TLS only when the operator allows it.

use super::scram::{self, Credential, Mechanism, ServerExchange};
use super::{Principal, Users};

/// A SASL mechanism the broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN: user name and password in the clear (inside TLS).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(Mechanism),
}

impl SaslMechanism {
    /// Every mechanism, in the order they are offered.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(Mechanism::Sha256),
        SaslMechanism::Scram(Mechanism::Sha512),
    ];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// The mechanism named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// Why a SASL step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client asked for a mechanism this listener does not offer.
    #[error("SASL mechanism {asked} is not enabled on this listener (enabled: {enabled})")]
    UnsupportedMechanism {
        /// What the client asked for.
        asked: String,
        /// What the listener offers, comma separated.
        enabled: String,
    },
    /// A request out of order (SaslAuthenticate before SaslHandshake, a second
    /// handshake).
    #[error("{0}")]
    IllegalState(String),
    /// The credentials are wrong, the user is unknown, or the exchange is malformed.
    #[error("Authentication failed: {message}")]
    Failed {
        /// A short, stable reason for the login counters.
        reason: &'static str,
        /// What the client is told.
        message: String,
    },
}

impl SaslError {
    fn failed(reason: &'static str, message: impl Into<String>) -> SaslError {
        SaslError::Failed {
            reason,
            message: message.into(),
        }
    }

    /// The reason to count this failure under.
    pub fn reason(&self) -> &'static str {
        match self {
            SaslError::UnsupportedMechanism { .. } => "unsupported_mechanism",
            SaslError::IllegalState(_) => "illegal_state",
            SaslError::Failed { reason, .. } => reason,
        }
    }
}

/// What the client is sent after one SaslAuthenticate.
#[derive(Debug)]
pub enum SaslStep {
    /// Another challenge: the exchange goes on.
    Challenge(Vec<u8>),
    /// Authenticated; send the final token.
    Authenticated {
        /// Who the client is.
        principal: Principal,
        /// The last server token (empty for PLAIN).
        token: Vec<u8>,
    },
    /// A PLAIN login whose password must be checked (slow: PBKDF2), off the async
    /// threads; then [`PlainLogin::verify`] gives the outcome.
    CheckPassword(PlainLogin),
}

/// A PLAIN login waiting for its password check.
#[derive(Debug)]
pub struct PlainLogin {
    user: String,
    password: String,
    credential: Option<(Mechanism, Credential)>,
}

impl PlainLogin {
    /// Checks the password (PBKDF2 with the stored iterations: run it where blocking
    /// is fine).
    pub fn verify(self) -> Result<Principal, SaslError> {
        match self.credential {
            None => Err(SaslError::failed(
                "unknown_user",
                "Invalid username or password",
            )),
            Some((mechanism, credential)) => {
                if credential.verify_password(mechanism, &self.password) {
                    Ok(Principal::user(&self.user))
                } else {
                    Err(SaslError::failed(
                        "invalid_credentials",
                        "Invalid username or password",
                    ))
                }
            }
        }
    }
}

/// One connection's SASL state.
#[derive(Debug)]
pub struct Authenticator {
    enabled: Vec<SaslMechanism>,
    state: AuthState,
}

#[derive(Debug)]
enum AuthState {
    AwaitingHandshake,
    Chosen(SaslMechanism),
    Scram(Box<ServerExchange>),
    Done,
}

impl Authenticator {
    /// A connection on a listener offering `enabled`.
    pub fn new(enabled: Vec<SaslMechanism>) -> Authenticator {
        Authenticator {
            enabled,
            state: AuthState::AwaitingHandshake,
        }
    }

    /// The offered mechanisms' names, for the handshake response.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|m| m.name()).collect()
    }

    /// SaslHandshake: choose `mechanism`.
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), SaslError> {
        if !matches!(self.state, AuthState::AwaitingHandshake) {
            return Err(SaslError::IllegalState(
                "SaslHandshake after the mechanism was already chosen".into(),
            ));
        }
        match SaslMechanism::parse(mechanism).filter(|m| self.enabled.contains(m)) {
            Some(m) => {
                self.state = AuthState::Chosen(m);
                Ok(())
            }
            None => Err(SaslError::UnsupportedMechanism {
                asked: mechanism.to_string(),
                enabled: self.enabled_names().join(","),
            }),
        }
    }

    /// SaslAuthenticate: the client's next token.
    pub fn step(&mut self, token: &[u8], users: &Users) -> Result<SaslStep, SaslError> {
        let state = std::mem::replace(&mut self.state, AuthState::Done);
        match state {
            AuthState::AwaitingHandshake => Err(SaslError::IllegalState(
                "SaslAuthenticate before SaslHandshake".into(),
            )),
            AuthState::Done => Err(SaslError::IllegalState(
                "SaslAuthenticate after authentication finished".into(),
            )),
            AuthState::Chosen(SaslMechanism::Plain) => {
                let (user, password) = parse_plain(token)?;
                // Any SCRAM credential of the user checks the password; the stronger
                // one first.
                let credential = users
                    .get(&user)
                    .and_then(|creds| creds.iter().next_back().map(|(m, c)| (*m, c.clone())));
                Ok(SaslStep::CheckPassword(PlainLogin {
                    user,
                    password,
                    credential,
                }))
            }
            AuthState::Chosen(SaslMechanism::Scram(mechanism)) => {
                self.scram_step(ServerExchange::new(mechanism), mechanism, token, users)
            }
            AuthState::Scram(exchange) => {
                let mechanism = exchange.mechanism();
                self.scram_step(*exchange, mechanism, token, users)
            }
        }
    }

    fn scram_step(
        &mut self,
        mut exchange: ServerExchange,
        mechanism: Mechanism,
        token: &[u8],
        users: &Users,
    ) -> Result<SaslStep, SaslError> {
        let lookup = |user: &str| users.get(user).and_then(|c| c.get(&mechanism)).cloned();
        match exchange.step(token, lookup) {
            Ok(scram::Step::Continue(challenge)) => {
                self.state = AuthState::Scram(Box::new(exchange));
                Ok(SaslStep::Challenge(challenge))
            }
            Ok(scram::Step::Done { user, message }) => Ok(SaslStep::Authenticated {
                principal: Principal::user(&user),
                token: message,
            }),
            Err(e) => {
                let reason = match e {
                    scram::ScramError::UnknownUser(_) => "unknown_user",
                    scram::ScramError::InvalidProof => "invalid_credentials",
                    _ => "malformed",
                };
                // The same words for an unknown user and a wrong password, so a client
                // cannot probe which users exist.
                let message = match reason {
                    "malformed" => e.to_string(),
                    _ => format!("Invalid user credentials with SASL mechanism {mechanism}"),
                };
                Err(SaslError::failed(reason, message))
            }
        }
    }

    /// Whether the exchange has finished.
    pub fn finished(&self) -> bool {
        matches!(self.state, AuthState::Done)
    }
}

/// PLAIN's message: `[authzid] NUL authcid NUL passwd`; an authzid, when given, must be
/// the user itself.
fn parse_plain(token: &[u8]) -> Result<(String, String), SaslError> {
    let malformed =
        |why: &str| SaslError::failed("malformed", format!("malformed PLAIN message: {why}"));
    let text = std::str::from_utf8(token).map_err(|_| malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected authzid NUL user NUL password"));
    };
    if user.is_empty() || password.is_empty() {
        return Err(malformed("empty user name or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(malformed("the authorization id differs from the user name"));
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let mut users = Users::new();
        let creds = users.entry("alice".into()).or_default();
        for m in Mechanism::ALL {
            creds.insert(m, Credential::from_password(m, "s3cret", 4096).unwrap());
        }
        users
    }

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let users = users();
        for (token, ok) in [
            (&b"\0alice\0s3cret"[..], true),
            (b"alice\0alice\0s3cret", true),
            (b"\0alice\0wrong", false),
            (b"\0mallory\0s3cret", false),
        ] {
            let mut a = Authenticator::new(SaslMechanism::ALL.to_vec());
            a.handshake("PLAIN").unwrap();
            let SaslStep::CheckPassword(login) = a.step(token, &users).unwrap() else {
                panic!("PLAIN checks a password");
            };
            assert_eq!(
                login.verify().is_ok(),
                ok,
                "{:?}",
                String::from_utf8_lossy(token)
            );
        }
    }

    #[test]
    fn malformed_plain_is_refused() {
        for token in [&b"alice"[..], b"\0\0pw", b"bob\0alice\0pw", b"\0a\0b\0c"] {
            let mut a = Authenticator::new(vec![SaslMechanism::Plain]);
            a.handshake("plain").unwrap();
            let err = a.step(token, &users()).unwrap_err();
            assert_eq!(err.reason(), "malformed");
        }
    }

    #[test]
    fn a_mechanism_not_offered_is_refused_with_the_list() {
        let mut a = Authenticator::new(vec![SaslMechanism::Scram(Mechanism::Sha512)]);
        assert_eq!(
            a.handshake("PLAIN"),
            Err(SaslError::UnsupportedMechanism {
                asked: "PLAIN".into(),
                enabled: "SCRAM-SHA-512".into()
            })
        );
        a.handshake("SCRAM-SHA-512").unwrap();
        assert!(matches!(
            a.handshake("SCRAM-SHA-512"),
            Err(SaslError::IllegalState(_))
        ));
    }

    #[test]
    fn authenticate_before_handshake_is_out_of_order() {
        let mut a = Authenticator::new(SaslMechanism::ALL.to_vec());
        assert!(matches!(
            a.step(b"x", &users()),
            Err(SaslError::IllegalState(_))
        ));
    }

    #[test]
    fn scram_unknown_user_and_wrong_proof_read_the_same_to_the_client() {
        let mut a = Authenticator::new(SaslMechanism::ALL.to_vec());
        a.handshake("SCRAM-SHA-256").unwrap();
        let err = a.step(b"n,,n=mallory,r=abcdef", &users()).unwrap_err();
        assert_eq!(err.reason(), "unknown_user");
        assert!(err.to_string().contains("Invalid user credentials"));
    }
}
