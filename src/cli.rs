//! The command line as typed: clap structs holding raw arguments. Validation happens once, in
//! `config`, which turns these into checked values. Pure: no I/O.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "synergy-craft",
    version,
    about = "Punch holes in stateful IPv6 firewalls with exact, hand-built TCP/UDP/SCTP probes",
    long_about = "Sends a TCP SYN, UDP datagram or SCTP punch (or INIT) from a local address and port toward a peer, \
                  with a hop limit that crosses the local firewalls and expires before the remote ones, so \
                  that the local firewalls hold state for the flow and let the peer in (SocketSynergy)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build one probe exactly and send it (or only show it, with --dry-run).
    #[command(allow_negative_numbers = true)]
    Probe(Box<ProbeArgs>),
    /// Trace the flow's path Paris-style (5-tuple constant), one hop limit after the other, up to
    /// the first router outside the local site, and recommend the lowest hop limit seen to expire
    /// there (it has crossed every local firewall; nothing of the trace goes further).
    #[command(allow_negative_numbers = true)]
    Hops(HopsArgs),
    /// Punch for callers without CAP_NET_RAW: they pass their socket over a Unix socket
    /// (SCM_RIGHTS) and the daemon sends the probe for it, within its policy.
    Daemon(DaemonArgs),
    /// Punch for one named peer, let only it in, and relay stdin/stdout like netcat.
    ///
    /// Positional form as SocketSynergy's listendemo:
    /// listen tcp|udp|sctp LOCAL_ADDR LOCAL_PORT PEER_ADDR PEER_PORT HOP_LIMIT
    #[command(allow_negative_numbers = true)]
    Listen(SessionArgs),
    /// Client/client mode: both peers punch their own side, then connect to each other
    /// (crossing SYNs for TCP, meeting datagrams for UDP); relays stdin/stdout.
    ///
    /// connect tcp|udp LOCAL_ADDR LOCAL_PORT PEER_ADDR PEER_PORT HOP_LIMIT
    #[command(allow_negative_numbers = true)]
    Connect(SessionArgs),
    /// Show the route memory: the hop-limit range learnt per route (by `hops`, by punches refused
    /// from the peer's side) and set per prefix by the operator, each bound with where it came
    /// from. "auto" chooses from it. Read from $STATE_DIRECTORY/routes, else
    /// /var/lib/synergy-craft/routes.
    Routes(ReportArgs),
    /// Ask the daemon for its state: the flows it keeps open (root: every caller's; others:
    /// their own), their last and next punch, the route memory and its counters.
    Status(ReportArgs),
    /// Write the man pages or a shell completion script, generated from these definitions
    /// (README: installing them).
    #[command(subcommand)]
    Generate(Generated),
}

/// `routes` and `status`: how to show what they read.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// One JSON object (docs/JSON.md, events `routes` and `status`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generated {
    /// The man pages, synergy-craft.1 and one per command (synergy-craft-probe.1, ...), into
    /// DIR, e.g. /usr/local/share/man/man1.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The completion script for SHELL, on stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// How `listen` answers a TCP peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpMode {
    /// The probe's ISN is the local socket's, and the connection is a simultaneous open: clean
    /// through strict conntrack (needs CAP_NET_ADMIN for TCP_REPAIR at start-up).
    Synergy,
    /// SocketSynergy's original: listen() and accept() after a probe with an unrelated sequence
    /// number (shows what firewalls do with it).
    Classic,
}

