//! DRP bodies: any body is refused or parses to a message the builders write back byte for byte.
#![no_main]

use control::NodeAddr;
use control::wire::drp::{self, DrpMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(message) = DrpMessage::parse(body) else {
        return;
    };
    let rebuilt = match message {
        DrpMessage::Hello => Some(drp::hello()),
        DrpMessage::Terminate => Some(drp::terminate()),
        DrpMessage::Lsp(lsp) => {
            let neighbours: Option<Vec<NodeAddr>> = lsp.neighbours().map(NodeAddr::new).collect();
            match (NodeAddr::new(lsp.originator), neighbours) {
                (Some(originator), Some(neighbours)) => Some(
                    drp::lsp(originator, lsp.sequence, &neighbours).expect("a parsed LSP rebuilds"),
                ),
                // The parser leaves address checks to DRP; the builder takes checked ones.
                _ => None,
            }
        }
        DrpMessage::LspAck {
            originator,
            sequence,
        } => NodeAddr::new(originator).map(|o| drp::lsp_ack(o, sequence)),
    };
    if let Some(rebuilt) = rebuilt {
        assert_eq!(rebuilt, body);
    }
});
