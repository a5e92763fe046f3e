//! The control protocol's client side, and where a node's control socket is found (used by
//! `burghers ctl` and by [`crate::lab`]).

use control::NodeAddr;
use control::topology::Topology;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory of the default control sockets: `burghers` in the system's temporary
/// directory (`$TMPDIR`, else `/tmp`).
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("burghers")
}

/// Where node `addr` listens for control requests unless told otherwise:
/// `<default_dir>/node-<addr>-<udp port>.sock`. The port keeps two networks on one machine
/// (say, two test runs) apart.
pub fn default_path(topology: &Topology, addr: NodeAddr) -> Result<PathBuf, String> {
    let spec = topology
        .node(addr)
        .ok_or_else(|| format!("node {addr} is not in the topology"))?;
    Ok(default_dir().join(format!("node-{addr}-{}.sock", spec.socket.port())))
}

/// Without a topology file: the one default socket of node `addr` in [`default_dir`].
pub fn find_default(addr: NodeAddr) -> Result<PathBuf, String> {
    let dir = default_dir();
    let prefix = format!("node-{addr}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".sock")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no control socket for node {addr} in {} (is `burghers node` running? give --topology FILE or --ctl PATH)",
            dir.display()
        )),
        _ => Err(format!(
            "several control sockets for node {addr} in {} ({}); give --topology FILE or --ctl PATH",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Sends one request line and returns the reply's body, or the node's error message.
pub fn request(path: &Path, line: &str, timeout: Duration) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the control socket {}: {e} (is the node running?)",
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("control socket {}: {e}", path.display());
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    let (status, body) = reply.split_once('\n').unwrap_or((reply.as_str(), ""));
    match status.strip_prefix("error ") {
        _ if status == "ok" => Ok(body.to_string()),
        Some(message) => Err(message.to_string()),
        None => Err(format!(
            "control socket {}: unexpected reply {status:?} (is it a burghers node?)",
            path.display()
        )),
    }
}
