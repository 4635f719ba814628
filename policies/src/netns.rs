//! A test network: a "node" namespace routing between pod namespaces over veth pairs, with TCP/UDP servers.
//!
//! Every host lives in a namespace this fixture creates, with addresses from
//! the benchmarking ranges 198.18.0.0/15 and 2001:2::/48 (RFC 2544, RFC 5180);
//! the node namespace has no route anywhere else, so no packet leaves. Names
//! carry the process id and a counter so parallel runs do not clash.
//! Everything is removed on drop, also after a panic.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// The bridge of [`TestNet::new_bridged`].
pub const BRIDGE: &str = "plb0";

/// Address of the node on every host-side veth; pods route 198.18.0.0/15 via it.
pub const NODE_GW: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// IPv6 address of the node on every host-side veth; pods route 2001:2::/48 via it.
pub const NODE_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, 1);

/// The IPv6 address of pod `i` of [`TestNet::new`]: 2001:2::10, 2001:2::11, ...
/// (the digits of its IPv4 address's last octet, for reading).
pub fn pod_ipv6(i: usize) -> Ipv6Addr {
    let n = 10 + u16::try_from(i).unwrap_or(200).min(200);
    // Decimal digits read as hex: 10 -> 0x10.
    let hex = u16::from_str_radix(&n.to_string(), 16).unwrap_or(n);
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, hex)
}

/// The fixture failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output.
        stderr: String,
    },
    /// A tool is missing.
    #[error("cannot run `{tool}` ({source}): install iproute2")]
    Tool {
        /// The tool.
        tool: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Entering a namespace or opening a socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Io { what, source }
}

/// Sets `key` to `val` with sysctl in network namespace `ns`.
fn sysctl(ns: &str, key: &str, val: &str) -> Result<String, NetnsError> {
    ip(&["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={val}")])
}

