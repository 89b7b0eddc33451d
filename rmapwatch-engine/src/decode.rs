//! Ring-buffer records to [`Event`]s.
use rmapwatch_common::{COMM_LEN, Event, kind, object, site};

/// A record that is not an [`Event`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Wrong length: the object and the daemon disagree on the ABI.
    #[error("ring buffer record of {0} bytes, expected {size}", size = size_of::<Event>())]
    Length(usize),
    /// Unknown kind, object or site.
    #[error("ring buffer record with invalid fields (kind {0}, object {1}, site {2})")]
    Invalid(u32, u32, u32),
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// [`DecodeError`] when the record is not a valid event.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() != size_of::<Event>() {
        return Err(DecodeError::Length(bytes.len()));
    }
    // SAFETY: length checked; Event is plain integers, any bit pattern is
    // valid; read_unaligned copes with the ring buffer's 8-byte alignment.
    let e: Event = unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() };
    let slab = matches!(e.kind, kind::ALLOC | kind::FREE);
    let valid = (kind::ALLOC..=kind::EXIT).contains(&e.kind)
        && (!slab || ((e.object as usize) < object::COUNT && (e.site as usize) < site::COUNT));
    if valid {
        Ok(e)
    } else {
        Err(DecodeError::Invalid(e.kind, e.object, e.site))
    }
}

/// A kernel `comm` as text.
#[must_use]
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Encodes an event as the kernel would (tests and benchmarks).
#[must_use]
pub fn encode(e: &Event) -> Vec<u8> {
    // SAFETY: Event is repr(C) plain integers with no padding.
    unsafe { std::slice::from_raw_parts((&raw const *e).cast::<u8>(), size_of::<Event>()) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_records() {
        let e = Event {
            kind: kind::ALLOC,
            object: object::AVC,
            site: site::FORK,
            tid: 7,
            tgid: 7,
            ptr: 0xff11_0000_1234_5678,
            ..Event::default()
        };
        let bytes = encode(&e);
        assert_eq!(decode(&bytes), Ok(e));
        assert_eq!(
            decode(&bytes[1..]),
            Err(DecodeError::Length(bytes.len() - 1))
        );
        let bad = Event { site: 99, ..e };
        assert!(matches!(
            decode(&encode(&bad)),
            Err(DecodeError::Invalid(..))
        ));
        let fork = Event {
            kind: kind::FORK,
            site: 99,
            ..e
        };
        assert!(
            decode(&encode(&fork)).is_ok(),
            "site is ignored outside slab events"
        );
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut c = [0u8; COMM_LEN];
        c[..4].copy_from_slice(b"bash");
        assert_eq!(comm_str(&c), "bash");
        assert_eq!(comm_str(&[b'x'; COMM_LEN]), "x".repeat(COMM_LEN));
    }
}
