//! The peering handshake (spec §3.4–§4) as a state machine without I/O, for both TCP roles.
//!
//! The side that opened the TCP connection (the *connector*) sends HELLO; the side that
//! accepted it may send PROBE. Whoever learns the other's id from a HELLO compares: the smaller
//! id becomes the *originator* (VERSION_SELECT, ORIGINATOR_SYN with its filter, then
//! ORIGINATOR_ACK after the answer), the other the *responder* (RESPONDER_SYN_ACK with its
//! filter). PROBE is ignored in every state. A malformed message is answered with DROP_CONN and
//! the code Broker uses; a well-formed message out of turn ends the handshake without one, as
//! Broker does.
//!
//! A peer whose id Broker itself would ignore (spec §3.3: not a UUID of version 1–5) is
//! refused here, with a DROP_CONN that says why: Broker would complete the handshake and then
//! never report such a peer, so a peer that gets along with this side but not with a real
//! Broker is caught at the first message that carries its id.

use crate::error::DecodeError;
use crate::frame::{DropCode, Filter, Handshake, VERSION};
use crate::id::{EndpointId, InvalidEndpointId, OwnEndpointId};

/// Which end of the TCP connection this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRole {
    /// Opened the connection (Zeek, when it peers with the bus).
    Connector,
    /// Accepted it (the bus).
    Acceptor,
}

/// The outcome of a completed handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peered {
    /// The other endpoint's id.
    pub peer: EndpointId,
    /// The other endpoint's subscriptions at the time of the handshake.
    pub peer_filter: Filter,
    /// Whether this side was the originator (its id is the smaller one).
    pub originator: bool,
}

/// What a received frame led to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Messages to send now, in order.
    pub send: Vec<Handshake>,
    /// Set once the handshake is complete (after `send` has gone out).
    pub done: Option<Peered>,
}

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The peer's endpoint id is one Broker ignores: refused.
    #[error("the peer's endpoint id {id} is one Broker ignores ({why})")]
    InvalidPeerId {
        id: EndpointId,
        why: InvalidEndpointId,
    },
    /// Anything else: a malformed message, one out of turn, an unsupported version.
    #[error("{0}")]
    Protocol(String),
}

/// A failed handshake: why, and what to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{failure}")]
pub struct HandshakeError {
    pub failure: HandshakeFailure,
    /// The DROP_CONN to send before closing, if Broker would send one.
    pub drop_conn: Option<Handshake>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Acceptor: waiting for the connector's HELLO.
    AwaitHello,
    /// Connector, HELLO sent: the answer decides the role.
    AwaitHelloOrVersionSelect,
    /// Responder: waiting for the originator's VERSION_SELECT.
    AwaitVersionSelect,
    /// Responder: waiting for ORIGINATOR_SYN.
    AwaitOriginatorSyn {
        peer: EndpointId,
    },
    /// Responder, RESPONDER_SYN_ACK sent: waiting for ORIGINATOR_ACK.
    AwaitOriginatorAck {
        peer: EndpointId,
        filter: Filter,
    },
    /// Originator, VERSION_SELECT and ORIGINATOR_SYN sent.
    AwaitResponderSynAck {
        peer: EndpointId,
    },
    Done,
    Failed,
}

/// One side of a handshake.
#[derive(Debug)]
pub struct Handshaker {
    own: OwnEndpointId,
    filter: Filter,
    state: State,
}

impl Handshaker {
    /// Starts a handshake; returns it with the messages to send at once (HELLO for the
    /// connector, PROBE for the acceptor).
    pub fn start(own: OwnEndpointId, filter: Filter, role: TcpRole) -> (Self, Vec<Handshake>) {
        let (state, first) = match role {
            TcpRole::Connector => (State::AwaitHelloOrVersionSelect, hello(own)),
            TcpRole::Acceptor => (State::AwaitHello, Handshake::Probe),
        };
        (Self { own, filter, state }, vec![first])
    }