/// `listen` and `connect`: the six SocketSynergy positionals, or the same as flags.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// tcp, udp, or for listen sctp (or --proto).
    #[arg(value_name = "PROTO", value_parser = proto_parser())]
    pub pos_proto: Option<Proto>,
    /// Local IPv6 address to bind (or --local-addr).
    #[arg(value_name = "LOCAL_ADDR")]
    pub pos_local_addr: Option<String>,
    /// Local port (or --local-port).
    #[arg(value_name = "LOCAL_PORT")]
    pub pos_local_port: Option<String>,
    /// The one peer let in (or --peer-addr).
    #[arg(value_name = "PEER_ADDR")]
    pub pos_peer_addr: Option<String>,
    /// The peer's port (or --peer-port).
    #[arg(value_name = "PEER_PORT")]
    pub pos_peer_port: Option<String>,
    /// Hop limit of the punch, or `auto`: the route memory's for the peer's route, else traced
    /// first (and remembered) (or --hop-limit).
    #[arg(value_name = "HOP_LIMIT", allow_hyphen_values = true)]
    pub pos_hop_limit: Option<String>,

    /// tcp, udp, or for listen sctp.
    #[arg(
        long,
        value_parser = proto_parser(),
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub proto: Option<Proto>,
    /// Local IPv6 address to bind (also --src).
    #[arg(
        long,
        alias = "src",
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub local_addr: Option<String>,
    /// Local port (also --sport).
    #[arg(
        long,
        alias = "sport",
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub local_port: Option<String>,
    /// The one peer let in (also --dst).
    #[arg(
        long,
        alias = "dst",
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub peer_addr: Option<String>,
    /// The peer's port (also --dport).
    #[arg(
        long,
        alias = "dport",
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub peer_port: Option<String>,
    /// Hop limit of the punch, or `auto` (the route memory's, else traced first).
    #[arg(
        long,
        allow_hyphen_values = true,
        help_heading = "Endpoint flags (instead of positionals)"
    )]
    pub hop_limit: Option<String>,

    /// For an `auto` hop limit: the local site, which must leave the peer out [default: the /56
    /// of the local address, longer if that holds the peer].
    #[arg(long)]
    pub site_prefix: Option<String>,
    /// Give up when the peer has not come within this time (e.g. 30s); default: wait. Once the
    /// peer is connected the session runs until either side ends it.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Punch again at this interval to keep the hole open (udp: also while relaying; tcp: while
    /// waiting, 20s for a listener); 0 turns it off [default: tcp 20s, udp 2s, sctp 5s, inside
    /// the shortest timeouts real firewalls use].
    #[arg(long)]
    pub repunch: Option<String>,
    /// How a TCP peer is answered.
    #[arg(long, value_enum, default_value = "synergy")]
    pub tcp_mode: TcpMode,
    /// UDP: after stdin ends, keep relaying the peer's datagrams this long before exiting.
    #[arg(long, default_value = "1s")]
    pub linger: String,
    /// Events (punched, peer connected, bytes, closed) as JSON Lines on stderr.
    #[arg(long)]
    pub json: bool,
    /// Write every probe the session sends (the `auto` trace, each punch and re-punch) to this
    /// pcap file (link type raw IPv6), each as it goes out.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

pub use crate::wire::Proto;

/// Parses `--proto` into the one protocol type, offering its names to help and completions.
fn proto_parser() -> impl clap::builder::TypedValueParser<Value = Proto> {
    clap::builder::PossibleValuesParser::new(Proto::ALL.map(Proto::name))
        .try_map(|s| s.parse::<Proto>())
}

