//! A private network for one uftp transfer, made with `ip` and removed on drop: a hub namespace
//! holding a bridge (multicast snooping off, so it floods every group), and one namespace per
//! endpoint, each linked to the bridge by a veth pair and routing 224.0.0.0/4 there. Separate
//! namespaces let every `uftpd` have its own address and port 1044 (it cannot share a port).
//! Loss, when asked, is an nftables rule dropping that share of every endpoint's input.
//! Nothing outside these namespaces changes.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

pub struct Network {
    hub: String,
    /// The endpoints' namespaces: the sender's first.
    endpoints: Vec<String>,
}

impl Network {
    /// A network of `endpoints` namespaces; `loss` of every packet into each is dropped.
    pub fn create(endpoints: usize, loss: f64) -> io::Result<Network> {
        let prefix = format!("bench-mc{}", std::process::id());
        let mut net = Network {
            hub: format!("{prefix}-hub"),
            endpoints: Vec::new(),
        };
        ip(&["netns", "add", &net.hub])?;
        let hub = net.hub.clone();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &hub,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..endpoints {
            let ns = format!("{prefix}-e{i}");
            ip(&["netns", "add", &ns])?;
            net.endpoints.push(ns.clone());
            let port = format!("v{i}");
            let address = format!("{}/24", Network::address(i));
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            if loss > 0.0 {
                drop_share(&ns, loss)?;
            }
        }
        Ok(net)
    }

    /// Endpoint `i`'s address (0 is the sender).
    pub fn address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, 0, 1 + i as u8)
    }

    /// `ip netns exec NS program`: a command that runs in endpoint `i`'s namespace.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.endpoints[i]]).arg(program);
        cmd
    }

    /// Endpoint `i`'s count of packets sent on its link.
    pub fn packets_sent(&self, i: usize) -> io::Result<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.endpoints[i], "cat"])
            .arg("/sys/class/net/eth0/statistics/tx_packets")
            .stderr(Stdio::null())
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other("cannot read the sender's packet count"))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Removing a namespace removes its end of each veth pair, and so the pair.
        for ns in self.endpoints.iter().chain([&self.hub]) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("bench: cannot remove network namespace {ns}: {e}");
            }
        }
    }
}

/// Runs `ip ARGS`; its error output becomes the error.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// An nftables rule in namespace `ns` dropping `loss` of every packet coming in.
fn drop_share(ns: &str, loss: f64) -> io::Result<()> {
    let per_million = (loss * 1e6).round() as u64;
    let rules = format!(
        "table inet bench {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  numgen random mod 1000000 < {per_million} drop\n }}\n}}\n"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
