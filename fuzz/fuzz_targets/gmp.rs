//! GMP bodies: any body is refused or parses to a message that encodes back byte for byte.
#![no_main]

use control::wire::gmp::GmpMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(message) = GmpMessage::parse(body) {
        assert_eq!(message.encode(), body);
    }
});
