//! The ADB transport: 24-byte packets over TCP, one connection per adb
//! server, multiplexing streams with per-stream flow control (one WRTE in
//! flight each way, acknowledged by OKAY).
use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{Shutdown, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        mpsc::{Receiver, Sender, channel},
    },
};

use crate::{
    daemon::{Daemon, Link, Mode},
    util::{lock, log, random},
};

/// Packs a four-letter command into its little-endian wire value.
const fn cmd(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

/// Connect (handshake) command.
const CNXN: u32 = cmd(b"CNXN");
/// Authentication command.
const AUTH: u32 = cmd(b"AUTH");
/// Opens a stream to a service.
const OPEN: u32 = cmd(b"OPEN");
/// Stream ready / write acknowledged.
const OKAY: u32 = cmd(b"OKAY");
/// Stream data.
const WRTE: u32 = cmd(b"WRTE");
/// Stream closed.
const CLSE: u32 = cmd(b"CLSE");

/// Protocol version answered in CNXN (the one that may skip checksums).
const VERSION: u32 = 0x0100_0001;
/// Features announced in the banner.
const FEATURES: &str = "shell_v2,cmd,fixed_push_mkdir";
/// Largest payload this stand-in accepts.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest payload this stand-in reads off the wire (the server may use 1 MiB).
const READ_LIMIT: usize = 16 * 1024 * 1024;
/// AUTH arg0: a token to sign.
const AUTH_TOKEN: u32 = 1;
/// AUTH arg0: a signature of the token.
const AUTH_SIGNATURE: u32 = 2;

/// One received packet.
struct Packet {
    /// Command word.
    command: u32,
    /// First argument.
    arg0: u32,
    /// Second argument.
    arg1: u32,
    /// Payload.
    data: Vec<u8>,
}

/// Reads one packet; `Ok(None)` at a clean end of stream.
fn read_packet(r: &mut impl Read) -> io::Result<Option<Packet>> {
    let mut h = [0u8; 24];
    let mut got = 0;
    while got < h.len() {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (command, arg0, arg1, len, magic) = (word(0), word(4), word(8), word(12), word(20));
    if magic != !command {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad packet magic",
        ));
    }
    let len = len as usize;
    if len > READ_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized packet",
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some(Packet {
        command,
        arg0,
        arg1,
        data,
    }))
}

/// Kills a command's process group when its stream goes away.
pub struct Hangup {
    /// Process group of the running command, 0 once it is being reaped.
    pgid: Mutex<i32>,
}

impl Hangup {
    /// A hangup with no process yet.
    fn new() -> Arc<Self> {
        Arc::new(Self {
            pgid: Mutex::new(0),
        })
    }

    /// Records the process group to signal.
    pub fn arm(&self, pgid: i32) {
        *lock(&self.pgid) = pgid;
    }

    /// Forgets the process group (before it is reaped, so that a reused pid
    /// is never signalled).
    pub fn disarm(&self) {
        *lock(&self.pgid) = 0;
    }

    /// Sends SIGHUP to the process group, then SIGKILL if it is still being
    /// waited for three seconds later.
    pub fn hup(self: &Arc<Self>) {
        let pgid = *lock(&self.pgid);
        if pgid <= 0 {
            return;
        }
        log(format_args!("hangup: SIGHUP to process group {pgid}"));
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGHUP) };
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            let g = lock(&me.pgid);
            if *g == pgid {
                log(format_args!("hangup: SIGKILL to process group {pgid}"));
                // SAFETY: as above; the group is still unreaped (pgid set).
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        });
    }
}

/// A service started on a newly opened stream: it runs in a thread of its
/// own, with both halves of the stream and the stream's hangup.
pub type Runner = Box<dyn FnOnce(Inbound, Outbound, Arc<Hangup>) + Send>;

/// The services: a service name's [`Runner`], `None` for one this stand-in
/// lacks (refused with CLSE). Given to [`serve`] by main.rs: the services
/// are built on this module's streams, so the transport must not name them.
pub type Services = fn(&str) -> Option<Runner>;

/// The connection's view of one open stream.
struct StreamHandle {
    /// Payloads of WRTE packets from the server.
    data: Sender<Vec<u8>>,
    /// One message per OKAY from the server.
    ack: Sender<()>,
    /// Signals the stream's command when it is closed.
    hangup: Arc<Hangup>,
}