/// The flow a probe belongs to: protocol, addresses and ports.
#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Transport protocol of the probe.
    #[arg(long, value_parser = proto_parser())]
    pub proto: Proto,
    /// Local (source) IPv6 address (also --local-addr); default: the one the kernel would pick
    /// toward --dst.
    #[arg(long, alias = "local-addr")]
    pub src: Option<String>,
    /// Local (source) port (also --local-port) [probe: sweep].
    #[arg(long, alias = "local-port")]
    pub sport: String,
    /// Peer (destination) IPv6 address (also --peer-addr); link-local needs a zone, e.g.
    /// fe80::1%eth0. `probe` also takes a list A,B,... or @FILE of addresses (separated by new
    /// lines, commas or spaces; # starts a comment), probed one after the other.
    #[arg(long, alias = "peer-addr")]
    pub dst: String,
    /// Peer (destination) port (also --peer-port) [probe: sweep].
    #[arg(long, alias = "peer-port")]
    pub dport: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,

    /// IPv6 hop limit (0-255): just enough to cross the last local firewall [sweep; like every field
    /// marked so, it takes a range or list (1-8, 80,443)]: one probe per combination, the fields
    /// varying in the order of this help (hop limit slowest), ports after the IPv6 fields.
    #[arg(
        long,
        default_value = "3",
        allow_hyphen_values = true,
        help_heading = "IPv6"
    )]
    pub hop_limit: String,
    /// The sweepable fields besides the hop limit and the ports, made from `SWEEPABLE`.
    #[command(flatten)]
    pub sweep: SweepArgs,

    /// TCP flags: letters (SA), names (SYN,ACK), a number (0x12) or none [default: S].
    #[arg(long, help_heading = "TCP")]
    pub flags: Option<String>,
    /// TCP SACK-permitted option.
    #[arg(long, help_heading = "TCP")]
    pub sack_perm: bool,
    /// A raw TCP option in hex (kind, length, data), placed verbatim after the named ones; repeatable.
    #[arg(long = "tcp-option", help_heading = "TCP")]
    pub tcp_option: Vec<String>,

    /// SCTP INIT Supported Address Types parameter: a list of ipv4,ipv6.
    #[arg(long, help_heading = "SCTP")]
    pub addr_types: Option<String>,
    /// Extra SCTP INIT parameter as TYPE:HEX; repeatable.
    #[arg(long = "init-param", help_heading = "SCTP")]
    pub init_param: Vec<String>,
    /// SCTP chunks to send instead of the punch (an ERROR chunk with a Stale Cookie cause, which
    /// lets the peer's association through; an INIT does not since Linux 6.6): `init`, or
    /// TYPE:FLAGS:HEX (e.g. 6:0: for ABORT); repeatable, in order. The INIT flags need `init`.
    #[arg(long = "chunk", help_heading = "SCTP")]
    pub chunk: Vec<String>,

    /// Payload after the TCP/UDP header, in hex.
    #[arg(long, conflicts_with = "data_string", help_heading = "Payload")]
    pub data: Option<String>,
    /// Payload after the TCP/UDP header, as text.
    #[arg(long, help_heading = "Payload")]
    pub data_string: Option<String>,
    /// Payload of N random bytes after the TCP/UDP header (nping's --data-length, hping3's -d).
    #[arg(
        long,
        value_name = "N",
        conflicts_with_all = ["data", "data_string"],
        help_heading = "Payload"
    )]
    pub data_length: Option<String>,
    /// Send a deliberately wrong checksum (conntrack experiments).
    #[arg(long, help_heading = "Payload")]
    pub badsum: bool,
    /// Put exactly this value in the checksum field (e.g. 0, as the original SocketSynergy SYN has);
    /// for SCTP the 32-bit field as the output and Wireshark show it (its bytes in packet order).
    #[arg(long, conflicts_with = "badsum", help_heading = "Payload")]
    pub checksum: Option<String>,

    /// How many times to send the probe.
    #[arg(short = 'c', long, default_value = "1", help_heading = "Sending")]
    pub count: String,
    /// Pause between probes: 500ms, 1s, 250us, 1m (minute), 1h, or seconds as a number (0.2).
    #[arg(long, conflicts_with = "rate", help_heading = "Sending")]
    pub delay: Option<String>,
    /// Probes per second, or `max`.
    #[arg(long, help_heading = "Sending")]
    pub rate: Option<String>,
    /// Sending threads, each with its own socket, 1-64. Default: one per core, as many as help
    /// (one for --watch, one per 1024 probes, no more than --rate needs at about 300000 probes/s
    /// each). The threads send blocks of consecutive probes side by side (--threads 1 sends in
    /// the sweep's order); lines and pcap records keep the probes' order.
    #[arg(long, value_name = "N", help_heading = "Sending")]
    pub threads: Option<String>,
    /// No line per probe: only the summary (and the pcap, if asked for). Runs of more than 1000
    /// probes are quiet unless --each-probe is given.
    #[arg(short, long, conflicts_with = "each_probe", help_heading = "Output")]
    pub quiet: bool,
    /// A line (or JSON event) per probe even in a run of more than 1000 probes.
    #[arg(long, help_heading = "Output")]
    pub each_probe: bool,
    /// Send a run of more than 100,000,000 probes (without it such a run is refused, with its
    /// size and how long it would take).
    #[arg(long, help_heading = "Sending")]
    pub yes: bool,
    /// Send on this interface at the link layer (AF_PACKET, qdisc bypassed) instead of through
    /// the IPv6 stack; needs --next-hop-mac.
    #[arg(long, requires = "next_hop_mac", help_heading = "Sending")]
    pub link: Option<String>,
    /// Send through the IPv6 stack on this interface only (SO_BINDTODEVICE), whatever the
    /// routing table prefers; the source address defaults to the one the kernel picks there.
    #[arg(
        short = 'e',
        long,
        value_name = "IFACE",
        conflicts_with = "link",
        help_heading = "Sending"
    )]
    pub interface: Option<String>,
    /// The next hop's MAC address for --link (e.g. from `ip -6 neigh`).
    #[arg(long, requires = "link", help_heading = "Sending")]
    pub next_hop_mac: Option<String>,
    /// Build, print and write the pcap, but send nothing (needs no privilege).
    #[arg(long, conflicts_with = "watch", help_heading = "Sending")]
    pub dry_run: bool,
    /// After sending, report for this long what became of each probe (e.g. 1s): where it expired,
    /// or who reset, aborted or rejected it.
    #[arg(long, help_heading = "Sending")]
    pub watch: Option<String>,
    /// The local site, for --watch: replies from outside it that reject the probe mean the hop
    /// limit is too high; it must leave the destination out [default: the /56 of the source
    /// address, longer if that holds the destination].
    #[arg(long, help_heading = "Sending")]
    pub site_prefix: Option<String>,

    /// One JSON object per event on stdout (JSON Lines) instead of human lines.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// Write every probe to this pcap file (link type raw IPv6).
    #[arg(long, help_heading = "Output")]
    pub pcap: Option<PathBuf>,
    /// Also print the probe's bytes in hex.
    #[arg(long, help_heading = "Output")]
    pub hex: bool,
}

