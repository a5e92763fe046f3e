//! The topology file: any text is refused with an error or read to a model that writes back as
//! TOML that reads to the same model.
#![no_main]

use control::topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(topology) = Topology::from_toml_str(text, "fuzz.toml") else {
        return;
    };
    let written = topology.to_toml();
    let again = Topology::from_toml_str(&written, "written.toml")
        .unwrap_or_else(|e| panic!("written topology does not read back: {e}\n{written}"));
    assert_eq!(again, topology, "written as:\n{written}");
});