/// One TCP connection from an adb server.
pub struct Conn {
    /// Peer address, for the log.
    peer: String,
    /// The socket, for writing (whole packets under the lock).
    writer: Mutex<TcpStream>,
    /// Negotiated payload limit.
    max_payload: AtomicUsize,
    /// Open streams by local id.
    streams: Mutex<HashMap<u32, StreamHandle>>,
    /// Next local stream id.
    next_local: AtomicU32,
    /// Set once the handshake accepted the server (streams allowed).
    online: AtomicBool,
    /// Daemon-wide state.
    pub daemon: Arc<Daemon>,
    /// Resolves OPEN's service names.
    services: Services,
}

impl Conn {
    /// Sends one packet.
    fn send(&self, command: u32, arg0: u32, arg1: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("payload too big"))?;
        let sum = data.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
        let mut buf = Vec::with_capacity(24 + data.len());
        for w in [command, arg0, arg1, len, sum, !command] {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf.extend_from_slice(data);
        lock(&self.writer).write_all(&buf)
    }

    /// The banner for our CNXN.
    fn banner(&self) -> String {
        let d = &self.daemon;
        let kind = match d.opts.mode {
            Mode::Recovery => "recovery",
            Mode::Sideload => "sideload",
            _ => "device",
        };
        format!(
            "{kind}::ro.product.name={};ro.product.model={};ro.product.device={};features={}",
            d.prop("ro.product.name", "rmw"),
            d.prop("ro.product.model", "rmw-adbd"),
            d.prop("ro.product.device", "rmw"),
            FEATURES
        )
    }

    /// Sends a fresh AUTH TOKEN.
    fn send_token(&self) -> io::Result<()> {
        let mut token = [0u8; 20];
        random(&mut token);
        self.send(AUTH, AUTH_TOKEN, 0, &token)
    }

    /// Opens a stream for `OPEN(remote, service)`.
    fn open(self: &Arc<Self>, remote: u32, service: &str) -> io::Result<()> {
        let Some(run) = (self.services)(service) else {
            log(format_args!(
                "{}: refused unknown service {service:?}",
                self.peer
            ));
            return self.send(CLSE, 0, remote, &[]);
        };
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        let (data_tx, data_rx) = channel();
        let (ack_tx, ack_rx) = channel();
        let hangup = Hangup::new();
        lock(&self.streams).insert(
            local,
            StreamHandle {
                data: data_tx,
                ack: ack_tx,
                hangup: Arc::clone(&hangup),
            },
        );
        log(format_args!(
            "{}: stream {local} opened {service:?}",
            self.peer
        ));
        self.send(OKAY, local, remote, &[])?;
        let inbound = Inbound {
            conn: Arc::clone(self),
            local,
            remote,
            data: data_rx,
        };
        let outbound = Outbound {
            conn: Arc::clone(self),
            local,
            remote,
            ack: ack_rx,
        };
        std::thread::spawn(move || run(inbound, outbound, hangup));
        Ok(())
    }

    /// Handles one packet from the server.
    fn handle(self: &Arc<Self>, p: Packet) -> io::Result<()> {
        match p.command {
            CNXN => {
                let theirs = p.arg1 as usize;
                self.max_payload
                    .store(theirs.clamp(4096, MAX_PAYLOAD), Ordering::Relaxed);
                log(format_args!(
                    "{}: CNXN version {:#x} max {} {:?}",
                    self.peer,
                    p.arg0,
                    p.arg1,
                    String::from_utf8_lossy(&p.data).trim_end_matches('\0')
                ));
                match self.daemon.opts.mode {
                    Mode::Offline => Ok(()),
                    Mode::Unauthorized => self.send_token(),
                    _ => {
                        self.online.store(true, Ordering::Relaxed);
                        let b = self.banner();
                        self.send(CNXN, VERSION, MAX_PAYLOAD as u32, b.as_bytes())
                    }
                }
            }
            AUTH => {
                log(format_args!("{}: AUTH type {}", self.peer, p.arg0));
                if self.daemon.opts.mode == Mode::Unauthorized && p.arg0 == AUTH_SIGNATURE {
                    self.send_token()
                } else {
                    Ok(())
                }
            }
            OPEN if self.online.load(Ordering::Relaxed) => {
                let name = String::from_utf8_lossy(&p.data);
                self.open(p.arg0, name.trim_end_matches('\0'))
            }
            OPEN => self.send(CLSE, 0, p.arg0, &[]),
            OKAY => {
                if let Some(s) = lock(&self.streams).get(&p.arg1) {
                    let _ = s.ack.send(());
                }
                Ok(())
            }
            WRTE => {
                if let Some(s) = lock(&self.streams).get(&p.arg1) {
                    let _ = s.data.send(p.data);
                }
                Ok(())
            }
            CLSE => {
                let s = lock(&self.streams).remove(&p.arg1);
                if let Some(s) = s {
                    log(format_args!(
                        "{}: stream {} closed by host",
                        self.peer, p.arg1
                    ));
                    s.hangup.hup();
                }
                Ok(())
            }
            other => {
                log(format_args!("{}: ignored packet {other:#x}", self.peer));
                Ok(())
            }
        }
    }
}