/// Which part of a flag's text a sweepable field reads: `--timestamp TSVAL[:TSECR]` and
/// `--streams OUT:IN` (or N for both) hold two fields each.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    Whole,
    /// Before the ':', or the whole text without one.
    Before,
    /// After the ':'; without one, this text.
    After(&'static str),
    /// After the ':'; without one, the whole text again.
    AfterOrSame,
}

impl Part {
    pub fn of(self, text: &str) -> &str {
        match (self, text.split_once(':')) {
            (Part::Whole, _) => text,
            (Part::Before, Some((x, _))) => x,
            (Part::Before, None) => text,
            (Part::After(_) | Part::AfterOrSame, Some((_, y))) => y,
            (Part::After(absent), None) => absent,
            (Part::AfterOrSame, None) => text,
        }
    }
}

/// Where a sweepable field's text comes from: its own flag, made from the table, or one of the
/// flags `probe` shares with other commands (the hop limit and the ports).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// `--LONG`, made from this row (the first row of a flag carries its help).
    Flag {
        long: &'static str,
        /// The value's name in help (`SEQ`).
        value: &'static str,
        help: &'static str,
        heading: &'static str,
    },
    HopLimit,
    Sport,
    Dport,
}

/// What a sweepable field holds when its flag is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// This value.
    Value(u64),
    /// A value drawn at random within the field's bounds, for each run.
    Random,
    /// Not set: the field is left out of the probe (a TCP option) or follows from the rest (the
    /// IPv6 payload length); the words say which, in help.
    Unset(&'static str),
    /// The default of the shared flag it comes from (`--hop-limit`, the ports).
    OfFlag,
}

impl std::fmt::Display for Initial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Initial::Value(v) => write!(f, "{v}"),
            Initial::Random => f.write_str("random"),
            Initial::Unset(words) => f.write_str(words),
            Initial::OfFlag => Ok(()),
        }
    }
}

/// What else a probe needs for a sweepable field to be sent as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// An INIT chunk (`--chunk init`): the field lives there.
    Init,
    /// Sending at the link layer (`--link`), or `--dry-run`: on the raw socket the kernel
    /// rewrites the field.
    Link,
}

/// One sweepable numeric field of `probe`: where its text comes from, which part of it, its
/// bounds, the protocols it applies to, its value when not given, what else it needs, and the
/// wire field it sets. The one table: the flags and their help are made from it, and `config`
/// parses each field by it, once, and builds the probe's defaults from it. Adding a sweepable
/// field is a row here and the field in `wire::patch` (its place in the packet and in
/// `Variant::apply`).
#[derive(Debug, Clone, Copy)]
pub struct Sweepable {
    pub field: SweepField,
    pub source: Source,
    pub part: Part,
    pub min: u64,
    pub max: u64,
    pub protos: &'static [Proto],
    pub initial: Initial,
    pub needs: Needs,
}

