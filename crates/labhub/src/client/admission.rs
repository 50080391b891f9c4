//! Which client keys the Hub's message-channel servers (publishers, request servers) admit:
//! exactly those the broker admits, as the reply to each of their registrations lists them.
//!
//! One ZAP handler per Hub (ZAP is per ZeroMQ context, and the Hub's channels share its
//! context) asks [`Admission::decide`] about every peer that handshakes with one of the
//! Hub's CURVE server sockets. The list comes with every `register` reply of a message
//! channel, so after a broker restart (whose allow list may have changed) the registration
//! the client repeats by itself brings the new list.
//!
//! A server socket is bound before it is registered (the registration carries its
//! endpoint), so the first list arrives only with the first registration's reply; a peer
//! that finds the channel at the broker may reach the socket before that reply reaches this
//! process. ZeroMQ does not retry a peer refused by ZAP, so instead of refusing, the
//! decision waits (bounded) until the first list is known.
#![deny(unsafe_code)]

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use labhub_zmq::{ZapDecision, ZapRequest};

use crate::protocol::Reply;

/// The admission rule of one Hub's message-channel servers.
#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<State>,
    learned: Condvar,
    /// How long a handshake waits for the first list.
    wait: Duration,
}

#[derive(Debug)]
enum State {
    /// No registration reply yet.
    Unknown,
    /// The broker admits every key.
    Any,
    /// The broker admits these keys.
    Keys(HashSet<[u8; 32]>),
}

impl Admission {
    /// No key is admitted until a registration's reply says which; a handshake waits up to
    /// `wait` for it.
    pub(crate) fn new(wait: Duration) -> Self {
        Self {
            state: Mutex::new(State::Unknown),
            learned: Condvar::new(),
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is replaced whole, so a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the admitted keys of a `register` reply of a message channel (checked to carry
    /// them, see `check_reply`).
    pub(crate) fn learn(&self, reply: &Reply) {
        let state = if reply.any_key_admitted {
            State::Any
        } else {
            let keys = reply.admitted_keys.as_deref().unwrap_or_default();
            State::Keys(keys.iter().map(|k| *k.as_bytes()).collect())
        };
        *self.lock() = state;
        self.learned.notify_all();
    }

    /// Admits a CURVE peer whose key the broker admits; refuses every other peer.
    pub(crate) fn decide(&self, request: &ZapRequest) -> ZapDecision {
        let Some(key) = request.curve_public_key() else {
            return ZapDecision::deny("CURVE is required");
        };
        match self.admits(key.as_bytes()) {
            Ok(()) => ZapDecision::allow(key.to_z85()),
            Err(why) => {
                tracing::debug!(address = %request.address, key = %key.to_z85(), why, "peer refused");
                ZapDecision::deny(why)
            }
        }
    }

    /// Whether `key` is admitted, waiting for the first list if none is known yet; the
    /// refusal's reason otherwise.
    fn admits(&self, key: &[u8; 32]) -> Result<(), &'static str> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        while matches!(*state, State::Unknown) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the broker has not said which keys to admit");
            }
            state = self
                .learned
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match &*state {
            State::Any => Ok(()),
            State::Keys(keys) if keys.contains(key) => Ok(()),
            State::Keys(_) | State::Unknown => Err("client key not admitted by the broker"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::CurveKey;

    fn reply(keys: &[[u8; 32]], any: bool) -> Reply {
        let mut reply = Reply::ok(1);
        reply.admitted_keys = Some(keys.iter().map(|k| CurveKey::from_bytes(*k)).collect());
        reply.any_key_admitted = any;
        reply
    }

    #[test]
    fn only_the_listed_keys_are_admitted_and_a_new_list_replaces_the_old() {
        let admission = Admission::new(Duration::ZERO);
        admission.learn(&reply(&[[1; 32]], false));
        assert_eq!(admission.admits(&[1; 32]), Ok(()));
        assert!(admission.admits(&[2; 32]).is_err());
        admission.learn(&reply(&[[2; 32]], false));
        assert!(admission.admits(&[1; 32]).is_err());
        assert_eq!(admission.admits(&[2; 32]), Ok(()));
        admission.learn(&reply(&[], true));
        assert_eq!(admission.admits(&[3; 32]), Ok(()));
    }

    #[test]
    fn before_the_first_list_a_handshake_waits_for_it_and_is_refused_without_one() {
        let admission = Arc::new(Admission::new(Duration::from_millis(50)));
        assert!(admission.admits(&[1; 32]).is_err(), "no list came");

        let admission = Arc::new(Admission::new(Duration::from_secs(60)));
        let deciding = {
            let admission = Arc::clone(&admission);
            std::thread::spawn(move || admission.admits(&[1; 32]))
        };
        admission.learn(&reply(&[[1; 32]], false));
        assert_eq!(deciding.join().unwrap(), Ok(()));
    }
}
