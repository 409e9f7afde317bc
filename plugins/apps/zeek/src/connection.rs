//! Frames in and out over one Zeek connection.
//!
//! A [`Connection`] owns both halves of the transport (TLS or plain TCP) and the bytes read
//! but not yet taken as a frame. It reads frames, bounded by `max_frame_size`, and it is the
//! only code that writes to the peer: handshake messages ([`Connection::send_handshake`]) and
//! envelopes ([`Connection::send`]: data, acknowledgements, pings, pongs) are encoded by
//! [`threatbus_broker::frame`] and go out through one private write path, which flushes each
//! frame.

use thiserror::Error;
use threatbus_broker::DecodeError;
use threatbus_broker::frame::{Envelope, Handshake, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::transport::PeerIo;

/// How much to read from the transport at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why reading or writing frames failed; the connection is unusable afterwards.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// Reading from the transport failed.
    #[error("reading")]
    Read(#[source] std::io::Error),
    /// Writing to the transport failed.
    #[error("writing")]
    Write(#[source] std::io::Error),
    /// The peer closed the connection after part of a frame.
    #[error("closed in the middle of a frame")]
    ClosedMidFrame,
    /// A frame the stream cannot be read past: its length prefix is above `max_frame_size`
    /// ([`DecodeError::FrameTooLarge`]).
    #[error(transparent)]
    Frame(DecodeError),
}

/// One connection to a Zeek peer, as frames.
pub struct Connection {
    reader: ReadHalf<Box<dyn PeerIo>>,
    writer: WriteHalf<Box<dyn PeerIo>>,
    /// Bytes read but not yet taken as a frame.
    buffer: Vec<u8>,
    max_frame_size: usize,
}

impl Connection {
    pub fn new(io: Box<dyn PeerIo>, max_frame_size: usize) -> Self {
        let (reader, writer) = tokio::io::split(io);
        Self {
            reader,
            writer,
            buffer: Vec::new(),
            max_frame_size,
        }
    }

    /// The next frame's payload; `None` when the peer closed the connection between frames.
    ///
    /// Cancel-safe: dropped before it returns, it loses no bytes (what was read stays in the
    /// buffer for the next call), so it can race other branches in `tokio::select!`.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, ConnectionError> {
        loop {
            if let Some((payload, used)) =
                split_frame(&self.buffer, self.max_frame_size).map_err(ConnectionError::Frame)?
            {
                let payload = payload.to_vec();
                self.buffer.drain(..used);
                return Ok(Some(payload));
            }
            self.buffer.reserve(READ_CHUNK);
            let read = self
                .reader
                .read_buf(&mut self.buffer)
                .await
                .map_err(ConnectionError::Read)?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::ClosedMidFrame)
                };
            }
        }
    }

    /// Sends handshake messages (phases 1 and 2), in order.
    pub async fn send_handshake(&mut self, messages: &[Handshake]) -> Result<(), ConnectionError> {
        for message in messages {
            self.write_frame(&message.to_frame()).await?;
        }
        Ok(())
    }

    /// Sends one envelope (after the handshake).
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), ConnectionError> {
        self.write_frame(&envelope.to_frame()).await
    }

    /// Closes the sending side (TLS: close_notify, then FIN); reading may go on.
    pub async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }

    /// The single write path: one whole frame, flushed.
    async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ConnectionError> {
        self.writer
            .write_all(frame)
            .await
            .map_err(ConnectionError::Write)?;
        self.writer.flush().await.map_err(ConnectionError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threatbus_broker::EndpointId;
    use threatbus_broker::frame::{EnvelopeType, encode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn pair(max_frame_size: usize) -> (Connection, DuplexStream) {
        let (ours, theirs) = duplex(64 * 1024);
        (Connection::new(Box::new(ours), max_frame_size), theirs)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_however_the_bytes_arrive() {
        let (mut connection, mut peer) = pair(1024);
        let mut bytes = frame(b"first");
        bytes.extend(frame(b""));
        bytes.extend(frame(&[7; 300]));
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(3) {
                peer.write_all(piece).await.expect("duplex write");
                tokio::task::yield_now().await;
            }
            peer
        });
        assert_eq!(connection.read_frame().await.unwrap().unwrap(), b"first");
        assert_eq!(connection.read_frame().await.unwrap().unwrap(), b"");
        assert_eq!(connection.read_frame().await.unwrap().unwrap(), [7; 300]);
        drop(writer.await.unwrap());
        assert!(connection.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cut_or_oversized_frame_is_an_error() {
        let (mut connection, mut peer) = pair(1024);
        peer.write_all(&frame(b"abcdef")[..6]).await.unwrap();
        drop(peer);
        let err = connection.read_frame().await.unwrap_err();
        assert!(matches!(err, ConnectionError::ClosedMidFrame), "{err:?}");
        assert_eq!(err.to_string(), "closed in the middle of a frame");

        let (mut connection, mut peer) = pair(1024);
        peer.write_all(&frame(&[0; 1025])).await.unwrap();
        let err = connection.read_frame().await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::Frame(DecodeError::FrameTooLarge {
                    length: 1025,
                    max: 1024
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "frame of 1025 bytes exceeds the maximum of 1024"
        );
    }

    /// Handshake messages and envelopes leave as the broker crate frames them, in order.
    #[tokio::test]
    async fn everything_sent_is_framed_by_the_broker_crate() {
        let (mut connection, mut peer) = pair(1024);
        let mut id = [1u8; 16];
        id[6] = 0x41;
        let id = EndpointId::from_bytes(id);
        let handshake = [Handshake::Probe, Handshake::OriginatorAck];
        let ping = Envelope::internal(EnvelopeType::Ping, id, id, b"ping".to_vec());
        let data = Envelope::data(id, "threatbus/manage", b"event".to_vec());
        connection.send_handshake(&handshake).await.unwrap();
        connection.send(&ping).await.unwrap();
        connection.send(&data).await.unwrap();
        connection.close().await;
        let mut expected = Vec::new();
        for message in &handshake {
            encode_frame(&message.to_payload(), &mut expected);
        }
        encode_frame(&ping.to_payload(), &mut expected);
        encode_frame(&data.to_payload(), &mut expected);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn writing_to_a_closed_peer_is_a_write_error() {
        let (mut connection, peer) = pair(1024);
        drop(peer);
        let err = connection
            .send_handshake(&[Handshake::Probe])
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectionError::Write(_)), "{err:?}");
        assert_eq!(err.to_string(), "writing");
    }
}
