//! A small protobuf writer: what the Perfetto trace needs (varints,
//! 64-bit doubles, length-delimited strings and nested messages). Messages
//! are built bottom-up: a nested message is a finished [`Msg`] embedded
//! with its length.

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// Appends `v` as a base-128 varint (1 to 10 bytes).
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // The low 7 bits with the continuation bit (truncation intended).
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// One message being written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// An empty message.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An unsigned integer field (uint32, uint64, enum).
    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, VARINT);
        put_varint(&mut self.buf, v);
        self
    }

    /// A signed integer field (int32, int64: two's complement, so a
    /// negative value takes 10 bytes).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        // The two's-complement bits, as protobuf encodes int64.
        self.uint(field, v as u64)
    }

    /// A bool field.
    pub fn bool(&mut self, field: u32, v: bool) -> &mut Self {
        self.uint(field, u64::from(v))
    }

    /// A double field.
    pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A bytes field.
    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, LEN);
        put_varint(&mut self.buf, b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    /// A string field.
    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    #[test]
    fn varint_edges() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(16_383), [0xff, 0x7f]);
        assert_eq!(varint(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(varint(u64::from(u32::MAX)), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            varint(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(varint(1 << 63).len(), 10);
    }

    #[test]
    fn keys_and_scalars() {
        let mut m = Msg::new();
        m.uint(1, 150);
        assert_eq!(m.as_bytes(), [0x08, 0x96, 0x01]);
        // Field 16 needs a two-byte key; wire type 0.
        let mut m = Msg::new();
        m.uint(16, 1);
        assert_eq!(m.as_bytes(), [0x80, 0x01, 0x01]);
        // Field 58 (TracePacket.timestamp_clock_id): (58 << 3) = 464.
        let mut m = Msg::new();
        m.uint(58, 6);
        assert_eq!(m.as_bytes(), [0xd0, 0x03, 0x06]);
        let mut m = Msg::new();
        m.int(30, -1);
        assert_eq!(m.as_bytes().len(), 2 + 10);
        assert_eq!(&m.as_bytes()[..2], [0xf0, 0x01]);
        let mut m = Msg::new();
        m.bool(3, true).bool(4, false);
        assert_eq!(m.as_bytes(), [0x18, 0x01, 0x20, 0x00]);
        let mut m = Msg::new();
        m.double(44, 1.5);
        let mut want = vec![0xe1, 0x02];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(m.as_bytes(), want);
    }

    #[test]
    fn strings_and_nested_lengths() {
        let mut m = Msg::new();
        m.string(2, "testing");
        assert_eq!(m.as_bytes(), b"\x12\x07testing");
        let mut m = Msg::new();
        m.string(2, "");
        assert_eq!(m.as_bytes(), [0x12, 0x00]);
        // A 200-byte string: a two-byte length.
        let long = "x".repeat(200);
        let mut m = Msg::new();
        m.string(1, &long);
        assert_eq!(&m.as_bytes()[..3], [0x0a, 0xc8, 0x01]);
        assert_eq!(m.as_bytes().len(), 3 + 200);
        // Nested twice: each level prefixes its own length.
        let mut inner = Msg::new();
        inner.uint(1, 150);
        let mut mid = Msg::new();
        mid.message(3, &inner);
        assert_eq!(mid.as_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        let mut outer = Msg::new();
        outer.message(1, &mid).uint(2, 1);
        assert_eq!(
            outer.as_bytes(),
            [0x0a, 0x05, 0x1a, 0x03, 0x08, 0x96, 0x01, 0x10, 0x01]
        );
        // An empty nested message is a key and a zero length.
        let mut m = Msg::new();
        m.message(5, &Msg::new());
        assert_eq!(m.as_bytes(), [0x2a, 0x00]);
        // A nested message of 128 bytes or more: a two-byte length.
        let mut big = Msg::new();
        big.string(1, &"y".repeat(130));
        assert_eq!(big.as_bytes().len(), 133);
        let mut m = Msg::new();
        m.message(1, &big);
        assert_eq!(&m.as_bytes()[..3], [0x0a, 0x85, 0x01]);
        assert!(!m.is_empty());
        assert!(Msg::new().is_empty());
    }
}
