//! The fd 3 reader thread: the real-time part of the bridge.
//!
//! Started first, before the model loads, so audio is kept while the model loads. It blocks in
//! `read(2)` on fd 3, turns bytes into samples (carrying an odd trailing byte to the next read),
//! and pushes them into a lock-free SPSC ring ([`rtrb`]). It never allocates, locks or logs per
//! read; samples that do not fit are counted in [`AudioStats::dropped`], never hidden. It is
//! never joined: Asterisk does not close fd 3 at hangup, so the read may never return.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::stat::{fstat, SFlag};

use super::AudioError;

/// The descriptor EAGI hands the child the caller's audio on.
pub const EAGI_AUDIO_FD: RawFd = 3;

/// Ring capacity in samples: 32 s at 16 kHz, 64 s at 8 kHz (1 MiB).
pub const RING_CAPACITY: usize = 512 * 1024;

/// The pipe size asked for with F_SETPIPE_SZ (Asterisk leaves the 64 KiB default: 4 s of slin).
pub const PIPE_SIZE: i32 = 1024 * 1024;

/// Counters shared by the reader and the rest of the bridge. Nanoseconds count from the
/// bridge's start instant; 0 means "not yet".
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Samples read from fd 3.
    pub samples_in: AtomicU64,
    /// Samples that did not fit in the ring.
    pub dropped: AtomicU64,
    /// Successful reads (one per Asterisk frame, unless frames queued up).
    pub reads: AtomicU64,
    /// When the reader thread was ready in its first `read`.
    pub ready_ns: AtomicU64,
    /// When the first bytes arrived.
    pub first_data_ns: AtomicU64,
    /// When the latest bytes arrived.
    pub last_data_ns: AtomicU64,
    /// fd 3 reached end of file (the host closed it).
    pub eof: AtomicBool,
    /// A read error ended the reader.
    pub failed: AtomicBool,
    /// Pipe size after F_SETPIPE_SZ (0 when it could not be read).
    pub pipe_size: AtomicU64,
    /// Stream position the endpointer has listened to (samples), written by the endpointer.
    pub consumed: AtomicU64,
    /// Samples the decoder stage has taken (its backlog is `consumed` less this, roughly).
    pub decoded: AtomicU64,
    /// Samples the endpointer could not hand on because the decoder ring was full.
    pub decoder_dropped: AtomicU64,
}

/// A position on the fd 3 stream: samples read since the call began. Positions, not times,
/// pass between the controller and the endpointer (audio that arrived before a decision may
/// still be in the ring); a bare `u64` here was once taken for milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamPos(pub u64);

impl StreamPos {
    /// The stream's end: everything that will ever arrive.
    pub const END: StreamPos = StreamPos(u64::MAX);

    /// `samples` further on.
    pub fn plus(self, samples: u64) -> StreamPos {
        StreamPos(self.0.saturating_add(samples))
    }
}

/// The consumer side handed to the endpointer thread.
pub struct AudioReader {
    /// The ring's consumer end.
    pub consumer: rtrb::Consumer<i16>,
    /// Counters shared with the reader thread.
    pub stats: Arc<AudioStats>,
    /// Set once by the endpointer thread: the reader unparks it after each push.
    pub waker: Arc<OnceLock<Thread>>,
    /// The bridge's start instant all `*_ns` counters refer to.
    pub t0: Instant,
}

/// Checks that `fd` is an open FIFO and marks it close-on-exec.
pub fn check_audio_fd(fd: RawFd) -> Result<(), AudioError> {
    let st = match fstat(fd) {
        Ok(st) => st,
        Err(nix::Error::EBADF) => return Err(AudioError::NoFd3),
        Err(source) => return Err(AudioError::Fd { op: "fstat", source }),
    };
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFIFO {
        let name = match kind {
            SFlag::S_IFREG => "a regular file",
            SFlag::S_IFCHR => "a character device",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFDIR => "a directory",
            _ => "not a pipe",
        };
        return Err(AudioError::NotAFifo(name));
    }
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|source| AudioError::Fd { op: "fcntl(F_SETFD, FD_CLOEXEC)", source })?;
    Ok(())
}