use crate::wire::patch::SweepField;

impl Sweepable {
    /// The flag's name as users write it (`--seq`).
    pub fn flag(&self) -> &'static str {
        match self.source {
            Source::Flag { long, .. } => long,
            Source::HopLimit => "--hop-limit",
            Source::Sport => "--sport",
            Source::Dport => "--dport",
        }
    }

    /// Its text among the raw arguments, if given.
    pub fn text<'a>(&self, a: &'a ProbeArgs) -> Option<&'a str> {
        match self.source {
            Source::Flag { long, .. } => a.sweep.get(long),
            Source::HopLimit => Some(&a.hop_limit),
            Source::Sport => Some(&a.endpoint.sport),
            Source::Dport => Some(&a.endpoint.dport),
        }
    }
}

const ANY: &[Proto] = &Proto::ALL;
const TCP: &[Proto] = &[Proto::Tcp];
const SCTP: &[Proto] = &[Proto::Sctp];
const U8: u64 = u8::MAX as u64;
const U16: u64 = u16::MAX as u64;
const U32: u64 = u32::MAX as u64;

const fn row(
    field: SweepField,
    source: Source,
    (min, max): (u64, u64),
    protos: &'static [Proto],
    initial: Initial,
) -> Sweepable {
    Sweepable {
        field,
        source,
        part: Part::Whole,
        min,
        max,
        protos,
        initial,
        needs: Needs::Nothing,
    }
}

/// A flag of its own; its help is completed from the table ("[sweep; default: ...]").
const fn flag(
    long: &'static str,
    value: &'static str,
    heading: &'static str,
    help: &'static str,
) -> Source {
    Source::Flag {
        long,
        value,
        help,
        heading,
    }
}

const fn needs(mut r: Sweepable, needs: Needs) -> Sweepable {
    r.needs = needs;
    r
}

const fn part(mut r: Sweepable, part: Part) -> Sweepable {
    r.part = part;
    r
}

