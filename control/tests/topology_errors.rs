//! Every kind of topology file error: the exact line it is reported on and what it says.

use control::topology::{ConfigError, Topology};
use std::path::Path;
use std::time::Duration;

/// Three nodes on lines 1–9; text appended to it starts on line 10.
const NODES: &str = "\
[[node]]
addr = 1
socket = \"127.0.0.1:7001\"
[[node]]
addr = 2
socket = \"127.0.0.1:7002\"
[[node]]
addr = 3
socket = \"127.0.0.1:7003\"
";

/// NODES plus a link 1-2 on lines 10–11; text appended starts on line 12.
fn with_link(rest: &str) -> String {
    format!("{NODES}[[link]]\nnodes = [1, 2]\n{rest}")
}

fn error_of(text: &str) -> ConfigError {
    match Topology::from_toml_str(text, "net.toml") {
        Ok(t) => panic!("accepted a bad file:\n{text}\nas {t:?}"),
        Err(e) => e,
    }
}

/// Asserts the error's line and a fragment of its message, and shows the whole error.
fn expect(text: &str, line: usize, fragment: &str) -> ConfigError {
    let e = error_of(text);
    println!("{e}");
    assert_eq!(e.line(), Some(line), "wrong line for: {e}");
    assert!(e.message.contains(fragment), "'{e}' lacks '{fragment}'");
    assert!(
        e.to_string().starts_with(&format!("net.toml:{line}:")),
        "{e}"
    );
    e
}

#[test]
fn the_base_files_are_valid() {
    let t = Topology::from_toml_str(&with_link(""), "net.toml").unwrap();
    assert_eq!(t.nodes.len(), 3);
    assert_eq!(t.links.len(), 1);
}

#[test]
fn toml_syntax_error() {
    let e = expect(
        &format!("{NODES}[[link]]\nnodes = [1, 2\n"),
        11,
        "unclosed array",
    );
    assert!(!e.message.is_empty());
    expect("[[node]\naddr = 1\n", 1, "unclosed array table");
}

/// Found by the `topology` fuzz target: a multi-byte character right before `=` in a broken
/// line made the error message cut a string inside that character (a panic).
#[test]
fn a_multibyte_character_before_a_bad_value_is_an_error_not_a_panic() {
    let e = error_of("b=\"\u{68c}=");
    assert_eq!(e.line(), Some(1), "{e}");
}

#[test]
fn display_has_file_line_and_column() {
    let e = error_of(&with_link("loss = 2.5\n"));
    assert_eq!(
        e.to_string(),
        "net.toml:12:8: loss 2.5 is not a probability in 0..=1"
    );
}

#[test]
fn unknown_key() {
    expect(&with_link("lossy = 0.1\n"), 12, "unknown key `lossy`");
    expect(
        "[network]\nmtu = 1024\nhello_ms = 5\n",
        3,
        "unknown key `hello_ms`",
    );
    expect(
        &format!("{NODES}[[links]]\nnodes = [1, 2]\n"),
        10,
        "unknown key `links`",
    );
}

#[test]
fn missing_key() {
    expect(
        &format!("{NODES}[[node]]\naddr = 4\n"),
        10,
        "missing key `socket`",
    );
    expect(
        &format!("{NODES}\n[[link]]\nloss = 0.1\n"),
        11,
        "missing key `nodes`",
    );
    expect(
        &with_link("[[event]]\nlink_down = [1, 2]\n"),
        12,
        "missing key `at_ms`",
    );
}

#[test]
fn wrong_value_type() {
    expect("[network]\nmtu = \"big\"\n", 2, "mtu: invalid type");
    expect(
        "[[node]]\naddr = 1\nsocket = 7001\n",
        3,
        "expected a string",
    );
}

#[test]
fn no_nodes() {
    expect("[network]\nmtu = 1024\n", 1, "defines no nodes");
}

#[test]
fn node_address_zero() {
    expect(
        &format!("{NODES}[[node]]\naddr = 0\nsocket = \"127.0.0.1:7009\"\n"),
        11,
        "address 0 is reserved",
    );
}

#[test]
fn node_address_in_group_range() {
    expect(
        &format!("{NODES}[[node]]\naddr = 61440\nsocket = \"127.0.0.1:7009\"\n"),
        11,
        "multicast group range",
    );
    expect(
        &format!("{NODES}[[node]]\naddr = 70000\nsocket = \"127.0.0.1:7009\"\n"),
        11,
        "does not fit in 16 bits",
    );
}

#[test]
fn duplicate_node_address() {
    expect(
        &format!("{NODES}[[node]]\naddr = 2\nsocket = \"127.0.0.1:7009\"\n"),
        11,
        "duplicate node address 2 (first defined on line 5)",
    );
}

#[test]
fn duplicate_socket_address() {
    expect(
        &format!("{NODES}[[node]]\naddr = 4\nsocket = \"127.0.0.1:7002\"\n"),
        12,
        "duplicate socket address 127.0.0.1:7002 (first used on line 5)",
    );
}

