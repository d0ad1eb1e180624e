//! Where a guest's standard streams go: the caller's files and pipes, or this process's.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe::Receiver;
use wasmtime_wasi::cli::{AsyncStdoutStream, InputFile, IsTerminal, OutputFile, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::WasiCtxBuilder;

use crate::error::{Error, Result};
use crate::sys;

/// One standard stream of a guest.
#[derive(Debug, Default)]
pub enum StdioStream {
    /// Share this process's stream.
    Inherit,
    /// Nothing: reads see end-of-file, writes are discarded.
    #[default]
    Null,
    /// A file, pipe or FIFO handed in by the caller (containerd's FIFOs, for instance).
    /// Pipes and FIFOs are driven without blocking, so a guest waiting on one can still
    /// be killed.
    File(File),
}

/// The three standard streams of a guest.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Standard input.
    pub stdin: StdioStream,
    /// Standard output.
    pub stdout: StdioStream,
    /// Standard error.
    pub stderr: StdioStream,
}

impl Stdio {
    /// All three streams inherited from this process.
    pub fn inherit() -> Self {
        Self {
            stdin: StdioStream::Inherit,
            stdout: StdioStream::Inherit,
            stderr: StdioStream::Inherit,
        }
    }
}

/// Output buffered for a pipe before the guest is made to wait.
const PIPE_BUDGET: usize = 64 * 1024;

fn io_err(context: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: context.to_owned(),
        source,
    }
}

/// Where the engine itself writes a trap message: the guest's stderr.
#[derive(Debug)]
pub(crate) enum ErrSink {
    Inherit,
    Null,
    File(File),
}

impl ErrSink {
    pub(crate) fn write_line(&mut self, line: &str) {
        use std::io::Write;
        let _ = match self {
            ErrSink::Inherit => writeln!(io::stderr(), "{line}"),
            ErrSink::Null => Ok(()),
            ErrSink::File(f) => writeln!(f, "{line}"),
        };
    }
}

/// Hands the streams to the WASI context; must run inside the tokio runtime.
/// Returns a second handle on stderr for the engine's own messages.
pub(crate) fn install(stdio: Stdio, builder: &mut WasiCtxBuilder) -> Result<ErrSink> {
    match stdio.stdin {
        StdioStream::Inherit => {
            builder.inherit_stdin();
        }
        StdioStream::Null => {}
        StdioStream::File(f) if sys::is_fifo(&f) => {
            let rx = Receiver::from_file(f).map_err(io_err("stdin pipe"))?;
            builder.stdin(PipeStdin(Arc::new(rx)));
        }
        StdioStream::File(f) => {
            builder.stdin(InputFile::new(f));
        }
    }
    install_out(stdio.stdout, builder, Out::Stdout)?;
    let sink = match &stdio.stderr {
        StdioStream::Inherit => ErrSink::Inherit,
        StdioStream::Null => ErrSink::Null,
        StdioStream::File(f) => ErrSink::File(f.try_clone().map_err(io_err("stderr"))?),
    };
    install_out(stdio.stderr, builder, Out::Stderr)?;
    Ok(sink)
}

/// Most bytes one read of a stdin pipe returns (as wasmtime-wasi's own streams).
const MAX_READ: usize = 64 * 1024;

/// A guest's stdin on a pipe or FIFO, read only when the guest reads. wasmtime-wasi's
/// `AsyncStdinStream` starts a reader task holding a 64 KiB buffer for every guest, even
/// one that never reads: in a shim holding hundreds of guests that was most of each one's
/// memory. Every handle the guest opens shares the one pipe, so all of them see its
/// progress.
#[derive(Clone)]
struct PipeStdin(Arc<Receiver>);

impl PipeStdin {
    /// Reads what the pipe holds now, up to `size` bytes: empty when nothing is there yet.
    fn read_now(&self, size: usize) -> StreamResult<Bytes> {
        let mut buf = BytesMut::zeroed(size.min(MAX_READ));
        match self.0.try_read(&mut buf) {
            // A zero-byte request reads nothing; only an empty read of a real request is
            // end-of-file.
            Ok(0) if !buf.is_empty() => Err(StreamError::Closed),
            Ok(n) => {
                buf.truncate(n);
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(StreamError::LastOperationFailed(e.into())),
        }
    }
}

impl IsTerminal for PipeStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for PipeStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for PipeStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.read_now(size)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeStdin {
    async fn ready(&mut self) {
        // An error is reported by the read that follows.
        let _ = self.0.readable().await;
    }
}

impl AsyncRead for PipeStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: try_read cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Out {
    Stdout,
    Stderr,
}

fn install_out(stream: StdioStream, builder: &mut WasiCtxBuilder, which: Out) -> Result<()> {
    let set = |b: &mut WasiCtxBuilder, s: Box<dyn wasmtime_wasi::cli::StdoutStream + Sync>| {
        match which {
            Out::Stdout => b.stdout(s),
            Out::Stderr => b.stderr(s),
        };
    };
    match stream {
        StdioStream::Inherit => {
            match which {
                Out::Stdout => builder.inherit_stdout(),
                Out::Stderr => builder.inherit_stderr(),
            };
        }
        StdioStream::Null => {}
        StdioStream::File(f) if sys::is_fifo(&f) => {
            let tx = tokio::net::unix::pipe::Sender::from_file(f).map_err(io_err("output pipe"))?;
            set(builder, Box::new(AsyncStdoutStream::new(PIPE_BUDGET, tx)))
        }
        StdioStream::File(f) => set(builder, Box::new(OutputFile::new(f))),
    };
    Ok(())
}
