//! What a plugin instance can touch: a WASI context that grants nothing (no files, no
//! network, no environment, no arguments, a wall clock frozen at the epoch), a memory
//! cap enforced by trapping on growth, and stdout/stderr captured line by line into the
//! plugin's log ring instead of the broker's.
//!
//! Monotonic time and randomness stay available: neither reaches outside the process,
//! and Rust's standard library needs randomness to seed its hash maps.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Lines kept per plugin log.
const LOG_LINES: usize = 1000;
/// Longest line kept; longer ones are cut.
const LOG_LINE_BYTES: usize = 1024;

/// One line of a plugin's log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `stdout`, `stderr` or `host` (events the broker records about the plugin).
    pub stream: &'static str,
    /// The text.
    pub line: String,
}

/// The last lines a plugin (and the host about it) wrote; shared by its instances.
#[derive(Debug, Clone, Default)]
pub struct PluginLog {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
}

impl PluginLog {
    /// Appends one line, dropping the oldest beyond the capacity.
    pub fn push(&self, stream: &'static str, line: &str) {
        let mut line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut lines = self.lines.lock();
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            at_ms: crate::broker::now_ms(),
            stream,
            line,
        });
    }

    /// The most recent `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    fn writer(&self, stream: &'static str) -> LineWriter {
        LineWriter {
            log: self.clone(),
            stream,
            partial: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// Splits a guest's output into lines for the log; never fails, so a chatty plugin
/// cannot trap itself by printing.
#[derive(Clone)]
struct LineWriter {
    log: PluginLog,
    stream: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LineWriter {
    fn write_bytes(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock();
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            self.log.push(self.stream, &String::from_utf8_lossy(&line));
        }
        if partial.len() > LOG_LINE_BYTES {
            let line: Vec<u8> = partial.drain(..).collect();
            self.log.push(self.stream, &String::from_utf8_lossy(&line));
        }
    }
}

impl IsTerminal for LineWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LineWriter {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

/// A wall clock stuck at the Unix epoch: plugins must not depend on the time of day
/// (records carry their own timestamps).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// The data of one plugin instance's store.
#[allow(missing_debug_implementations)] // WasiCtx has no Debug; nothing to show anyway.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The instance's resource limits (memory cap).
    pub limits: StoreLimits,
}

impl HostState {
    /// A sandbox whose memory may not exceed `max_memory_bytes`.
    pub fn new(log: &PluginLog, max_memory_bytes: u64) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(log.writer("stdout"))
            .stderr(log.writer("stderr"))
            .wall_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(max_memory_bytes as usize)
            .trap_on_grow_failure(true)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