#[test]
fn malformed_socket_address() {
    expect(
        &format!("{NODES}[[node]]\naddr = 4\nsocket = \"127.0.0.1\"\n"),
        12,
        "malformed socket address \"127.0.0.1\"",
    );
    expect(
        &format!("{NODES}[[node]]\naddr = 4\nsocket = \"localhost:7004\"\n"),
        12,
        "malformed socket address",
    );
    expect(
        &format!("{NODES}[[node]]\naddr = 4\nsocket = \"127.0.0.1:0\"\n"),
        12,
        "port 0",
    );
}

#[test]
fn link_to_unknown_node() {
    let e = expect(
        &format!("{NODES}[[link]]\nnodes = [1, 9]\n"),
        11,
        "names node 9, which no [[node]] defines",
    );
    // The column points at the 9, not at the array.
    assert_eq!(e.position.unwrap().col, 13);
}

#[test]
fn link_to_itself() {
    expect(
        &format!("{NODES}[[link]]\nnodes = [2, 2]\n"),
        11,
        "joins node 2 to itself",
    );
}

#[test]
fn link_with_wrong_number_of_ends() {
    expect(
        &format!("{NODES}[[link]]\nnodes = [1, 2, 3]\n"),
        11,
        "exactly 2 nodes",
    );
    expect(&format!("{NODES}[[link]]\nnodes = [1]\n"), 11, "found 1");
}

#[test]
fn duplicate_link_in_either_order() {
    expect(
        &with_link("[[link]]\nnodes = [2, 1]\n"),
        13,
        "duplicate link 1-2 (first defined on line 11)",
    );
    expect(
        &with_link("[[link]]\nnodes = [1, 2]\n"),
        13,
        "duplicate link 1-2",
    );
}

#[test]
fn probability_out_of_range() {
    expect(
        &with_link("loss = 1.5\n"),
        12,
        "loss 1.5 is not a probability",
    );
    expect(
        &with_link("corrupt = -0.1\n"),
        12,
        "corrupt -0.1 is not a probability",
    );
    expect(
        &with_link("duplicate = nan\n"),
        12,
        "duplicate NaN is not a probability",
    );
    expect(
        &with_link("reorder = inf\n"),
        12,
        "reorder inf is not a probability",
    );
    // The bounds themselves are fine, and integers count as numbers.
    let t = Topology::from_toml_str(&with_link("loss = 1\nreorder = 0\n"), "net.toml").unwrap();
    assert_eq!(t.links[0].faults.loss, 1.0);
}

#[test]
fn bad_delays() {
    expect(
        &with_link("delay_ms = -5\n"),
        12,
        "delay_ms -5 is not a duration",
    );
    expect(
        &with_link("jitter_ms = nan\n"),
        12,
        "jitter_ms NaN is not a duration",
    );
    expect(&with_link("down = 1\n"), 12, "down: invalid type");
}

#[test]
fn bad_mtu() {
    expect(
        &format!("[network]\nmtu = 63\n{NODES}"),
        2,
        "mtu 63 is outside 81..=65535",
    );
    expect(
        &format!("[network]\nmtu = 65536\n{NODES}"),
        2,
        "mtu 65536 is outside",
    );
    expect(
        &format!("[network]\nmtu = -1\n{NODES}"),
        2,
        "mtu -1 is outside",
    );
}

#[test]
fn an_mtu_below_the_largest_fixed_packet_is_refused() {
    // An SPM is 81 bytes (10 DNP + 67 fields + 4 trailer), the largest packet of fixed size:
    // with mtu 80 the sender's SPM could not be built, so the file is refused where it says 80.
    let e = expect(
        &format!("[network]\nmtu = 80\n{NODES}"),
        2,
        "mtu 80 is outside 81..=65535",
    );
    assert!(e.to_string().starts_with("net.toml:2:7: "), "{e}");
    assert!(Topology::from_toml_str(&format!("[network]\nmtu = 81\n{NODES}"), "net.toml").is_ok());
}

#[test]
fn too_many_links_for_one_lsp() {
    // Under mtu 84 an LSP lists (84 - 10 - 10 - 4) / 2 = 30 neighbours (the 4 is the trailer).
    let mut text = String::from("[network]\nmtu = 84\n");
    for k in 1..=34 {
        text += &format!(
            "[[node]]\naddr = {k}\nsocket = \"127.0.0.1:{}\"\n",
            7000 + k
        );
    }
    let first_link_line = text.lines().count() + 1;
    for k in 2..=34 {
        text += &format!("[[link]]\nnodes = [1, {k}]\n");
    }
    // The 31st link of node 1 is the one too many.
    expect(
        &text,
        first_link_line + 30 * 2 + 1,
        "node 1 has more than 30 links",
    );
}

#[test]
fn zero_timers() {
    for key in [
        "hello_interval_ms",
        "lsp_retransmit_ms",
        "former_probe_ms",
        "gmp_refresh_ms",
        "gmp_expire_ms",
        "rap_retry_ms",
    ] {
        expect(
            &format!("[network]\nmtu = 1024\n{key} = 0\n{NODES}"),
            3,
            &format!("{key} must be greater than 0"),
        );
    }
    expect(
        &format!("[network]\n\ndead_hellos = 0\n{NODES}"),
        3,
        "dead_hellos 0 must be 1 or more",
    );
    expect(
        &format!("[network]\nhello_interval_ms = -1\n{NODES}"),
        2,
        "hello_interval_ms -1 is not a duration",
    );
}

