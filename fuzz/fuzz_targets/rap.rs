//! RAP bodies: any body is refused or parses to a message the builders write back byte for
//! byte (a provide's every entry read on the way).
#![no_main]

use control::wire::rap::{self, RapBody, RapMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(m) = RapMessage::parse(body) else {
        return;
    };
    let rebuilt = match m.body {
        RapBody::Request { padding } if m.rap_id == 0 => {
            rap::padded_request(m.dst_sid, m.src_sid, rap::request_packet_len(padding))
        }
        // A request with a non-zero id parses (the server ignores the id); no builder makes one.
        RapBody::Request { .. } => return,
        RapBody::Ack => rap::ack(m.dst_sid, m.src_sid, m.rap_id),
        RapBody::Provide(list) => {
            let entries = list.to_entries();
            assert_eq!(entries.len(), list.len());
            rap::provide(
                m.dst_sid,
                m.src_sid,
                m.rap_id,
                &entries,
                usize::from(u16::MAX),
            )
            .expect("a list that arrived in one packet fits one")
        }
    };
    assert_eq!(rebuilt, body);
});