    /// Whether the handshake is over (successfully).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the payload of one received frame.
    pub fn receive(&mut self, payload: &[u8]) -> Result<Progress, HandshakeError> {
        if matches!(self.state, State::Done | State::Failed) {
            return Err(self.fail("a handshake frame after the handshake ended", None));
        }
        let message = match Handshake::decode(payload) {
            Ok(message) => message,
            Err(err) => {
                let code = match err {
                    DecodeError::WrongMagic(_) => DropCode::WrongMagicNumber,
                    _ => DropCode::InvalidMessage,
                };
                let text = match err {
                    DecodeError::WrongMagic(_) => "wrong magic number".to_owned(),
                    DecodeError::UnknownMessageTag(_) => "invalid message type tag".to_owned(),
                    ref other => format!("failed to parse handshake message: {other}"),
                };
                return Err(self.fail(&format!("{err}"), Some((code, text))));
            }
        };
        let state = std::mem::replace(&mut self.state, State::Failed);
        let mut progress = Progress::default();
        self.state = match (state, message) {
            (state, Handshake::Probe) => state,
            (
                _,
                Handshake::DropConn {
                    code, description, ..
                },
            ) => {
                let reason = format!(
                    "the peer dropped the connection (code {code}): {}",
                    String::from_utf8_lossy(&description)
                );
                return Err(self.fail(&reason, None));
            }
            (
                state @ (State::AwaitHello | State::AwaitHelloOrVersionSelect),
                Handshake::Hello {
                    sender,
                    min_version,
                    max_version,
                },
            ) => {
                if !(min_version..=max_version).contains(&VERSION) {
                    return Err(self.fail(
                        &format!("the peer offers versions {min_version} to {max_version}, not 1"),
                        Some((
                            DropCode::PeerIncompatible,
                            "unsupported versions offered".into(),
                        )),
                    ));
                }
                self.check_peer_id(sender)?;
                if sender == self.own.id() {
                    return Err(self.fail(
                        "the peer has this endpoint's own id",
                        Some((DropCode::InvalidMessage, "same endpoint id".into())),
                    ));
                }
                if self.own.id() < sender {
                    progress.send.push(Handshake::VersionSelect {
                        sender: self.own.id(),
                        version: VERSION,
                    });
                    progress
                        .send
                        .push(Handshake::OriginatorSyn(self.filter.clone()));
                    State::AwaitResponderSynAck { peer: sender }
                } else {
                    if state == State::AwaitHello {
                        progress.send.push(hello(self.own));
                    }
                    State::AwaitVersionSelect
                }
            }
            (
                State::AwaitVersionSelect | State::AwaitHelloOrVersionSelect,
                Handshake::VersionSelect { sender, version },
            ) => {
                self.check_peer_id(sender)?;
                if version != VERSION {
                    return Err(self.fail(
                        &format!("the peer selected version {version}"),
                        Some((
                            DropCode::PeerIncompatible,
                            "unsupported version selected".into(),
                        )),
                    ));
                }
                State::AwaitOriginatorSyn { peer: sender }
            }
            (State::AwaitOriginatorSyn { peer }, Handshake::OriginatorSyn(filter)) => {
                progress
                    .send
                    .push(Handshake::ResponderSynAck(self.filter.clone()));
                State::AwaitOriginatorAck { peer, filter }
            }
            (State::AwaitOriginatorAck { peer, filter }, Handshake::OriginatorAck) => {
                progress.done = Some(Peered {
                    peer,
                    peer_filter: filter,
                    originator: false,
                });
                State::Done
            }
            (State::AwaitResponderSynAck { peer }, Handshake::ResponderSynAck(filter)) => {
                progress.send.push(Handshake::OriginatorAck);
                progress.done = Some(Peered {
                    peer,
                    peer_filter: filter,
                    originator: true,
                });
                State::Done
            }
            (state, message) => {
                let reason = format!("unexpected {} while in {state:?}", message_name(&message));
                return Err(self.fail(&reason, None));
            }
        };
        Ok(progress)
    }

    fn fail(&mut self, reason: &str, drop: Option<(DropCode, String)>) -> HandshakeError {
        self.failure(HandshakeFailure::Protocol(reason.to_owned()), drop)
    }

    fn failure(
        &mut self,
        failure: HandshakeFailure,
        drop: Option<(DropCode, String)>,
    ) -> HandshakeError {
        self.state = State::Failed;
        HandshakeError {
            failure,
            drop_conn: drop.map(|(code, text)| Handshake::DropConn {
                sender: self.own.id(),
                code: code as u8,
                description: text.into_bytes(),
            }),
        }
    }

    /// Refuses a peer id that Broker would ignore.
    fn check_peer_id(&mut self, id: EndpointId) -> Result<(), HandshakeError> {
        id.check().map_err(|why| {
            let text = format!("invalid endpoint id {id}: {why}");
            self.failure(
                HandshakeFailure::InvalidPeerId { id, why },
                Some((DropCode::PeerInvalid, text)),
            )
        })
    }
}

fn hello(own: OwnEndpointId) -> Handshake {
    Handshake::Hello {
        sender: own.id(),
        min_version: VERSION,
        max_version: VERSION,
    }
}

