//! Connect streaming envelopes: 1 flag byte, 4-byte big-endian length, then the message.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::EnvdError;

/// Flag bit: the message is compressed (envd never negotiates compression).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit: this is the end-of-stream message (JSON, carries an error or trailers).
pub const FLAG_END_STREAM: u8 = 0x02;

const HEADER_LEN: usize = 5;

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

impl Frame {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

/// Frames one message.
pub fn encode(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_u8(flags);
    // Messages are bounded far below 4 GiB by the encoder's callers.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// Incremental decoder: feed it body chunks as they arrive, take out whole frames.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_message,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, EnvdError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flags & !(FLAG_COMPRESSED | FLAG_END_STREAM) != 0 {
            return Err(EnvdError::InvalidArgument(format!(
                "invalid envelope flags 0x{flags:02x}"
            )));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(EnvdError::Unimplemented(
                "compressed messages are not supported (no compression was negotiated)".into(),
            ));
        }
        if len > self.max_message {
            return Err(EnvdError::ResourceExhausted(format!(
                "message of {len} bytes exceeds the limit of {} bytes",
                self.max_message
            )));
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Bytes received that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_split_anywhere() {
        let a = encode(0, b"{\"a\":1}");
        let b = encode(FLAG_END_STREAM, b"{}");
        let all = [a.as_ref(), b.as_ref()].concat();
        for split in 0..all.len() {
            let mut d = Decoder::new(1024);
            d.push(&all[..split]);
            let mut frames = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            d.push(&all[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 2);
            assert_eq!(&frames[0].payload[..], b"{\"a\":1}");
            assert!(frames[1].is_end_stream());
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn oversize_and_compressed_are_rejected() {
        let mut d = Decoder::new(4);
        d.push(&encode(0, b"12345"));
        assert!(matches!(
            d.next_frame(),
            Err(EnvdError::ResourceExhausted(_))
        ));
        let mut d = Decoder::new(64);
        d.push(&encode(FLAG_COMPRESSED, b"x"));
        assert!(matches!(d.next_frame(), Err(EnvdError::Unimplemented(_))));
        let mut d = Decoder::new(64);
        d.push(&encode(0x80, b"x"));
        assert!(matches!(d.next_frame(), Err(EnvdError::InvalidArgument(_))));
    }

    /// A stream of frames: data messages, maybe an end-of-stream last.
    fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_map(|(data, end)| {
                let mut v: Vec<(u8, Vec<u8>)> = data.into_iter().map(|p| (0, p)).collect();
                v.extend(end.map(|p| (FLAG_END_STREAM, p)));
                v
            })
    }

    proptest! {
        /// Encoded frames, delivered in any chunks, decode to exactly themselves.
        #[test]
        fn frames_round_trip_in_any_chunks(frames in frames(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let wire: Vec<u8> = frames.iter().flat_map(|(f, p)| encode(*f, p).to_vec()).collect();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut d = Decoder::new(300);
            let mut got = Vec::new();
            for w in points.windows(2) {
                d.push(&wire[w[0]..w[1]]);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push((f.flags, f.payload.to_vec()));
                }
            }
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(got, frames);
        }

        /// A stream cut short yields the whole frames before the cut, then waits for more.
        #[test]
        fn truncated_streams_wait(frames in frames(), cut in any::<prop::sample::Index>()) {
            let wire: Vec<u8> = frames.iter().flat_map(|(f, p)| encode(*f, p).to_vec()).collect();
            let cut = cut.index(wire.len() + 1);
            let mut d = Decoder::new(300);
            d.push(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push((f.flags, f.payload.to_vec()));
            }
            // Exactly the frames that end at or before the cut.
            let mut end = 0;
            let whole: Vec<_> = frames
                .iter()
                .take_while(|(_, p)| {
                    end += HEADER_LEN + p.len();
                    end <= cut
                })
                .cloned()
                .collect();
            let used: usize = whole.iter().map(|(_, p)| HEADER_LEN + p.len()).sum();
            prop_assert_eq!(d.pending(), cut - used);
            prop_assert_eq!(got, whole);
        }

        /// A header that claims more than the limit is refused before its bytes arrive.
        #[test]
        fn oversize_is_refused_from_the_header(len in 65u32.., flags in prop_oneof![Just(0u8), Just(FLAG_END_STREAM)]) {
            let mut d = Decoder::new(64);
            let mut head = vec![flags];
            head.extend_from_slice(&len.to_be_bytes());
            d.push(&head);
            prop_assert!(matches!(d.next_frame(), Err(EnvdError::ResourceExhausted(_))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
            let mut d = Decoder::new(max);
            d.push(&data);
            for _ in 0..600 {
                match d.next_frame() {
                    Ok(Some(f)) => prop_assert!(f.payload.len() <= max),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
