//! The SASL exchanges of a Kafka connection: PLAIN and SCRAM-SHA-256/512, through the
//! broker's own [`Authenticator`] (SaslHandshake, then SaslAuthenticate tokens).
//!
//! Two users exist: `alice` (both SCRAM mechanisms) and `bob` (SCRAM-SHA-256 only).
//! The first byte chooses the mode and which mechanisms the listener offers:
//! - raw: the rest is a mechanism name and up to four client tokens, all arbitrary.
//!   Nothing may panic; a PLAIN login may succeed only with the user's real password in
//!   the token, and a SCRAM login never (its proof depends on the server's random nonce,
//!   which arbitrary bytes cannot know).
//! - client: a real SCRAM client (RFC 5802) runs against the server with a user, a
//!   password guess, a nonce and an optional tampering of the final message, all chosen
//!   by the input. It must authenticate exactly when the password is right and nothing
//!   was tampered with, and the server's final signature must verify.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use quiver::tenancy::sasl::{Authenticator, SaslMechanism, SaslStep};
use quiver::tenancy::scram::{salted_password, Credential, Mechanism, MIN_ITERATIONS};
use quiver::tenancy::Users;
use ring::{digest, hmac};

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "correct horse";
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "battery staple";

fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| {
        let mut users = Users::new();
        let alice = users.entry(ALICE.into()).or_default();
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            alice.insert(
                m,
                Credential::from_password(m, ALICE_PASSWORD, MIN_ITERATIONS).unwrap(),
            );
        }
        users.entry(BOB.into()).or_default().insert(
            Mechanism::Sha256,
            Credential::from_password(Mechanism::Sha256, BOB_PASSWORD, MIN_ITERATIONS).unwrap(),
        );
        users
    })
}

fn password_of(user: &str) -> Option<&'static str> {
    match user {
        ALICE => Some(ALICE_PASSWORD),
        BOB => Some(BOB_PASSWORD),
        _ => None,
    }
}

/// Length-prefixed pieces of the input.
struct Pieces<'a>(&'a [u8]);

impl<'a> Pieces<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn piece(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.byte()?).min(self.0.len());
        let (piece, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(piece)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Pieces(data);
    let Some(selector) = input.byte() else { return };
    // Bits 1-3: which mechanisms the listener offers.
    let enabled: Vec<SaslMechanism> = SaslMechanism::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| selector >> (1 + i) & 1 == 1)
        .map(|(_, m)| m)
        .collect();
    if selector & 1 == 0 {
        raw(enabled, input);
    } else {
        client(enabled, selector >> 4, input);
    }
});

fn raw(enabled: Vec<SaslMechanism>, mut input: Pieces<'_>) {
    let Some(name) = input.piece() else { return };
    let mut auth = Authenticator::new(enabled.clone());
    let name = String::from_utf8_lossy(name);
    let chosen = auth.handshake(&name);
    let mechanism = SaslMechanism::parse(&name).filter(|m| enabled.contains(m));
    assert_eq!(
        chosen.is_ok(),
        mechanism.is_some(),
        "handshake for {name:?}"
    );
    for _ in 0..4 {
        let Some(token) = input.piece() else { return };
        let step = match auth.step(token, users()) {
            Ok(step) => step,
            Err(_) => {
                assert!(auth.finished(), "a failed step ends the exchange");
                continue;
            }
        };
        match step {
            SaslStep::Challenge(_) => {}
            SaslStep::Authenticated { principal, .. } => panic!(
                "{:?} authenticated {principal} from arbitrary tokens",
                mechanism.map(SaslMechanism::name)
            ),
            SaslStep::CheckPassword(login) => {
                assert_eq!(mechanism, Some(SaslMechanism::Plain));
                if let Ok(principal) = login.verify() {
                    // Only the real password logs in: the token's last field is it.
                    let password = token.rsplit(|&b| b == 0).next().unwrap_or_default();
                    assert_eq!(
                        password_of(principal.name()).map(str::as_bytes),
                        Some(password),
                        "PLAIN accepted {principal} with a wrong password"
                    );
                }
            }
        }
    }
}