/// Checks the audio fd (fd 3, owned since `main`) and starts the reader thread on it, which
/// owns it from then on. The ring's consumer comes back.
pub fn start(fd: OwnedFd, t0: Instant) -> Result<AudioReader, AudioError> {
    check_audio_fd(fd.as_raw_fd())?;
    let stats = Arc::new(AudioStats::default());
    // A bigger pipe holds more audio should the reader ever be descheduled; failure is fine.
    let raw = fd.as_raw_fd();
    let size = fcntl(raw, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
        .or_else(|_| fcntl(raw, FcntlArg::F_SETPIPE_SZ(256 * 1024)))
        .or_else(|_| fcntl(raw, FcntlArg::F_GETPIPE_SZ))
        .unwrap_or(0);
    stats.pipe_size.store(size.max(0) as u64, Ordering::Relaxed);
    // The File owns it for the rest of the process (the thread is never joined).
    let file = File::from(fd);
    let (producer, consumer) = rtrb::RingBuffer::new(RING_CAPACITY);
    let waker: Arc<OnceLock<Thread>> = Arc::new(OnceLock::new());
    let (s, w) = (stats.clone(), waker.clone());
    std::thread::Builder::new()
        .name("fd3-reader".into())
        .spawn(move || read_loop(file, producer, &s, &w, t0))
        .map_err(|e| AudioError::Fd { op: "spawning the reader thread", source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)) })?;
    Ok(AudioReader { consumer, stats, waker, t0 })
}

fn ns_since(t0: Instant) -> u64 {
    (t0.elapsed().as_nanos() as u64).max(1)
}

/// Converts `bytes` (host byte order) to samples, with `carry` holding an odd byte between
/// calls. Returns the number of samples written to `out`.
///
/// ```
/// use asr_bridge::audio::reader::bytes_to_samples;
/// let mut carry = None;
/// let mut out = [0i16; 4];
/// let a = 1000i16.to_ne_bytes();
/// let b = (-2i16).to_ne_bytes();
/// assert_eq!(bytes_to_samples(&[a[0], a[1], b[0]], &mut carry, &mut out), 1);
/// assert_eq!(bytes_to_samples(&[b[1]], &mut carry, &mut out[1..]), 1);
/// assert_eq!(out[..2], [1000, -2]);
/// ```
pub fn bytes_to_samples(bytes: &[u8], carry: &mut Option<u8>, out: &mut [i16]) -> usize {
    let mut n = 0;
    let mut rest = bytes;
    if let Some(lo) = *carry {
        if let Some((&hi, tail)) = rest.split_first() {
            out[n] = i16::from_ne_bytes([lo, hi]);
            n += 1;
            *carry = None;
            rest = tail;
        }
    }
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        out[n] = i16::from_ne_bytes([p[0], p[1]]);
        n += 1;
    }
    if let [b] = pairs.remainder() {
        *carry = Some(*b);
    }
    n
}

fn read_loop(mut file: File, mut producer: rtrb::Producer<i16>, stats: &AudioStats, waker: &OnceLock<Thread>, t0: Instant) {
    let mut buf = [0u8; 16 * 1024];
    let mut samples = [0i16; 8 * 1024 + 1];
    let mut carry: Option<u8> = None;
    stats.ready_ns.store(ns_since(t0), Ordering::Relaxed);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => {
                stats.eof.store(true, Ordering::Release);
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                stats.failed.store(true, Ordering::Release);
                break;
            }
        };
        let now = ns_since(t0);
        if stats.first_data_ns.load(Ordering::Relaxed) == 0 {
            stats.first_data_ns.store(now, Ordering::Relaxed);
        }
        let count = bytes_to_samples(&buf[..n], &mut carry, &mut samples);
        let fit = producer.slots().min(count);
        if fit > 0 {
            if let Ok(chunk) = producer.write_chunk_uninit(fit) {
                chunk.fill_from_iter(samples[..fit].iter().copied());
            }
        }
        stats.dropped.fetch_add((count - fit) as u64, Ordering::Relaxed);
        stats.samples_in.fetch_add(count as u64, Ordering::Relaxed);
        stats.reads.fetch_add(1, Ordering::Relaxed);
        stats.last_data_ns.store(now, Ordering::Release);
        if let Some(t) = waker.get() {
            t.unpark();
        }
    }
    if let Some(t) = waker.get() {
        t.unpark();
    }
}
