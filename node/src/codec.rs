//! The sync protocol's wire codec: each request and each response is one CBOR byte string
//! (RFC 8949, major type 2) holding one sync message.
//!
//! libp2p's stock CBOR codec reads up to its limit and then fails to decode, and a request that
//! fails to be read never reaches the node as an event: the node could not tell who sent it.
//! This codec reads the byte string's length first and, if it is over [`FRAME_BYTES_MAX`],
//! reads nothing more and hands the node [`OVERSIZED`] instead, so the node knows which peer
//! sent it and cuts it off. A stream that does not start with a definite-length byte string is
//! handed over as [`NOT_A_FRAME`], likewise.
//!
//! From a peer that is not admitted ([`crate::admission`]) the codec reads frames of at most
//! [`STRANGER_FRAME_BYTES_MAX`], and only while the strangers' frames being read fit in
//! [`crate::admission::STRANGERS_READING_BYTES_MAX`]; it hands the node [`UNTIL_ADMITTED`] or [`BUSY`] otherwise,
//! unread. Neither is the peer's fault: an honest device whose record waits for a provider's
//! acceptance may send a large item, and the node refuses that message without cutting it off.

use std::{io, sync::Arc};

use libp2p::{
    StreamProtocol,
    futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, executor::block_on, io::Cursor},
    request_response,
};
use phr_core::sync::message::SYNC_MESSAGE_BYTES_MAX;

use crate::{
    admission::{Admission, Reserved, STRANGER_FRAME_BYTES_MAX},
    swarm::Frame,
};

/// The largest frame read: one sync message at its largest.
pub const FRAME_BYTES_MAX: u64 = SYNC_MESSAGE_BYTES_MAX as u64;

/// What the codec hands over in place of a frame over [`FRAME_BYTES_MAX`] (never read). It is
/// not a sync message, so a node that passed it on would refuse it as malformed anyway.
pub const OVERSIZED: &[u8] = b"\xffphr: a frame over the size limit, refused unread";

/// What the codec hands over in place of a stream that is not one CBOR byte string.
pub const NOT_A_FRAME: &[u8] = b"\xffphr: not a CBOR byte string";

/// What the codec hands over in place of a frame over [`STRANGER_FRAME_BYTES_MAX`] from a peer
/// that is not admitted (never read).
pub const UNTIL_ADMITTED: &[u8] = b"\xffphr: a frame too large for a peer not admitted, unread";

/// What the codec hands over in place of a stranger's frame that finds the strangers' reading
/// budget ([`crate::admission::STRANGERS_READING_BYTES_MAX`]) spent (never read).
pub const BUSY: &[u8] = b"\xffphr: no room to read a stranger's frame now, unread";

/// CBOR's major type for byte strings, in the top three bits of the first byte.
const MAJOR_BYTES: u8 = 2;

/// The codec; see the module documentation. libp2p clones it for each connection (and the
/// connection's copy for each stream): the clone made for a new connection takes the peer the
/// gate noted for it.
#[derive(Debug, Default)]
pub struct FrameCodec {
    admission: Arc<Admission>,
    peer: Option<libp2p::PeerId>,
}

impl FrameCodec {
    /// The codec of a node whose admitted peers are `admission`'s.
    pub fn new(admission: Arc<Admission>) -> Self {
        FrameCodec {
            admission,
            peer: None,
        }
    }

    /// The strangers' budget, if this codec's peer is not admitted (now: admission changes).
    fn stranger(&self) -> Option<&Arc<Admission>> {
        match self.peer {
            Some(peer) if self.admission.is_admitted(&peer) => None,
            _ => Some(&self.admission),
        }
    }
}