impl Link for Conn {
    /// Cuts the TCP connection (readers and writers see it at once).
    fn drop_now(&self) {
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }
}

/// Serves one TCP connection until it ends, registered as `id`, running
/// the streams' services with `services`.
pub fn serve(daemon: Arc<Daemon>, id: u64, sock: TcpStream, services: Services) {
    let peer = sock
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let (mut reader, writer) = match sock.try_clone() {
        Ok(w) => (sock, w),
        Err(e) => {
            log(format_args!("{peer}: cannot clone socket: {e}"));
            return;
        }
    };
    let _ = reader.set_nodelay(true);
    let conn = Arc::new(Conn {
        peer: peer.clone(),
        writer: Mutex::new(writer),
        max_payload: AtomicUsize::new(4096),
        streams: Mutex::new(HashMap::new()),
        next_local: AtomicU32::new(1),
        online: AtomicBool::new(false),
        daemon: Arc::clone(&daemon),
        services,
    });
    daemon.register(id, Arc::clone(&conn) as Arc<dyn Link>);
    log(format_args!(
        "{peer}: connected (mode {:?})",
        daemon.opts.mode
    ));
    let end = loop {
        match read_packet(&mut reader) {
            Ok(Some(p)) => {
                if let Err(e) = conn.handle(p) {
                    break format!("write failed: {e}");
                }
            }
            Ok(None) => break "closed by host".to_owned(),
            Err(e) => break format!("read failed: {e}"),
        }
    };
    log(format_args!("{peer}: connection ended ({end})"));
    conn.drop_now();
    daemon.unregister(id);
    let streams: Vec<StreamHandle> = lock(&conn.streams).drain().map(|(_, s)| s).collect();
    for s in streams {
        s.hangup.hup();
    }
}

/// The receiving half of a stream, for a service.
pub struct Inbound {
    /// The connection.
    conn: Arc<Conn>,
    /// Our id.
    local: u32,
    /// The server's id.
    remote: u32,
    /// WRTE payloads.
    data: Receiver<Vec<u8>>,
}

impl Inbound {
    /// The next WRTE payload, `None` once the stream is closed. Call
    /// [`Inbound::okay`] when it is consumed.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.data.recv().ok()
    }

    /// Acknowledges the last payload (lets the server send the next one).
    pub fn okay(&self) {
        let _ = self.conn.send(OKAY, self.local, self.remote, &[]);
    }
}

/// The sending half of a stream, for a service.
pub struct Outbound {
    /// The connection.
    pub conn: Arc<Conn>,
    /// Our id.
    local: u32,
    /// The server's id.
    remote: u32,
    /// OKAYs from the server.
    ack: Receiver<()>,
}

impl Outbound {
    /// Largest payload of one WRTE.
    pub fn max_payload(&self) -> usize {
        self.conn.max_payload.load(Ordering::Relaxed)
    }

    /// Sends `data` in WRTEs, waiting for each one's OKAY.
    pub fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(self.max_payload()) {
            self.conn.send(WRTE, self.local, self.remote, chunk)?;
            self.ack
                .recv()
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "stream closed"))?;
        }
        Ok(())
    }

    /// Closes the stream (if the server has not already).
    pub fn close(&self) {
        let s = lock(&self.conn.streams).remove(&self.local);
        if s.is_some() {
            let _ = self.conn.send(CLSE, self.local, self.remote, &[]);
        }
    }

    /// This stream's id, for the log.
    pub fn id(&self) -> u32 {
        self.local
    }
}
