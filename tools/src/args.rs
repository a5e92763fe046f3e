//! Parsers for command-line values shared by several subcommands: sizes, probabilities, node
//! and group addresses. Each returns a one-line message clap shows after "invalid value".

use control::topology::Topology;
use control::{GroupAddr, NodeAddr};

pub use burghers_lab::units::{parse_probability, parse_size, parse_size_or_zero};

/// A link rate in megabits per second, as bytes per second.
pub fn parse_rate_mbit(text: &str) -> Result<u64, String> {
    match text.trim().parse::<f64>() {
        Ok(mbit) if mbit > 0.0 && mbit <= control::topology::parse::MAX_RATE_MBIT => {
            Ok(((mbit * 1e6 / 8.0).round() as u64).max(1))
        }
        _ => Err(format!(
            "expected a rate in megabits per second (more than 0, at most {:e}), got {text:?}",
            control::topology::parse::MAX_RATE_MBIT
        )),
    }
}

/// Dataplane workers of a node: `1` to [`dataplane::uring::MAX_WORKERS`].
pub fn parse_cores(text: &str) -> Result<usize, String> {
    let max = usize::from(dataplane::uring::MAX_WORKERS);
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of cores from 1 to {max}, got {text:?}"
        )),
    }
}

/// A core of this machine to pin to: `0` to one less than the cores it has.
pub fn parse_core(text: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match text.trim().parse::<usize>() {
        Ok(c) if c < cores => Ok(c),
        _ => Err(format!(
            "expected a core from 0 to {} (this machine has {cores}), got {text:?}",
            cores - 1
        )),
    }
}

/// A node address: `1` to `61439`.
pub fn parse_node(text: &str) -> Result<NodeAddr, String> {
    let raw: u16 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a node address (1..61439), got {text:?}"))?;
    NodeAddr::try_new(raw).map_err(|e| format!("{text:?} is no node address: {e}"))
}

/// A multicast group: its index (`1` is group 0xF001), the same with a `g` (`g1`, how groups
/// are printed), or the raw address in hex (`0xF001`).
pub fn parse_group(text: &str) -> Result<GroupAddr, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "expected a group like 1, g1 or 0xF001 (index 0..4095 or address 0xF000..0xFFFF), got {text:?}"
        )
    };
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        let raw = u16::from_str_radix(hex, 16).map_err(|_| bad())?;
        return GroupAddr::new(raw).ok_or_else(bad);
    }
    let index = t.strip_prefix(['g', 'G']).unwrap_or(t);
    let index: u16 = index.parse().map_err(|_| bad())?;
    GroupAddr::from_index(index).ok_or_else(bad)
}

/// A duration a flag takes in milliseconds: a flag's default comes from `control::settings`
/// and `--help` prints it in the flag's unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Millis(pub std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64() * 1000.0)
    }
}

/// [`parse_millis`] for a [`Millis`] flag.
pub fn parse_millis_flag(text: &str) -> Result<Millis, String> {
    parse_millis(text).map(Millis)
}

/// A non-negative number of milliseconds (fractions allowed).
pub fn parse_millis(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=1e12).contains(&ms) => {
            Ok(std::time::Duration::from_secs_f64(ms / 1000.0))
        }
        _ => Err(format!(
            "expected a number of milliseconds (0 or more), got {text:?}"
        )),
    }
}

/// Loads a topology file; the error names the file and the line.
pub fn load_topology(path: &std::path::Path) -> Result<Topology, String> {
    Topology::load(path).map_err(|e| e.to_string())
}

/// `addr` if the topology has such a node.
pub fn node_in(topology: &Topology, addr: NodeAddr) -> Result<NodeAddr, String> {
    topology
        .node(addr)
        .map(|n| n.addr)
        .ok_or_else(|| format!("node {addr} is not in the topology"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_index_name_or_address() {
        let g1 = GroupAddr::new(0xF001).unwrap();
        assert_eq!(parse_group("1"), Ok(g1));
        assert_eq!(parse_group("g1"), Ok(g1));
        assert_eq!(parse_group("0xF001"), Ok(g1));
        assert_eq!(parse_group("0"), Ok(GroupAddr::new(0xF000).unwrap()));
        assert_eq!(parse_group("4095"), Ok(GroupAddr::new(0xFFFF).unwrap()));
        for bad in ["4096", "0x0001", "x", "g", "-1", ""] {
            let e = parse_group(bad).unwrap_err();
            assert!(e.contains("expected a group"), "{bad}: {e}");
        }
    }

    #[test]
    fn nodes_in_range_only() {
        assert_eq!(parse_node("7").map(NodeAddr::get), Ok(7));
        assert!(parse_node("0").unwrap_err().contains("reserved"));
        assert!(parse_node("61440").is_err());
        assert!(parse_node("seven").unwrap_err().contains("node address"));
    }

    #[test]
    fn sizes_and_probabilities() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("500k"), Ok(500 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("8MiB"), Ok(8 << 20));
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_probability("0.05"), Ok(0.05));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("NaN").is_err());
        assert_eq!(
            parse_millis("2.5"),
            Ok(std::time::Duration::from_micros(2500))
        );
        assert!(parse_millis("-1").is_err());
    }

    /// A default printed by `--help` reads back as the same duration.
    #[test]
    fn a_millis_default_prints_in_milliseconds() {
        let linger = Millis(control::settings::host::SEND_LINGER);
        assert_eq!(linger.to_string(), "1500");
        assert_eq!(parse_millis_flag(&linger.to_string()), Ok(linger));
        let fine = Millis(std::time::Duration::from_micros(2500));
        assert_eq!(parse_millis_flag(&fine.to_string()), Ok(fine));
    }
}