impl Clone for FrameCodec {
    fn clone(&self) -> Self {
        FrameCodec {
            admission: self.admission.clone(),
            peer: self.peer.or_else(|| self.admission.take_connecting()),
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    stranger: Option<&Arc<Admission>>,
) -> io::Result<Frame> {
    let mut first = [0u8; 1];
    io.read_exact(&mut first).await?;
    if first[0] >> 5 != MAJOR_BYTES {
        return Ok(Frame(NOT_A_FRAME.to_vec()));
    }
    let len = match first[0] & 0x1f {
        short @ 0..=23 => u64::from(short),
        24 => read_be::<T, 1>(io).await?,
        25 => read_be::<T, 2>(io).await?,
        26 => read_be::<T, 4>(io).await?,
        27 => read_be::<T, 8>(io).await?,
        // Indefinite lengths and reserved values: not what a phr node writes.
        _ => return Ok(Frame(NOT_A_FRAME.to_vec())),
    };
    if len > FRAME_BYTES_MAX {
        return Ok(Frame(OVERSIZED.to_vec()));
    }
    // Held until the frame is read and handed on.
    let _reserved: Option<Reserved> = match stranger {
        None => None,
        Some(_) if len > STRANGER_FRAME_BYTES_MAX => return Ok(Frame(UNTIL_ADMITTED.to_vec())),
        Some(admission) => match admission.reserve(len) {
            Some(reserved) => Some(reserved),
            None => return Ok(Frame(BUSY.to_vec())),
        },
    };
    // The buffer grows with the bytes that arrive: a header alone (9 bytes) must not make the
    // node allocate and zero a whole frame of FRAME_BYTES_MAX for each stream a peer opens.
    let mut bytes = Vec::new();
    io.take(len).read_to_end(&mut bytes).await?;
    if (bytes.len() as u64) < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Frame(bytes))
}

async fn read_be<T: AsyncRead + Unpin + Send, const N: usize>(io: &mut T) -> io::Result<u64> {
    let mut bytes = [0u8; N];
    io.read_exact(&mut bytes).await?;
    Ok(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: Frame) -> io::Result<()> {
    let len = frame.0.len() as u64;
    let major = MAJOR_BYTES << 5;
    let mut header = Vec::with_capacity(9);
    match len {
        0..=23 => header.push(major | len as u8),
        24..=0xff => header.extend([major | 24, len as u8]),
        0x100..=0xffff => {
            header.push(major | 25);
            header.extend((len as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            header.push(major | 26);
            header.extend((len as u32).to_be_bytes());
        }
        _ => {
            header.push(major | 27);
            header.extend(len.to_be_bytes());
        }
    }
    io.write_all(&header).await?;
    io.write_all(&frame.0).await?;
    io.close().await
}

/// Reads one frame from `wire` as [`FrameCodec`] reads it from a stream, and returns what it
/// hands the node. For the fuzz targets (`fuzz/`, docs/FUZZING.md), which have bytes, not a
/// stream; not part of the API.
#[doc(hidden)]
pub fn read_frame_from_bytes(wire: &[u8]) -> io::Result<Vec<u8>> {
    block_on(read_frame(&mut Cursor::new(wire), None)).map(|frame| frame.0)
}

/// Writes one frame as [`FrameCodec`] writes it to a stream. For the fuzz targets' round trip;
/// not part of the API.
#[doc(hidden)]
pub fn write_frame_to_bytes(frame: Vec<u8>) -> Vec<u8> {
    let mut wire = Cursor::new(Vec::new());
    block_on(write_frame(&mut wire, Frame(frame))).expect("writing to memory cannot fail");
    wire.into_inner()
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Frame;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.stranger()).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.stranger()).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::STRANGERS_READING_BYTES_MAX;

    fn round_trip(len: usize) {
        let frame = Frame(vec![7u8; len]);
        let mut wire = Cursor::new(Vec::new());
        block_on(write_frame(&mut wire, frame.clone())).unwrap();
        // The stock CBOR encoding of a byte string: what other CBOR readers expect.
        let mut expected = Vec::new();
        ciborium_like_header(len as u64, &mut expected);
        assert_eq!(&wire.get_ref()[..expected.len()], &expected[..]);
        let mut read = Cursor::new(wire.into_inner());
        assert_eq!(block_on(read_frame(&mut read, None)).unwrap(), frame);
    }

    /// RFC 8949 §3.1, written out independently of `write_frame`.
    fn ciborium_like_header(len: u64, out: &mut Vec<u8>) {
        if len < 24 {
            out.push(0x40 + len as u8);
        } else if len < 256 {
            out.extend([0x58, len as u8]);
        } else if len < 65_536 {
            out.push(0x59);
            out.extend((len as u16).to_be_bytes());
        } else {
            out.push(0x5a);
            out.extend((len as u32).to_be_bytes());
        }
    }

    #[test]
    fn frames_of_every_header_size_round_trip() {
        for len in [0, 1, 23, 24, 255, 256, 65_535, 65_536, 1_000_000] {
            round_trip(len);
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_read() {
        let mut wire = vec![0x5b];
        wire.extend((FRAME_BYTES_MAX + 1).to_be_bytes());
        // No body follows: reading it would fail, so a refusal proves it was not read.
        let frame = block_on(read_frame(&mut Cursor::new(wire), None)).unwrap();
        assert_eq!(frame.0, OVERSIZED);
    }

    /// A stream that records the largest buffer it was asked to fill.
    struct Recording {
        wire: Cursor<Vec<u8>>,
        largest_read: usize,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.largest_read = self.largest_read.max(buf.len());
            std::pin::Pin::new(&mut self.wire).poll_read(cx, buf)
        }
    }

    #[test]
    fn a_frame_header_alone_does_not_allocate_the_frame_it_claims() {
        let mut wire = vec![0x5a];
        wire.extend((FRAME_BYTES_MAX as u32).to_be_bytes());
        wire.extend([7u8; 1000]);
        let mut stream = Recording {
            wire: Cursor::new(wire),
            largest_read: 0,
        };
        let error = block_on(read_frame(&mut stream, None)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        // Before, the reader allocated (and zeroed) all FRAME_BYTES_MAX up front, then read.
        assert!(
            stream.largest_read <= 64 * 1024,
            "read into a buffer of {} bytes",
            stream.largest_read
        );
    }

    #[test]
    fn a_stream_that_is_not_a_byte_string_is_refused() {
        for first in [0x00u8, 0xa1, 0x5f, 0x7f] {
            let frame = block_on(read_frame(&mut Cursor::new(vec![first, 0, 0]), None)).unwrap();
            assert_eq!(frame.0, NOT_A_FRAME, "first byte {first:#x}");
        }
    }

    fn header(len: u64) -> Vec<u8> {
        let mut wire = vec![0x5b];
        wire.extend(len.to_be_bytes());
        wire
    }

    #[test]
    fn a_stranger_gets_small_frames_and_a_share_of_one_budget_and_an_admitted_peer_large_ones() {
        let admission = Arc::new(Admission::default());
        let peer = libp2p::PeerId::random();
        admission.connecting(peer);
        let root = FrameCodec::new(admission.clone());
        let codec = root.clone();
        assert_eq!(codec.peer, Some(peer));
        assert_eq!(
            codec.clone().peer,
            Some(peer),
            "a stream's copy keeps its peer"
        );
        assert_eq!(root.clone().peer, None, "the note is taken once");

        // A stranger's frame over the small limit: refused unread (no body follows).
        let big = header(STRANGER_FRAME_BYTES_MAX + 1);
        let frame = block_on(read_frame(&mut Cursor::new(big.clone()), codec.stranger()));
        assert_eq!(frame.unwrap().0, UNTIL_ADMITTED);

        // While other strangers' frames hold the budget, even a small one waits.
        let held = admission.reserve(STRANGERS_READING_BYTES_MAX - 10).unwrap();
        let mut small = header(11);
        small.extend([1u8; 11]);
        let frame = block_on(read_frame(
            &mut Cursor::new(small.clone()),
            codec.stranger(),
        ));
        assert_eq!(frame.unwrap().0, BUSY);
        drop(held);
        let frame = block_on(read_frame(&mut Cursor::new(small), codec.stranger()));
        assert_eq!(frame.unwrap().0, vec![1u8; 11]);
        assert_eq!(admission.strangers_reading(), 0, "given back once read");

        // Admitted later, on the same connection: the large frame is read.
        admission.set([peer].into());
        assert!(codec.stranger().is_none());
        let error = block_on(read_frame(&mut Cursor::new(big), codec.stranger())).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "it was read");
    }
}