/// Runs `ip` with arguments.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Tool {
            tool: "ip".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`).
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let f = File::open(format!("/run/netns/{name}")).map_err(io(format!("open netns {name}")))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Io {
        what: format!("setns {name}"),
        source: std::io::Error::from(e),
    })
}

/// Runs `f` on a new thread inside namespace `name`.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::Io {
            what: "netns thread panicked".into(),
            source: std::io::Error::other("panic"),
        })
    })
}

/// One pod of the test network.
#[derive(Clone, Debug)]
pub struct PodNet {
    /// Its namespace.
    pub netns: String,
    /// Host-side veth, in the node namespace.
    pub host_if: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address, when the network is dual-stack.
    pub ip6: Option<Ipv6Addr>,
}

impl PodNet {
    /// The pod's addresses.
    pub fn ips(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.ip))
            .chain(self.ip6.map(IpAddr::V6))
            .collect()
    }
}

/// A test network. Dropping it stops the servers and deletes the namespaces.
#[derive(Debug)]
pub struct TestNet {
    /// The node namespace (routes, host-side veths, the datapath).
    pub node: String,
    /// The pods.
    pub pods: Vec<PodNet>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    /// A test network of its node namespace alone, and the tag its namespaces are named with.
    fn node_only() -> Result<(Self, String), NetnsError> {
        let tag = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let node = format!("plinth-{tag}-node");
        let net = Self {
            node: node.clone(),
            pods: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        ip(&["netns", "add", &node])?;
        Ok((net, tag))
    }

    /// Creates a node namespace and `n` dual-stack pod namespaces with
    /// addresses 198.18.0.10, .11, ... and 2001:2::10, ::11, ... ([`pod_ipv6`];
    /// `n` ≤ 200), each with a host route on the node (/32 and /128).
    pub fn new(n: usize) -> Result<Self, NetnsError> {
        let (mut net, tag) = Self::node_only()?;
        let node = net.node.clone();
        sysctl(&node, "net.ipv4.ip_forward", "1")?;
        sysctl(&node, "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&node, "net.ipv4.conf.default.rp_filter", "0")?;
        sysctl(&node, "net.ipv6.conf.all.forwarding", "1")?;
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        for i in 0..n {
            let pod_ns = format!("plinth-{tag}-p{i}");
            let host_if = format!("plh{i}");
            let addr = Ipv4Addr::new(198, 18, 0, 10 + u8::try_from(i).unwrap_or(200).min(200));
            let addr6 = pod_ipv6(i);
            ip(&["netns", "add", &pod_ns])?;
            net.pods.push(PodNet {
                netns: pod_ns.clone(),
                host_if: host_if.clone(),
                ip: addr,
                ip6: Some(addr6),
            });
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &pod_ns,
            ])?;
            let a32 = format!("{addr}/32");
            let gw = NODE_GW.to_string();
            ip(&["-n", &pod_ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &pod_ns, "addr", "add", &a32, "dev", "eth0"])?;
            ip(&["-n", &pod_ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &pod_ns, "route", "add", &gw, "dev", "eth0", "scope", "link"])?;
            ip(&[
                "-n",
                &pod_ns,
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                &gw,
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &node, "addr", "add", &format!("{gw}/32"), "dev", &host_if])?;
            ip(&["-n", &node, "link", "set", &host_if, "up"])?;
            ip(&["-n", &node, "route", "add", &a32, "dev", &host_if, "scope", "link"])?;
            // IPv6 the same way: a /128 on the pod, the node's address on every
            // host-side veth, routes both ways. No duplicate address detection:
            // the addresses are usable at once. Neighbour discovery crosses
            // the datapath like any packet.
            let a128 = format!("{addr6}/128");
            let gw6 = NODE_GW6.to_string();
            ip(&["-n", &pod_ns, "-6", "addr", "add", &a128, "dev", "eth0", "nodad"])?;
            ip(&["-n", &pod_ns, "-6", "route", "add", &gw6, "dev", "eth0"])?;
            ip(&[
                "-n",
                &pod_ns,
                "-6",
                "route",
                "add",
                "2001:2::/48",
                "via",
                &gw6,
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &node,
                "-6",
                "addr",
                "add",
                &format!("{gw6}/128"),
                "dev",
                &host_if,
                "nodad",
            ])?;
            ip(&["-n", &node, "-6", "route", "add", &a128, "dev", &host_if])?;
        }
        Ok(net)
    }

    /// Creates a node namespace with a Linux bridge `plb0` (198.18.0.1/24)
    /// and `n` pods on it, 198.18.0.10, .11, ... in 198.18.0.0/24, their
    /// host-side veths `plh<i>` ports of the bridge: the layout of
    /// bridge-based CNIs, with no /32 route per pod (`n` ≤ 200).
    pub fn new_bridged(n: usize) -> Result<Self, NetnsError> {
        Self::bridged(n, false)
    }

    /// [`TestNet::new_bridged`] with dual-stack pods: the bridge also has
    /// 2001:2::1/64 and the pods 2001:2::10, ::11, ... ([`pod_ipv6`]) in
    /// 2001:2::/64, without duplicate address detection.
    pub fn new_bridged_dual(n: usize) -> Result<Self, NetnsError> {
        Self::bridged(n, true)
    }

    fn bridged(n: usize, dual: bool) -> Result<Self, NetnsError> {
        let (mut net, tag) = Self::node_only()?;
        let node = net.node.clone();
        if !dual {
            sysctl(&node, "net.ipv6.conf.all.disable_ipv6", "1")?;
            sysctl(&node, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        ip(&["-n", &node, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &node, "addr", "add", "198.18.0.1/24", "dev", BRIDGE])?;
        if dual {
            ip(&["-n", &node, "-6", "addr", "add", "2001:2::1/64", "dev", BRIDGE, "nodad"])?;
        }
        ip(&["-n", &node, "link", "set", BRIDGE, "up"])?;
        for i in 0..n {
            let pod_ns = format!("plinth-{tag}-p{i}");
            let host_if = format!("plh{i}");
            let addr = Ipv4Addr::new(198, 18, 0, 10 + u8::try_from(i).unwrap_or(200).min(200));
            ip(&["netns", "add", &pod_ns])?;
            let addr6 = dual.then(|| pod_ipv6(i));
            net.pods.push(PodNet {
                netns: pod_ns.clone(),
                host_if: host_if.clone(),
                ip: addr,
                ip6: addr6,
            });
            if !dual {
                sysctl(&pod_ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
                sysctl(&pod_ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
            }
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &pod_ns,
            ])?;
            ip(&["-n", &pod_ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &pod_ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            if let Some(a6) = addr6 {
                ip(&[
                    "-n",
                    &pod_ns,
                    "-6",
                    "addr",
                    "add",
                    &format!("{a6}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ])?;
            }
            ip(&["-n", &pod_ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &node, "link", "set", &host_if, "master", BRIDGE])?;
            ip(&["-n", &node, "link", "set", &host_if, "up"])?;
        }
        Ok(net)
    }

    /// Starts TCP and UDP servers on `ports` in every pod, on each of its
    /// addresses' families; each answers with `reply(pod index)`.
    pub fn serve(&mut self, ports: &[u16], reply: impl Fn(usize) -> String) -> Result<(), NetnsError> {
        for (i, pod) in self.pods.iter().enumerate() {
            let ports = ports.to_vec();
            let v6 = pod.ip6.is_some();
            let (tcp, udp) = in_netns(
                &pod.netns,
                move || -> Result<(Vec<TcpListener>, Vec<UdpSocket>), NetnsError> {
                    let mut t = Vec::new();
                    let mut u = Vec::new();
                    for p in ports {
                        let mut any: Vec<IpAddr> = vec![Ipv4Addr::UNSPECIFIED.into()];
                        if v6 {
                            any.push(Ipv6Addr::UNSPECIFIED.into());
                        }
                        for a in any {
                            let (l, s) = bind_pair(SocketAddr::new(a, p))?;
                            t.push(l);
                            u.push(s);
                        }
                    }
                    Ok((t, u))
                },
            )??;
            let msg = reply(i);
            for l in tcp {
                let (stop, msg) = (Arc::clone(&self.stop), msg.clone());
                self.servers.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok((mut s, _)) => {
                                let _ = s.write_all(msg.as_bytes());
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                }));
            }
            for s in udp {
                let (stop, msg) = (Arc::clone(&self.stop), msg.clone());
                self.servers.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((_, from)) = s.recv_from(&mut buf) {
                            let _ = s.send_to(msg.as_bytes(), from);
                        }
                    }
                }));
            }
        }
        Ok(())
    }

    /// Probes from pod `from` to every `(to, protocol, port)` concurrently;
    /// a probe succeeds when the server's reply arrives within `timeout`.
    pub fn probe_many(
        &self,
        from: usize,
        targets: &[(usize, String, u16)],
        timeout: Duration,
    ) -> Result<Vec<Option<String>>, NetnsError> {
        self.probe_many_over(from, targets, false, timeout)
    }

    /// [`TestNet::probe_many`] over IPv6 when `ipv6`, else IPv4; a pod
    /// without an IPv6 address cannot be reached over IPv6 (`None`).
    pub fn probe_many_over(
        &self,
        from: usize,
        targets: &[(usize, String, u16)],
        ipv6: bool,
        timeout: Duration,
    ) -> Result<Vec<Option<String>>, NetnsError> {
        let addr = |i: usize| -> Option<IpAddr> {
            if ipv6 {
                self.pods[i].ip6.map(IpAddr::V6)
            } else {
                Some(IpAddr::V4(self.pods[i].ip))
            }
        };
        if addr(from).is_none() {
            return Ok(vec![None; targets.len()]);
        }
        let socks = {
            let targets: Vec<(String, u16)> = targets.iter().map(|(_, p, port)| (p.clone(), *port)).collect();
            in_netns(
                &self.pods[from].netns,
                move || -> Result<Vec<socket2::Socket>, NetnsError> {
                    targets
                        .iter()
                        .map(|(proto, _)| {
                            let ty = if proto == "UDP" {
                                socket2::Type::DGRAM
                            } else {
                                socket2::Type::STREAM
                            };
                            let (domain, any): (_, IpAddr) = if ipv6 {
                                (socket2::Domain::IPV6, Ipv6Addr::UNSPECIFIED.into())
                            } else {
                                (socket2::Domain::IPV4, Ipv4Addr::UNSPECIFIED.into())
                            };
                            let s = socket2::Socket::new(domain, ty, None).map_err(io("socket"))?;
                            // A fresh source port per probe: no conntrack entry of an
                            // earlier probe can answer for this one.
                            let port = next_client_port();
                            s.set_reuse_address(true).map_err(io("reuseaddr"))?;
                            s.bind(&SocketAddr::new(any, port).into())
                                .map_err(io(format!("bind client port {port}")))?;
                            Ok(s)
                        })
                        .collect()
                },
            )??
        };
        let handles: Vec<Option<JoinHandle<Option<String>>>> = socks
            .into_iter()
            .zip(targets)
            .map(|(s, (to, proto, port))| {
                let dst = SocketAddr::new(addr(*to)?, *port);
                let udp = proto == "UDP";
                Some(std::thread::spawn(move || probe_one(s, dst, udp, timeout)))
            })
            .collect();
        Ok(handles
            .into_iter()
            .map(|h| h.and_then(|h| h.join().ok().flatten()))
            .collect())
    }

    /// Opens a TCP connection from pod `from` to `to:port` and keeps it.
    pub fn connect(&self, from: usize, to: usize, port: u16) -> Result<std::net::TcpStream, NetnsError> {
        self.connect_to(from, IpAddr::V4(self.pods[to].ip), port)
    }

    /// Opens a TCP connection from pod `from` to `to:port` over IPv6.
    pub fn connect6(&self, from: usize, to: usize, port: u16) -> Result<std::net::TcpStream, NetnsError> {
        let to6 = self.pods[to].ip6.ok_or_else(|| NetnsError::Io {
            what: format!("pod {to} has no IPv6 address"),
            source: std::io::Error::from(std::io::ErrorKind::AddrNotAvailable),
        })?;
        self.connect_to(from, IpAddr::V6(to6), port)
    }

    fn connect_to(&self, from: usize, to: IpAddr, port: u16) -> Result<std::net::TcpStream, NetnsError> {
        let dst = SocketAddr::new(to, port);
        in_netns(&self.pods[from].netns, move || {
            std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2)).map_err(io(format!("connect {dst}")))
        })?
    }
}

/// A TCP listener (non-blocking) and a UDP socket on `addr`; an IPv6
/// address binds IPv6 only, beside the IPv4 sockets.
fn bind_pair(addr: SocketAddr) -> Result<(TcpListener, UdpSocket), NetnsError> {
    let sock = |ty: socket2::Type| -> Result<socket2::Socket, NetnsError> {
        let s = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None).map_err(io("socket"))?;
        if addr.is_ipv6() {
            s.set_only_v6(true).map_err(io("IPV6_V6ONLY"))?;
        }
        s.set_reuse_address(true).map_err(io("reuseaddr"))?;
        s.bind(&addr.into()).map_err(io(format!("bind {addr}")))?;
        Ok(s)
    };
    let t = sock(socket2::Type::STREAM)?;
    t.listen(128).map_err(io(format!("listen tcp {addr}")))?;
    let l: TcpListener = t.into();
    l.set_nonblocking(true).map_err(io("nonblocking"))?;
    let u: UdpSocket = sock(socket2::Type::DGRAM)?.into();
    u.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(io("timeout"))?;
    Ok((l, u))
}

static CLIENT_PORT: AtomicU16 = AtomicU16::new(0);

fn next_client_port() -> u16 {
    // 20000..=59999, starting at a point that depends on the process.
    let n = CLIENT_PORT.fetch_add(1, Ordering::Relaxed);
    let base = (std::process::id() % 40000) as u16;
    20000 + (base.wrapping_add(n) % 40000)
}

fn probe_one(s: socket2::Socket, dst: SocketAddr, udp: bool, timeout: Duration) -> Option<String> {
    let mut buf = [0u8; 64];
    if udp {
        let u: UdpSocket = s.into();
        u.set_read_timeout(Some(timeout)).ok()?;
        u.send_to(b"probe", dst).ok()?;
        let (n, from) = u.recv_from(&mut buf).ok()?;
        (from == dst).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    } else {
        s.connect_timeout(&dst.into(), timeout).ok()?;
        let mut t: std::net::TcpStream = s.into();
        t.set_read_timeout(Some(timeout)).ok()?;
        let n = t.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
        for p in &self.pods {
            let _ = ip(&["netns", "del", &p.netns]);
        }
        let _ = ip(&["netns", "del", &self.node]);
    }
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), NetnsError> {
    let is_bpf =
        nix::sys::statfs::statfs("/sys/fs/bpf").is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    if is_bpf {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| NetnsError::Io {
        what: "mount -t bpf bpf /sys/fs/bpf".into(),
        source: std::io::Error::from(e),
    })
}

/// Host-side interface of the host route to `ip` in this thread's namespace
/// (`/proc/thread-self/net/route`, `ipv6_route`), as the agent finds pod interfaces.
pub fn route_interface(ip: IpAddr) -> Option<String> {
    crate::agent::routes::RouteTables::read().interface_for(ip)
}

/// Removes a bpffs pin directory (maps, links) on drop, also after an error
/// or a panic: unpinning the links detaches them.
#[derive(Debug)]
pub struct PinDirGuard(pub std::path::PathBuf);

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
