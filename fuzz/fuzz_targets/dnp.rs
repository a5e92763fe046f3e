//! The DNP header: any datagram is refused with a reason or accepted with a consistent view.
#![no_main]

use control::wire::dnp::{DNP_HEADER_LEN, Flag, Packet};
use control::wire::{DEFAULT_MTU, checksum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data, DEFAULT_MTU) {
        assert_eq!(packet.bytes(), data);
        assert_eq!(packet.body().len(), data.len() - DNP_HEADER_LEN);
        assert_eq!(Flag::from_raw(packet.flag() as u16), Some(packet.flag()));
        assert_eq!(packet.dst().raw(), u16::from_be_bytes([data[2], data[3]]));
        assert_eq!(packet.src_raw(), u16::from_be_bytes([data[4], data[5]]));
        assert!(checksum::verify(data));
    }
});