fn message_name(message: &Handshake) -> &'static str {
    match message {
        Handshake::Hello { .. } => "HELLO",
        Handshake::Probe => "PROBE",
        Handshake::VersionSelect { .. } => "VERSION_SELECT",
        Handshake::DropConn { .. } => "DROP_CONN",
        Handshake::OriginatorSyn(_) => "ORIGINATOR_SYN",
        Handshake::ResponderSynAck(_) => "RESPONDER_SYN_ACK",
        Handshake::OriginatorAck => "ORIGINATOR_ACK",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid (version-4) id whose bytes order like `byte`.
    fn id(byte: u8) -> EndpointId {
        let mut bytes = [byte; 16];
        bytes[6] = 0x40 | (byte & 0x0f);
        EndpointId::from_bytes(bytes)
    }

    fn own(byte: u8) -> OwnEndpointId {
        OwnEndpointId::new(id(byte)).unwrap()
    }

    fn filter(prefixes: &[&str]) -> Filter {
        prefixes.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    /// Runs both sides against each other until both are done; returns what each learned
    /// and every message in the order it was sent (with the sender's role).
    fn run(
        connector_id: OwnEndpointId,
        acceptor_id: OwnEndpointId,
    ) -> (Peered, Peered, Vec<(TcpRole, Handshake)>) {
        let (mut connector, c_first) =
            Handshaker::start(connector_id, filter(&["zeek/"]), TcpRole::Connector);
        let (mut acceptor, a_first) =
            Handshaker::start(acceptor_id, filter(&["bus/"]), TcpRole::Acceptor);
        let mut to_acceptor: Vec<Handshake> = c_first.clone();
        let mut to_connector: Vec<Handshake> = a_first.clone();
        let mut log: Vec<(TcpRole, Handshake)> = c_first
            .into_iter()
            .map(|m| (TcpRole::Connector, m))
            .chain(a_first.into_iter().map(|m| (TcpRole::Acceptor, m)))
            .collect();
        let (mut c_done, mut a_done) = (None, None);
        for _ in 0..10 {
            for message in std::mem::take(&mut to_acceptor) {
                let progress = acceptor.receive(&message.to_payload()).unwrap();
                log.extend(
                    progress
                        .send
                        .iter()
                        .cloned()
                        .map(|m| (TcpRole::Acceptor, m)),
                );
                to_connector.extend(progress.send);
                a_done = a_done.or(progress.done);
            }
            for message in std::mem::take(&mut to_connector) {
                let progress = connector.receive(&message.to_payload()).unwrap();
                log.extend(
                    progress
                        .send
                        .iter()
                        .cloned()
                        .map(|m| (TcpRole::Connector, m)),
                );
                to_acceptor.extend(progress.send);
                c_done = c_done.or(progress.done);
            }
        }
        (c_done.unwrap(), a_done.unwrap(), log)
    }

    fn names(log: &[(TcpRole, Handshake)]) -> Vec<(TcpRole, &'static str)> {
        log.iter()
            .map(|(role, m)| (*role, message_name(m)))
            .collect()
    }

    /// Spec §3.4 case A: the acceptor (bus) has the smaller id and originates.
    #[test]
    fn acceptor_with_the_smaller_id_originates() {
        let (connector, acceptor, log) = run(own(9), own(1));
        use TcpRole::{Acceptor as B, Connector as Z};
        assert_eq!(
            names(&log),
            [
                (Z, "HELLO"),
                (B, "PROBE"),
                (B, "VERSION_SELECT"),
                (B, "ORIGINATOR_SYN"),
                (Z, "RESPONDER_SYN_ACK"),
                (B, "ORIGINATOR_ACK"),
            ]
        );
        assert!(acceptor.originator && !connector.originator);
        assert_eq!((acceptor.peer, connector.peer), (id(9), id(1)));
        assert_eq!(acceptor.peer_filter, filter(&["zeek/"]));
        assert_eq!(connector.peer_filter, filter(&["bus/"]));
    }

    /// Spec §3.4 case B: the connector (Zeek) has the smaller id and originates.
    #[test]
    fn connector_with_the_smaller_id_originates() {
        let (connector, acceptor, log) = run(own(1), own(9));
        use TcpRole::{Acceptor as B, Connector as Z};
        assert_eq!(
            names(&log),
            [
                (Z, "HELLO"),
                (B, "PROBE"),
                (B, "HELLO"),
                (Z, "VERSION_SELECT"),
                (Z, "ORIGINATOR_SYN"),
                (B, "RESPONDER_SYN_ACK"),
                (Z, "ORIGINATOR_ACK"),
            ]
        );
        assert!(connector.originator && !acceptor.originator);
        assert_eq!(acceptor.peer_filter, filter(&["zeek/"]));
        assert_eq!(connector.peer_filter, filter(&["bus/"]));
    }

    #[test]
    fn violations_drop_the_connection_with_brokers_codes() {
        let start = || Handshaker::start(own(5), Filter::new(), TcpRole::Acceptor).0;
        let drop_code = |err: HandshakeError| match err.drop_conn {
            Some(Handshake::DropConn { code, .. }) => Some(code),
            _ => None,
        };
        // Wrong magic.
        let err = start().receive(&[7, 0x5a, 0x45, 0x45, 0x4c]).unwrap_err();
        assert_eq!(drop_code(err), Some(DropCode::WrongMagicNumber as u8));
        // Versions that exclude 1.
        let hello = Handshake::Hello {
            sender: id(9),
            min_version: 2,
            max_version: 3,
        };
        let err = start().receive(&hello.to_payload()).unwrap_err();
        assert_eq!(drop_code(err), Some(DropCode::PeerIncompatible as u8));
        // Unknown tag, empty frame.
        let err = start().receive(&[42]).unwrap_err();
        assert_eq!(drop_code(err), Some(DropCode::InvalidMessage as u8));
        let err = start().receive(&[]).unwrap_err();
        assert_eq!(drop_code(err), Some(DropCode::InvalidMessage as u8));
        // A well-formed message out of turn: closed without DROP_CONN.
        let err = start()
            .receive(&Handshake::OriginatorAck.to_payload())
            .unwrap_err();
        assert_eq!(drop_code(err), None);
        // A wrong selected version.
        let mut responder = start();
        let hello = Handshake::Hello {
            sender: id(1),
            min_version: 1,
            max_version: 1,
        };
        responder.receive(&hello.to_payload()).unwrap();
        let select = Handshake::VersionSelect {
            sender: id(1),
            version: 2,
        };
        let err = responder.receive(&select.to_payload()).unwrap_err();
        assert_eq!(drop_code(err), Some(DropCode::PeerIncompatible as u8));
        // A DROP_CONN from the peer ends it, naming the reason.
        let drop = Handshake::DropConn {
            sender: id(1),
            code: 38,
            description: b"wrong magic number".to_vec(),
        };
        let err = start().receive(&drop.to_payload()).unwrap_err();
        assert!(err.to_string().contains("wrong magic number"), "{err}");
    }

    /// Spec §3.3: Broker never reports a peer whose id is not a UUID of version 1–5, so the
    /// handshake refuses such an id in HELLO (acceptor) and in VERSION_SELECT (connector),
    /// with a DROP_CONN naming the id.
    #[test]
    fn ids_broker_would_ignore_are_refused() {
        let version = |v: u8| {
            let mut bytes = *id(3).as_bytes();
            bytes[6] = v << 4;
            EndpointId::from_bytes(bytes)
        };
        for (bad, why) in [
            (version(0), InvalidEndpointId::Version(0)),
            (version(7), InvalidEndpointId::Version(7)),
            (EndpointId::NIL, InvalidEndpointId::Nil),
        ] {
            let mut acceptor = Handshaker::start(own(5), Filter::new(), TcpRole::Acceptor).0;
            let hello = Handshake::Hello {
                sender: bad,
                min_version: 1,
                max_version: 1,
            };
            let err = acceptor.receive(&hello.to_payload()).unwrap_err();
            assert_eq!(
                err.failure,
                HandshakeFailure::InvalidPeerId { id: bad, why }
            );
            let Some(Handshake::DropConn {
                code, description, ..
            }) = err.drop_conn
            else {
                panic!("no DROP_CONN for {bad}");
            };
            assert_eq!(code, DropCode::PeerInvalid as u8);
            assert!(
                String::from_utf8_lossy(&description).contains(&bad.to_string()),
                "{description:?}"
            );
            assert!(!acceptor.is_done());

            let mut connector = Handshaker::start(own(5), Filter::new(), TcpRole::Connector).0;
            let select = Handshake::VersionSelect {
                sender: bad,
                version: 1,
            };
            let err = connector.receive(&select.to_payload()).unwrap_err();
            assert_eq!(
                err.failure,
                HandshakeFailure::InvalidPeerId { id: bad, why }
            );
        }
        // Versions 1 to 5 are peers.
        for v in 1..=5 {
            let mut acceptor = Handshaker::start(own(5), Filter::new(), TcpRole::Acceptor).0;
            let hello = Handshake::Hello {
                sender: version(v),
                min_version: 1,
                max_version: 1,
            };
            assert!(acceptor.receive(&hello.to_payload()).is_ok(), "version {v}");
        }
    }
}