/// Every sweepable field, in the order they vary (that of `wire::patch::SweepField`).
pub const SWEEPABLE: [Sweepable; 20] = {
    use Initial::{OfFlag, Random, Unset, Value};
    use SweepField as F;
    [
        row(F::HopLimit, Source::HopLimit, (0, U8), ANY, OfFlag),
        row(
            F::TrafficClass,
            flag(
                "--traffic-class",
                "TRAFFIC_CLASS",
                "IPv6",
                "IPv6 traffic class (0-255; DSCP << 2 | ECN)",
            ),
            (0, U8),
            ANY,
            Value(0),
        ),
        row(
            F::FlowLabel,
            flag("--flow", "FLOW", "IPv6", "IPv6 flow label (20 bits)"),
            (0, crate::wire::ipv6::FlowLabel::MAX as u64),
            ANY,
            Value(0),
        ),
        // RFC 8200 §3; Linux rewrites it on the raw socket (`__ip6_local_out`).
        needs(
            row(
                F::PayloadLen,
                flag(
                    "--payload-length",
                    "LEN",
                    "IPv6",
                    "IPv6 payload length written in the header instead of the real one; needs --link (the kernel rewrites it on the raw socket) or --dry-run",
                ),
                (0, U16),
                ANY,
                Unset("the real length"),
            ),
            Needs::Link,
        ),
        row(F::Sport, Source::Sport, (1, U16), ANY, OfFlag),
        row(F::Dport, Source::Dport, (1, U16), ANY, OfFlag),
        row(
            F::Seq,
            flag("--seq", "SEQ", "TCP", "TCP sequence number"),
            (0, U32),
            TCP,
            Random,
        ),
        row(
            F::Ack,
            flag("--ack", "ACK", "TCP", "TCP acknowledgment number"),
            (0, U32),
            TCP,
            Value(0),
        ),
        row(
            F::Window,
            flag("--win", "WIN", "TCP", "TCP window"),
            (0, U16),
            TCP,
            Value(65535),
        ),
        row(
            F::Urgent,
            flag("--urgent", "URGENT", "TCP", "TCP urgent pointer"),
            (0, U16),
            TCP,
            Value(0),
        ),
        row(
            F::Mss,
            flag("--mss", "MSS", "TCP", "TCP maximum segment size option"),
            (0, U16),
            TCP,
            Unset("none"),
        ),
        // RFC 7323 §2.3: a shift count above 14 is treated as 14.
        row(
            F::WindowScale,
            flag(
                "--wscale",
                "WSCALE",
                "TCP",
                "TCP window scale option (shift count 0-14)",
            ),
            (0, 14),
            TCP,
            Unset("none"),
        ),
        part(
            row(
                F::TsVal,
                flag(
                    "--timestamp",
                    "TSVAL[:TSECR]",
                    "TCP",
                    "TCP timestamps option: TSVAL or TSVAL:TSECR",
                ),
                (0, U32),
                TCP,
                Unset("none"),
            ),
            Part::Before,
        ),
        part(
            row(
                F::TsEcr,
                flag("--timestamp", "TSVAL[:TSECR]", "TCP", ""),
                (0, U32),
                TCP,
                Unset("none"),
            ),
            Part::After("0"),
        ),
        row(
            F::VerificationTag,
            flag(
                "--tag",
                "TAG",
                "SCTP",
                "SCTP verification tag of the common header (0 is what the punch and an INIT need)",
            ),
            (0, U32),
            SCTP,
            Value(0),
        ),
        // RFC 9260 §3.3.2: the initiate tag is never 0.
        needs(
            row(
                F::InitTag,
                flag(
                    "--init-tag",
                    "INIT_TAG",
                    "SCTP",
                    "SCTP INIT initiate tag, non-zero",
                ),
                (1, U32),
                SCTP,
                Random,
            ),
            Needs::Init,
        ),
        needs(
            row(
                F::ARwnd,
                flag(
                    "--a-rwnd",
                    "A_RWND",
                    "SCTP",
                    "SCTP INIT advertised receiver window",
                ),
                (0, U32),
                SCTP,
                Value(65535),
            ),
            Needs::Init,
        ),
        needs(
            part(
                row(
                    F::OutStreams,
                    flag(
                        "--streams",
                        "OUT[:IN]",
                        "SCTP",
                        "SCTP INIT stream counts: OUT:IN, or one number for both",
                    ),
                    (1, U16),
                    SCTP,
                    Value(10),
                ),
                Part::Before,
            ),
            Needs::Init,
        ),
        needs(
            part(
                row(
                    F::InStreams,
                    flag("--streams", "OUT[:IN]", "SCTP", ""),
                    (1, U16),
                    SCTP,
                    Value(65535),
                ),
                Part::AfterOrSame,
            ),
            Needs::Init,
        ),
        needs(
            row(
                F::Tsn,
                flag("--tsn", "TSN", "SCTP", "SCTP INIT initial TSN"),
                (0, U32),
                SCTP,
                Random,
            ),
            Needs::Init,
        ),
    ]
};

/// The help of a table flag: its words, then "[sweep; default: ...]" from its rows (a flag of
/// two fields says "each part" and joins the two defaults with ':' where they differ).
pub fn sweep_help(long: &str) -> String {
    let rows: Vec<&Sweepable> = SWEEPABLE.iter().filter(|s| s.flag() == long).collect();
    let words = rows
        .iter()
        .find_map(|s| match s.source {
            Source::Flag { help, .. } if !help.is_empty() => Some(help),
            _ => None,
        })
        .unwrap_or_default();
    let mut defaults: Vec<String> = rows.iter().map(|s| s.initial.to_string()).collect();
    defaults.dedup();
    let each = if rows.len() > 1 { ", each part" } else { "" };
    format!("{words} [sweep{each}; default: {}]", defaults.join(":"))
}

/// The values of the flags made from `SWEEPABLE`, by flag (`--seq`).
#[derive(Debug, Clone, Default)]
pub struct SweepArgs {
    values: std::collections::BTreeMap<&'static str, String>,
}

impl SweepArgs {
    /// The text given to `--LONG`, if any.
    pub fn get(&self, long: &str) -> Option<&str> {
        self.values.get(long).map(String::as_str)
    }

    /// The table's own flags, each once (a flag of two fields is made from its first row).
    fn flags() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
        SWEEPABLE.iter().filter_map(|s| match s.source {
            Source::Flag {
                long,
                value,
                help,
                heading,
            } if !help.is_empty() => Some((long, value, heading)),
            _ => None,
        })
    }
}

