//! The SCTP summary reads a leading INIT's initiate tag only from within the chunk's own length
//! (RFC 9260 §3.2), never from its padding or the next chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synergy_wire::sctp::SctpRepr;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = SctpRepr::parse_summary(data) else { return };
    if let Some(tag) = s.initiate_tag {
        let chunk_len = data
            .get(14..16)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        assert!(chunk_len >= 8, "tag read from a chunk of {chunk_len} bytes");
        assert_eq!(data.get(16..20), Some(&tag.to_be_bytes()[..]));
    }
});
