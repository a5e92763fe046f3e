//! Reading the topology file from TOML; every error names file, line, column and the problem.
//! The schema is documented in `docs/TOPOLOGY.md`.
//!
//! Reading is two steps: serde turns the text into "raw" structs that keep the span of every
//! value (`toml::Spanned`), then `validate` checks them and builds the model, so that every
//! semantic error can point at the offending value rather than at the whole file.

use super::write::fmt_millis;
use super::{Action, Faults, LinkSpec, NetworkOptions, NodeSpec, ScheduledEvent, Topology};
use crate::addr::NodeAddr;
use crate::wire::drp::max_lsp_neighbours;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Fastest link rate a topology may give (1 Tbit/s).
pub const MAX_RATE_MBIT: f64 = 1e6;
/// Smallest MTU accepted: the largest packet of fixed size any protocol builds (the SPM), so
/// that no node is configured into building a packet its MTU cannot hold.
pub const MIN_MTU: usize = crate::wire::LARGEST_FIXED_PACKET;
/// Largest MTU accepted: the DNP length field is 16 bits.
pub const MAX_MTU: usize = 65535;
/// Largest duration accepted anywhere in the file (about 31.7 years), so that times added
/// together never overflow and fractional milliseconds keep nanosecond precision.
pub const MAX_MILLIS: f64 = 1e12;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

/// Why a topology file could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given by the caller.
    pub file: String,
    /// Where the problem is; `None` when the file could not be read at all.
    pub position: Option<Position>,
    pub message: String,
}

impl ConfigError {
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, col }) => {
                write!(f, "{}:{line}:{col}: {}", self.file, self.message)
            }
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---- raw file shape (what serde sees) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    network: Option<RawNetwork>,
    #[serde(default)]
    node: Vec<Spanned<RawNode>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mtu: Option<Spanned<i64>>,
    hello_interval_ms: Option<Spanned<f64>>,
    dead_hellos: Option<Spanned<i64>>,
    lsp_retransmit_ms: Option<Spanned<f64>>,
    former_probe_ms: Option<Spanned<f64>>,
    gmp_refresh_ms: Option<Spanned<f64>>,
    gmp_expire_ms: Option<Spanned<f64>>,
    rap_retry_ms: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    addr: Spanned<i64>,
    socket: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    nodes: Spanned<Vec<Spanned<i64>>>,
    loss: Option<Spanned<f64>>,
    corrupt: Option<Spanned<f64>>,
    duplicate: Option<Spanned<f64>>,
    reorder: Option<Spanned<f64>>,
    delay_ms: Option<Spanned<f64>>,
    jitter_ms: Option<Spanned<f64>>,
    down: Option<bool>,
    rate_mbit: Option<Spanned<f64>>,
    queue_bytes: Option<Spanned<i64>>,
    coalesce_ms: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at_ms: Spanned<f64>,
    link_down: Option<Spanned<Vec<Spanned<i64>>>>,
    link_up: Option<Spanned<Vec<Spanned<i64>>>>,
    node_down: Option<Spanned<i64>>,
    node_up: Option<Spanned<i64>>,
}

// ---- reading ----

impl Topology {
    /// Reads a topology from TOML text; `file_name` is only used in error messages.
    pub fn from_toml_str(text: &str, file_name: &str) -> Result<Topology, ConfigError> {
        let cx = Cx {
            file: file_name,
            text,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = cx.explain(&span, e.message().trim_end());
            cx.err(span, message)
        })?;
        cx.validate(raw)
    }

    /// Reads a topology file; an unreadable file is an error naming the file.
    pub fn load(path: &Path) -> Result<Topology, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            position: None,
            message: format!("cannot read the topology file: {e}"),
        })?;
        Topology::from_toml_str(&text, &file)
    }
}

/// The text being read, to turn byte spans into positions.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset of the start of each line, so a position costs a binary search, not a scan.
    line_starts: Vec<usize>,
}

