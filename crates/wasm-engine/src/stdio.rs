//! Where a guest's standard streams go: the caller's files and pipes, or this process's.

use std::fs::File;

use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, InputFile, OutputFile};
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

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
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
            ErrSink::Inherit => writeln!(std::io::stderr(), "{line}"),
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
            let rx =
                tokio::net::unix::pipe::Receiver::from_file(f).map_err(io_err("stdin pipe"))?;
            builder.stdin(AsyncStdinStream::new(rx));
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
