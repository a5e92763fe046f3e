//! RMTP bodies, the flag chosen by the first byte: any body is refused or parses to fields
//! that are in range and that the builders write back byte for byte.
#![no_main]

use control::GroupAddr;
use control::wire::dnp::Flag;
use control::wire::rmtp::{self, RmtpMessage};
use libfuzzer_sys::fuzz_target;

const FLAGS: [Flag; 6] = [
    Flag::RmtpData,
    Flag::RmtpRetransmit,
    Flag::RmtpNack,
    Flag::RmtpMab,
    Flag::RmtpNcf,
    Flag::RmtpSpm,
];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let flag = FLAGS[usize::from(choice) % FLAGS.len()];
    let Ok(message) = RmtpMessage::parse(flag, body) else {
        return;
    };
    let mut rebuilt = vec![0u8; body.len()];
    let built = match message {
        RmtpMessage::Data(d) | RmtpMessage::Retransmit(d) => {
            let _ = d.crc_ok();
            assert_eq!(rmtp::DATA_HEADER_LEN + d.payload().len(), body.len());
            return;
        }
        RmtpMessage::Nack(nack) => {
            let ranges: Vec<_> = nack.ranges.iter().collect();
            assert!(
                ranges
                    .iter()
                    .all(|r| r.len >= 1 && r.first.checked_add(r.len.into()).is_some())
            );
            let Some(group) = GroupAddr::new(nack.group) else {
                return;
            };
            rmtp::write_nack(&mut rebuilt, group, &ranges)
        }
        RmtpMessage::Ncf(ncf) => {
            let ranges: Vec<_> = ncf.ranges.iter().collect();
            assert!(!ranges.is_empty());
            let (Some(group), Some(sender)) = (
                GroupAddr::new(ncf.group),
                control::NodeAddr::new(ncf.sender),
            ) else {
                return;
            };
            rmtp::write_ncf(&mut rebuilt, group, sender, &ranges)
        }
        RmtpMessage::Mab(mab) => mab.write(&mut rebuilt),
        RmtpMessage::Spm(spm) => spm.write(&mut rebuilt),
    };
    let len = built.expect("a parsed body rebuilds into a buffer of its own size");
    assert_eq!(&rebuilt[..len], body);
});