type Res<T> = Result<T, ConfigError>;

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            position: Some(self.position(span.start)),
            message: message.into(),
        }
    }

    fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before `offset`; line_starts[0] = 0 so there is one.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        Position {
            line,
            col: self.text[line_start..offset].chars().count() + 1,
        }
    }

    /// A TOML/serde message in the file's own terms: Rust type names become TOML ones, and the
    /// key is named when the message alone would not say which one.
    fn explain(&self, span: &Range<usize>, message: &str) -> String {
        let mut message = message
            .replace("missing field", "missing key")
            .replace("unknown field", "unknown key")
            .replace("expected i64", "expected an integer")
            .replace("expected f64", "expected a number")
            .replace("expected a sequence", "expected an array")
            .replace("expected struct RawNode", "expected a [[node]] table")
            .replace("expected struct RawLink", "expected a [[link]] table")
            .replace("expected struct RawEvent", "expected an [[event]] table")
            .replace("expected struct RawNetwork", "expected a [network] table");
        let spanned = self.text.get(span.clone()).unwrap_or("");
        let is_key = !spanned.is_empty()
            && spanned
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if message.contains("key") && is_key && !message.contains(spanned) {
            message = format!("{message} `{spanned}`");
        } else if message.starts_with("invalid") {
            // The span is the value: name the key if `key =` comes right before it.
            let before = self.text.get(..span.start).unwrap_or("").trim_end();
            if let Some(before) = before.strip_suffix('=') {
                let before = before.trim_end();
                // Past the last character that cannot be in a key, however many bytes it takes.
                let key_start = before
                    .char_indices()
                    .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                let key = &before[key_start..];
                if !key.is_empty() {
                    message = format!("{key}: {message}");
                }
            }
        }
        message
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).line
    }

    fn validate(&self, raw: RawFile) -> Res<Topology> {
        let network = match raw.network {
            Some(n) => self.network(n)?,
            None => NetworkOptions::default(),
        };
        let nodes = self.nodes(&raw.node)?;
        let links = self.links(&raw.link, &nodes, network.mtu)?;
        let schedule = self.events(&raw.event, &nodes, &links)?;
        Ok(Topology {
            network,
            nodes: nodes.into_values().map(|(spec, _)| spec).collect(),
            links: links.into_values().map(|(spec, _)| spec).collect(),
            schedule,
        })
    }

    fn network(&self, raw: RawNetwork) -> Res<NetworkOptions> {
        let mut out = NetworkOptions::default();
        if let Some(mtu) = &raw.mtu {
            let v = *mtu.get_ref();
            if !(MIN_MTU as i64..=MAX_MTU as i64).contains(&v) {
                return Err(self.err(
                    mtu.span(),
                    format!(
                        "mtu {v} is outside {MIN_MTU}..={MAX_MTU} (it must hold the largest fixed-size packet and fit the 16-bit length field)"
                    ),
                ));
            }
            out.mtu = v as usize;
        }
        let t = &mut out.timers;
        let timer = |v: &Option<Spanned<f64>>, name: &str, into: &mut Duration| -> Res<()> {
            if let Some(v) = v {
                *into = self.millis(v, name)?;
                if into.is_zero() {
                    return Err(self.err(v.span(), format!("{name} must be greater than 0")));
                }
            }
            Ok(())
        };
        timer(
            &raw.hello_interval_ms,
            "hello_interval_ms",
            &mut t.hello_interval,
        )?;
        timer(
            &raw.lsp_retransmit_ms,
            "lsp_retransmit_ms",
            &mut t.lsp_retransmit,
        )?;
        timer(
            &raw.former_probe_ms,
            "former_probe_ms",
            &mut t.former_probe_interval,
        )?;
        timer(&raw.gmp_refresh_ms, "gmp_refresh_ms", &mut t.gmp_refresh)?;
        timer(&raw.gmp_expire_ms, "gmp_expire_ms", &mut t.gmp_expire)?;
        timer(&raw.rap_retry_ms, "rap_retry_ms", &mut t.rap_retry)?;
        if let Some(d) = &raw.dead_hellos {
            let v = *d.get_ref();
            t.dead_hellos = u32::try_from(v)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| self.err(d.span(), format!("dead_hellos {v} must be 1 or more")))?;
        }
        // A dead interval beyond the duration cap would overflow where it is added to times.
        let dead = t.hello_interval.as_secs_f64() * 1e3 * f64::from(t.dead_hellos);
        if dead > MAX_MILLIS {
            let span = raw
                .dead_hellos
                .as_ref()
                .map(|d| d.span())
                .or(raw.hello_interval_ms.as_ref().map(|h| h.span()))
                .unwrap_or(0..0);
            return Err(self.err(
                span,
                format!("hello_interval_ms × dead_hellos is {dead} ms, more than {MAX_MILLIS} ms"),
            ));
        }
        // Entries refreshed less often than they expire would flap on every refresh.
        if t.gmp_expire <= t.gmp_refresh {
            let span = raw
                .gmp_expire_ms
                .as_ref()
                .or(raw.gmp_refresh_ms.as_ref())
                .map(|s| s.span())
                .unwrap_or(0..0);
            return Err(self.err(
                span,
                format!(
                    "gmp_expire_ms ({} ms) must be greater than gmp_refresh_ms ({} ms)",
                    fmt_millis(t.gmp_expire),
                    fmt_millis(t.gmp_refresh)
                ),
            ));
        }
        Ok(out)
    }

    /// A duration in milliseconds (integer or fraction), finite, non-negative and capped.
    fn millis(&self, v: &Spanned<f64>, name: &str) -> Res<Duration> {
        let ms = *v.get_ref();
        if !(0.0..=MAX_MILLIS).contains(&ms) {
            return Err(self.err(
                v.span(),
                format!(
                    "{name} {ms} is not a duration (expected 0 to {MAX_MILLIS:e} milliseconds)"
                ),
            ));
        }
        Ok(Duration::from_nanos((ms * 1e6).round() as u64))
    }

    /// `rate_mbit` (megabits per second, as link rates are quoted) as bytes per second.
    fn rate(&self, v: &Option<Spanned<f64>>) -> Res<Option<u64>> {
        let Some(v) = v else { return Ok(None) };
        let mbit = *v.get_ref();
        if !(mbit > 0.0 && mbit <= MAX_RATE_MBIT) {
            return Err(self.err(
                v.span(),
                format!(
                    "rate_mbit {mbit} is not a link rate (expected more than 0, at most {MAX_RATE_MBIT:e} megabits per second)"
                ),
            ));
        }
        Ok(Some(((mbit * 1e6 / 8.0).round() as u64).max(1)))
    }

    /// `queue_bytes`: a positive byte count, and only on a link with a rate (an infinitely
    /// fast link never queues).
    fn queue_bytes(&self, v: &Option<Spanned<i64>>, has_rate: bool) -> Res<Option<u64>> {
        let Some(v) = v else { return Ok(None) };
        let bytes = *v.get_ref();
        if bytes <= 0 {
            return Err(self.err(
                v.span(),
                format!(
                    "queue_bytes {bytes} is not a queue size (expected a positive number of bytes)"
                ),
            ));
        }
        if !has_rate {
            return Err(self.err(
                v.span(),
                "queue_bytes needs rate_mbit on the same link (a link without a rate never queues)",
            ));
        }
        Ok(Some(bytes as u64))
    }

    fn probability(&self, v: &Option<Spanned<f64>>, name: &str) -> Res<f64> {
        match v {
            None => Ok(0.0),
            Some(v) => {
                let p = *v.get_ref();
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(self.err(
                        v.span(),
                        format!("{name} {p} is not a probability in 0..=1"),
                    ))
                }
            }
        }
    }

    /// A node address value, checked for range (not for existence).
    fn addr(&self, v: &Spanned<i64>) -> Res<NodeAddr> {
        let raw = *v.get_ref();
        let raw16 = u16::try_from(raw).map_err(|_| {
            self.err(
                v.span(),
                format!("node address {raw} does not fit in 16 bits"),
            )
        })?;
        NodeAddr::try_new(raw16).map_err(|e| self.err(v.span(), format!("bad node address: {e}")))
    }

    /// Nodes by address, each with the line it was defined on.
    fn nodes(&self, raw: &[Spanned<RawNode>]) -> Res<BTreeMap<NodeAddr, (NodeSpec, usize)>> {
        if raw.is_empty() {
            return Err(self.err(0..0, "the file defines no nodes (add [[node]] tables)"));
        }
        let mut by_addr: BTreeMap<NodeAddr, (NodeSpec, usize)> = BTreeMap::new();
        let mut by_socket: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for n in raw {
            let n = n.get_ref();
            let addr = self.addr(&n.addr)?;
            let line = self.line_of(&n.addr.span());
            if let Some((_, first)) = by_addr.get(&addr) {
                return Err(self.err(
                    n.addr.span(),
                    format!("duplicate node address {addr} (first defined on line {first})"),
                ));
            }
            let text = n.socket.get_ref();
            let socket: SocketAddr = text.parse().map_err(|_| {
                self.err(
                    n.socket.span(),
                    format!(
                        "malformed socket address \"{text}\" (expected IP:PORT, e.g. \"127.0.0.1:7001\")"
                    ),
                )
            })?;
            if socket.port() == 0 {
                return Err(self.err(
                    n.socket.span(),
                    format!("socket address \"{text}\" has port 0; neighbours need a fixed port"),
                ));
            }
            if let Some(first) = by_socket.get(&socket) {
                return Err(self.err(
                    n.socket.span(),
                    format!("duplicate socket address {socket} (first used on line {first})"),
                ));
            }
            by_socket.insert(socket, line);
            by_addr.insert(addr, (NodeSpec { addr, socket }, line));
        }
        Ok(by_addr)
    }

    /// The two ends of a link (or of a link event), normalised `a < b`.
    fn pair<T>(
        &self,
        v: &Spanned<Vec<Spanned<i64>>>,
        what: &str,
        nodes: &BTreeMap<NodeAddr, T>,
    ) -> Res<(NodeAddr, NodeAddr)> {
        let ends = v.get_ref();
        if ends.len() != 2 {
            return Err(self.err(
                v.span(),
                format!(
                    "{what} must name exactly 2 nodes, e.g. [1, 2]; found {}",
                    ends.len()
                ),
            ));
        }
        let mut pair = Vec::with_capacity(2);
        for end in ends {
            let addr = self.addr(end)?;
            if !nodes.contains_key(&addr) {
                return Err(self.err(
                    end.span(),
                    format!("{what} names node {addr}, which no [[node]] defines"),
                ));
            }
            pair.push(addr);
        }
        let (x, y) = (pair[0], pair[1]);
        if x == y {
            return Err(self.err(v.span(), format!("{what} joins node {x} to itself")));
        }
        Ok((x.min(y), x.max(y)))
    }

    fn links(
        &self,
        raw: &[Spanned<RawLink>],
        nodes: &BTreeMap<NodeAddr, (NodeSpec, usize)>,
        mtu: usize,
    ) -> Res<BTreeMap<(NodeAddr, NodeAddr), (LinkSpec, usize)>> {
        let mut out: BTreeMap<(NodeAddr, NodeAddr), (LinkSpec, usize)> = BTreeMap::new();
        let mut degree: BTreeMap<NodeAddr, usize> = BTreeMap::new();
        // One LSP lists all of a node's neighbours, so a node cannot have more than fit in it.
        let max_degree = max_lsp_neighbours(mtu);
        for l in raw {
            let l = l.get_ref();
            let (a, b) = self.pair(&l.nodes, "a link", nodes)?;
            let line = self.line_of(&l.nodes.span());
            if let Some((_, first)) = out.get(&(a, b)) {
                return Err(self.err(
                    l.nodes.span(),
                    format!("duplicate link {a}-{b} (first defined on line {first})"),
                ));
            }
            for end in [a, b] {
                let d = degree.entry(end).or_insert(0);
                *d += 1;
                if *d > max_degree {
                    return Err(self.err(
                        l.nodes.span(),
                        format!(
                            "node {end} has more than {max_degree} links, the most one LSP can list under mtu {mtu}"
                        ),
                    ));
                }
            }
            let faults = Faults {
                loss: self.probability(&l.loss, "loss")?,
                corrupt: self.probability(&l.corrupt, "corrupt")?,
                duplicate: self.probability(&l.duplicate, "duplicate")?,
                reorder: self.probability(&l.reorder, "reorder")?,
                delay: match &l.delay_ms {
                    Some(v) => self.millis(v, "delay_ms")?,
                    None => Duration::ZERO,
                },
                jitter: match &l.jitter_ms {
                    Some(v) => self.millis(v, "jitter_ms")?,
                    None => Duration::ZERO,
                },
                down: l.down.unwrap_or(false),
                rate: self.rate(&l.rate_mbit)?,
                queue_bytes: self.queue_bytes(&l.queue_bytes, l.rate_mbit.is_some())?,
                coalesce: match &l.coalesce_ms {
                    Some(v) => self.millis(v, "coalesce_ms")?,
                    None => Duration::ZERO,
                },
            };
            out.insert((a, b), (LinkSpec { a, b, faults }, line));
        }
        Ok(out)
    }

    fn events(
        &self,
        raw: &[Spanned<RawEvent>],
        nodes: &BTreeMap<NodeAddr, (NodeSpec, usize)>,
        links: &BTreeMap<(NodeAddr, NodeAddr), (LinkSpec, usize)>,
    ) -> Res<Vec<ScheduledEvent>> {
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            let ev = e.get_ref();
            let at = self.millis(&ev.at_ms, "at_ms")?;
            let mut actions: Vec<(Range<usize>, &str)> = Vec::new();
            let mut action = None;
            let link_action = |v: &Spanned<Vec<Spanned<i64>>>, name: &str| -> Res<_> {
                let (a, b) = self.pair(v, name, nodes)?;
                if !links.contains_key(&(a, b)) {
                    return Err(self.err(
                        v.span(),
                        format!("{name} names link {a}-{b}, which no [[link]] defines"),
                    ));
                }
                Ok((a, b))
            };
            let node_action = |v: &Spanned<i64>, name: &str| -> Res<_> {
                let addr = self.addr(v)?;
                if !nodes.contains_key(&addr) {
                    return Err(self.err(
                        v.span(),
                        format!("{name} names node {addr}, which no [[node]] defines"),
                    ));
                }
                Ok(addr)
            };
            if let Some(v) = &ev.link_down {
                let (a, b) = link_action(v, "link_down")?;
                actions.push((v.span(), "link_down"));
                action = Some(Action::LinkDown(a, b));
            }
            if let Some(v) = &ev.link_up {
                let (a, b) = link_action(v, "link_up")?;
                actions.push((v.span(), "link_up"));
                action = Some(Action::LinkUp(a, b));
            }
            if let Some(v) = &ev.node_down {
                let n = node_action(v, "node_down")?;
                actions.push((v.span(), "node_down"));
                action = Some(Action::NodeDown(n));
            }
            if let Some(v) = &ev.node_up {
                let n = node_action(v, "node_up")?;
                actions.push((v.span(), "node_up"));
                action = Some(Action::NodeUp(n));
            }
            if actions.len() > 1 {
                let (span, name) = actions[1].clone();
                return Err(self.err(
                    span,
                    format!(
                        "an [[event]] has exactly one action, but this one has both {} and {name}",
                        actions[0].1
                    ),
                ));
            }
            let Some(action) = action else {
                return Err(self.err(
                    e.span(),
                    "an [[event]] needs one of link_down, link_up, node_down, node_up",
                ));
            };
            out.push(ScheduledEvent { at, action });
        }
        // Stable: events at the same time keep the order of the file.
        out.sort_by_key(|e| e.at);
        Ok(out)
    }
}