fn client(enabled: Vec<SaslMechanism>, pick: u8, mut input: Pieces<'_>) {
    let mechanism = if pick & 1 == 0 {
        Mechanism::Sha256
    } else {
        Mechanism::Sha512
    };
    let user = match pick >> 1 & 3 {
        0 | 1 => ALICE.to_string(),
        2 => BOB.to_string(),
        _ => String::from_utf8_lossy(input.piece().unwrap_or_default()).into_owned(),
    };
    let right_password = pick >> 3 & 1 == 0;
    let guess = if right_password {
        password_of(&user).unwrap_or("").to_string()
    } else {
        String::from_utf8_lossy(input.piece().unwrap_or_default()).into_owned()
    };
    // A nonce is printable ASCII without commas (the raw mode sends any other).
    let nonce: String = input
        .piece()
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_graphic() && **b != b',')
        .map(|&b| char::from(b))
        .collect();
    let nonce = if nonce.is_empty() {
        "fyko+d2lbbFgONRv9qkxdawL".to_string()
    } else {
        nonce
    };
    // Where to tamper with the client-final message, and with what; none when absent.
    let tamper = match (input.byte(), input.byte()) {
        (Some(at), Some(with)) => Some((usize::from(at), with)),
        _ => None,
    };

    let mut auth = Authenticator::new(enabled.clone());
    let offered = enabled.contains(&SaslMechanism::Scram(mechanism));
    if auth.handshake(mechanism.name()).is_err() {
        assert!(!offered, "an offered mechanism was refused");
        return;
    }
    let escaped = user.replace('=', "=3D").replace(',', "=2C");
    let client_first_bare = format!("n={escaped},r={nonce}");
    let server_first = match auth.step(format!("n,,{client_first_bare}").as_bytes(), users()) {
        Ok(SaslStep::Challenge(challenge)) => {
            String::from_utf8(challenge).expect("UTF-8 challenge")
        }
        Ok(other) => panic!("client-first was answered with {other:?}"),
        Err(_) => return,
    };
    let mut full_nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0;
    for attribute in server_first.split(',') {
        match attribute.split_once('=') {
            Some(("r", v)) => full_nonce = v,
            Some(("s", v)) => salt = B64.decode(v).expect("base64 salt"),
            Some(("i", v)) => iterations = v.parse().expect("numeric iterations"),
            _ => {}
        }
    }
    assert!(
        full_nonce.starts_with(&nonce),
        "the server nonce extends the client's"
    );
    assert!(
        full_nonce.len() > nonce.len(),
        "the server adds its own nonce"
    );
    let salted = salted_password(mechanism, guess.as_bytes(), &salt, iterations)
        .expect("the server's iterations are within bounds");
    let key = hmac::Key::new(hmac_of(mechanism), &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(digest_of(mechanism), client_key.as_ref());
    let without_proof = format!("c={},r={full_nonce}", B64.encode("n,,"));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac::sign(
        &hmac::Key::new(hmac_of(mechanism), stored_key.as_ref()),
        auth_message.as_bytes(),
    );
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(signature.as_ref())
        .map(|(k, s)| k ^ s)
        .collect();
    let mut client_final = format!("{without_proof},p={}", B64.encode(&proof)).into_bytes();
    let mut tampered = false;
    if let Some((at, with)) = tamper {
        let at = at % client_final.len();
        tampered = client_final[at] != with;
        client_final[at] = with;
    }
    let right = right_password && password_of(&user).is_some() && !tampered;
    match auth.step(&client_final, users()) {
        Ok(SaslStep::Authenticated { principal, token }) => {
            assert_eq!(principal.name(), user, "authenticated as someone else");
            assert!(
                right_password && password_of(&user) == Some(guess.as_str()),
                "{user} authenticated with a wrong password"
            );
            let server_key = hmac::sign(&key, b"Server Key");
            let expected = hmac::sign(
                &hmac::Key::new(hmac_of(mechanism), server_key.as_ref()),
                auth_message.as_bytes(),
            );
            if !tampered {
                assert_eq!(
                    token,
                    format!("v={}", B64.encode(expected.as_ref())).into_bytes(),
                    "the server's signature"
                );
            }
        }
        Ok(other) => panic!("client-final was answered with {other:?}"),
        Err(e) => assert!(!right, "{user} with the right password was refused: {e}"),
    }
}

fn hmac_of(mechanism: Mechanism) -> hmac::Algorithm {
    match mechanism {
        Mechanism::Sha256 => hmac::HMAC_SHA256,
        Mechanism::Sha512 => hmac::HMAC_SHA512,
    }
}

fn digest_of(mechanism: Mechanism) -> &'static digest::Algorithm {
    match mechanism {
        Mechanism::Sha256 => &digest::SHA256,
        Mechanism::Sha512 => &digest::SHA512,
    }
}