#[test]
fn inconsistent_timers() {
    expect(
        &format!("[network]\ngmp_refresh_ms = 2000\ngmp_expire_ms = 1500\n{NODES}"),
        3,
        "gmp_expire_ms (1500 ms) must be greater than gmp_refresh_ms (2000 ms)",
    );
    expect(
        &format!("[network]\nhello_interval_ms = 1e12\ndead_hellos = 2\n{NODES}"),
        3,
        "hello_interval_ms × dead_hellos",
    );
}

#[test]
fn event_naming_unknown_node() {
    expect(
        &with_link("[[event]]\nat_ms = 10\nnode_down = 7\n"),
        14,
        "node_down names node 7, which no [[node]] defines",
    );
    expect(
        &with_link("[[event]]\nat_ms = 10\nlink_up = [1, 8]\n"),
        14,
        "link_up names node 8",
    );
}

#[test]
fn event_naming_unknown_link() {
    expect(
        &with_link("[[event]]\nat_ms = 10\nlink_down = [3, 1]\n"),
        14,
        "link_down names link 1-3, which no [[link]] defines",
    );
}

#[test]
fn event_with_no_or_two_actions() {
    expect(
        &with_link("[[event]]\nat_ms = 10\n"),
        12,
        "needs one of link_down, link_up, node_down, node_up",
    );
    expect(
        &with_link("[[event]]\nat_ms = 10\nlink_down = [1, 2]\nnode_down = 3\n"),
        15,
        "both link_down and node_down",
    );
    expect(
        &with_link("[[event]]\nat_ms = -3\nnode_up = 1\n"),
        13,
        "at_ms -3 is not a duration",
    );
}

#[test]
fn errors_count_lines_after_comments_and_unicode() {
    let text =
        "# Überschrift — ein Kommentar\n\n[[node]]\naddr = 0 # null\nsocket = \"127.0.0.1:7001\"\n";
    let e = expect(text, 4, "address 0 is reserved");
    assert_eq!(e.position.unwrap().col, 8);
}

#[test]
fn unreadable_file_names_the_file() {
    let path = Path::new("no/such/dir/missing.toml");
    let e = Topology::load(path).unwrap_err();
    assert_eq!(e.position, None);
    assert!(
        e.to_string()
            .starts_with("no/such/dir/missing.toml: cannot read"),
        "{e}"
    );
    let as_error: &dyn std::error::Error = &e;
    assert!(as_error.to_string().contains("missing.toml"));
}

#[test]
fn type_errors_name_the_key_in_toml_terms() {
    expect(
        "node = 5\n",
        1,
        "node: invalid type: integer `5`, expected an array",
    );
    expect("node = [5]\n", 1, "expected a [[node]] table");
    expect(
        "node = [{addr = \"x\", socket = \"127.0.0.1:7001\"}]\n",
        1,
        "addr: invalid type: string \"x\", expected an integer",
    );
    expect(
        &format!("{NODES}[[link]]\nnodes = [1, \"2\"]\n"),
        11,
        "invalid type: string \"2\", expected an integer",
    );
}

#[test]
fn bad_rates_and_queues() {
    expect(
        &with_link("rate_mbit = 0\n"),
        12,
        "rate_mbit 0 is not a link rate",
    );
    expect(
        &with_link("rate_mbit = nan\n"),
        12,
        "rate_mbit NaN is not a link rate",
    );
    expect(
        &with_link("rate_mbit = 100\nqueue_bytes = 0\n"),
        13,
        "queue_bytes 0 is not a queue size",
    );
    expect(
        &with_link("queue_bytes = 65536\n"),
        12,
        "queue_bytes needs rate_mbit",
    );
    // 10 Gbit/s with a 1 MiB queue: bytes per second and bytes.
    let t = Topology::from_toml_str(
        &with_link("rate_mbit = 10000\nqueue_bytes = 1048576\n"),
        "net.toml",
    )
    .unwrap();
    assert_eq!(t.links[0].faults.rate, Some(1_250_000_000));
    assert_eq!(t.links[0].faults.queue_bytes, Some(1 << 20));
}

#[test]
fn coalescing_is_a_duration() {
    expect(
        &with_link(
            "coalesce_ms = -0.5
",
        ),
        12,
        "coalesce_ms -0.5 is not a duration",
    );
    let t = Topology::from_toml_str(
        &with_link(
            "coalesce_ms = 0.02
",
        ),
        "net.toml",
    )
    .unwrap();
    assert_eq!(t.links[0].faults.coalesce, Duration::from_micros(20));
    // Written back as read.
    let again = Topology::from_toml_str(&t.to_toml(), "again.toml").unwrap();
    assert_eq!(again.links[0].faults.coalesce, Duration::from_micros(20));
}