impl clap::FromArgMatches for SweepArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut s = SweepArgs::default();
        s.update_from_arg_matches(m)?;
        Ok(s)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for (long, ..) in Self::flags() {
            if let Some(v) = m.get_one::<String>(long.trim_start_matches('-')) {
                self.values.insert(long, v.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for SweepArgs {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for (long, value, heading) in Self::flags() {
            let name = long.trim_start_matches('-');
            cmd = cmd.arg(
                clap::Arg::new(name)
                    .long(name)
                    .value_name(value)
                    .help(sweep_help(long))
                    .help_heading(heading)
                    .action(clap::ArgAction::Set),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `hops`: the endpoint of `probe` and the trace's limits.
#[derive(Debug, Args)]
pub struct HopsArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Highest hop limit probed.
    #[arg(long, default_value = "30")]
    pub max_hops: String,
    /// How long to wait for each hop limit's reply before the next is sent.
    #[arg(long, default_value = "500ms")]
    pub wait: String,
    /// Trace through this interface only (SO_BINDTODEVICE), whatever the routing table prefers.
    #[arg(short = 'e', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Stop after this many hop limits in a row got no reply (each costs --wait).
    #[arg(long, default_value = "3")]
    pub max_silent: String,
    /// The local site; it must leave the destination out [default: the /56 of the source
    /// address, longer if that holds the destination].
    #[arg(long)]
    pub site_prefix: Option<String>,
    /// The hops and the recommendation as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write every probe of the trace to this pcap file (link type raw IPv6).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

/// `daemon`: where it listens and its policy.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Unix socket path [default: /run/synergy-craft/synergy.sock; clients read $SYNERGY_DAEMON_SOCKET].
    /// Under systemd socket activation the passed socket is used instead.
    #[arg(long)]
    pub socket: Option<String>,
    /// Admit members of this group (primary or supplementary): the socket file becomes
    /// root:GROUP mode 660.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Admit this caller uid (repeatable). Without --allow-uid, --allow-gid and --group only root
    /// is admitted.
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// Admit callers in this group, primary or supplementary (repeatable).
    #[arg(long = "allow-gid", value_name = "GID")]
    pub allow_gid: Vec<u32>,
    /// The user the daemon runs as once its sockets are open (a dedicated user is better than
    /// the default: any process of that user may signal the daemon).
    #[arg(long, default_value = "nobody", value_name = "NAME")]
    pub user: String,
    /// Lowest hop limit the daemon sends.
    #[arg(long, default_value = "1")]
    pub min_hop: u8,
    /// Highest hop limit the daemon sends (keep it below the remote firewalls).
    #[arg(long, default_value = "8")]
    pub max_hop: u8,
    /// Requests per second per uid.
    #[arg(long, default_value = "10")]
    pub rate: u32,
    /// Connections one uid may have open at once.
    #[arg(long, default_value = "4", value_name = "N")]
    pub per_uid: usize,
    /// Time a caller has to send its request after connecting (e.g. 500ms, 1s).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub request_timeout: String,
    /// Permissions of the socket file, octal [default: 660 with --group, 666 with only
    /// --allow-uid/--allow-gid (the policy is then the gate), else 600].
    #[arg(long)]
    pub mode: Option<String>,
    /// A conntrack timeout of the local firewalls, PROTO=DURATION (repeatable, e.g. udp=5s): kept
    /// holes are punched again within 1/2 to 3/4 of it [default: Linux's: udp=30s
    /// (nf_conntrack_udp_timeout), tcp=120s, sctp=3s].
    #[arg(long = "conntrack-timeout", value_name = "PROTO=DURATION")]
    pub conntrack_timeout: Vec<String>,
    /// The operator's hop-limit range toward a destination prefix, PREFIX=MIN-MAX (repeatable,
    /// e.g. 2001:db8:2::/48=2-3; host bits are ignored): "auto" chooses within it (the longest
    /// prefix holding the peer),
    /// narrowed by what the route memory learns. Kept in the route memory
    /// ($STATE_DIRECTORY/routes, else /var/lib/synergy-craft/routes).
    #[arg(long = "hop-range", value_name = "PREFIX=MIN-MAX")]
    pub hop_range: Vec<String>,
}
