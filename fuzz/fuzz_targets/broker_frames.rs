//! A byte stream from a Broker peer: frame splitting, handshake messages fed to the handshake
//! state machine of both TCP roles, and envelopes. Nothing may panic; decoded messages must
//! encode to bytes that decode to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_broker::{EndpointId, OwnEndpointId};
use threatbus_broker::frame::{Envelope, Handshake, split_frame};
use threatbus_broker::handshake::{Handshaker, TcpRole};

fuzz_target!(|bytes: &[u8]| {
    let mut id = [0x80; 16];
    id[6] = 0x40;
    let Ok(own) = OwnEndpointId::new(EndpointId::from_bytes(id)) else {
        return;
    };
    let (mut acceptor, _) = Handshaker::start(own, vec![b"a".to_vec()], TcpRole::Acceptor);
    let (mut connector, _) = Handshaker::start(own, Vec::new(), TcpRole::Connector);
    let mut rest = bytes;
    while let Ok(Some((payload, used))) = split_frame(rest, 1 << 16) {
        let _ = acceptor.receive(payload);
        let _ = connector.receive(payload);
        if let Ok(message) = Handshake::decode(payload) {
            assert_eq!(Handshake::decode(&message.to_payload()).ok(), Some(message));
        }
        if let Ok(envelope) = Envelope::decode(payload) {
            assert_eq!(Envelope::decode(&envelope.to_payload()).ok(), Some(envelope.clone()));
            let _ = envelope.filter();
        }
        rest = &rest[used..];
    }
});
