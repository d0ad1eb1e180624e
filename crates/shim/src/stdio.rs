//! The task's standard streams: containerd's FIFOs (or `file://` log files) opened for the
//! guest, and stdin relayed through a pipe so that CloseIO can end it.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use wasm_engine::{Stdio, StdioStream};

use crate::container::StdioPaths;
use crate::error::{io, Error, Result};
use crate::sys;

/// How long to wait for containerd to open the other end of a FIFO.
const FIFO_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to look for the other end meanwhile.
const FIFO_OPEN_RETRY: Duration = Duration::from_millis(5);

/// Streams ready for the engine, and the switch that closes stdin.
#[derive(Debug)]
pub(crate) struct Streams {
    pub(crate) stdio: Stdio,
    pub(crate) stdin_close: Option<oneshot::Sender<()>>,
}

/// Opens the streams containerd named. Empty paths mean no stream (end-of-file on stdin,
/// output discarded).
pub(crate) async fn open(paths: &StdioPaths) -> Result<Streams> {
    if paths.terminal {
        return Err(Error::InvalidArgument(
            "a terminal (ctr -t, tty: true) cannot be given to a wasm guest: WASI has no TTY; \
             run without one"
                .into(),
        ));
    }
    let (stdin, stdin_close) = open_stdin(&paths.stdin).await?;
    let stdout = open_output(&paths.stdout, "stdout").await?;
    let stderr = open_output(&paths.stderr, "stderr").await?;
    Ok(Streams {
        stdio: Stdio {
            stdin,
            stdout,
            stderr,
        },
        stdin_close,
    })
}

/// Where a stdio URI points: containerd passes FIFO paths, or `file://` / `binary://` URIs
/// for `--log-uri`.
fn target(uri: &str, which: &str) -> Result<Option<String>> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Some(path.to_owned()));
    }
    if uri.starts_with("binary://") {
        return Err(Error::InvalidArgument(format!(
            "{which} {uri:?}: binary:// log drivers are not supported by the wasm shim"
        )));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::InvalidArgument(format!(
            "{which} {uri:?}: unknown scheme {scheme:?}"
        )));
    }
    Ok(Some(uri.to_owned()))
}

/// Opens `path` for writing within `deadline`, without ever blocking a thread: a FIFO
/// opened write-only waits in the kernel until a reader comes (containerd, or whoever
/// asked for the task and may have gone), and no timeout cancels a blocked `open(2)` — a
/// thread stuck there kept a shim alive after its last container. So the open is
/// non-blocking (a FIFO without a reader answers `ENXIO` at once) and retried until the
/// deadline, and the descriptor is made blocking again for the guest.
async fn open_writer(
    path: String,
    options: &mut OpenOptions,
    which: &'static str,
    deadline: Duration,
) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let context = format!("opening {which} {path}");
    options.custom_flags(libc::O_NONBLOCK);
    let give_up = tokio::time::Instant::now() + deadline;
    let file = loop {
        match options.open(Path::new(&path)) {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if tokio::time::Instant::now() >= give_up {
                    return Err(Error::Io {
                        context,
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("nobody opened the other end within {deadline:?}"),
                        ),
                    });
                }
                tokio::time::sleep(FIFO_OPEN_RETRY).await;
            }
            Err(e) => return Err(io(context)(e)),
        }
    };
    sys::set_blocking(&file).map_err(io(context))?;
    Ok(file)
}

async fn open_output(uri: &str, which: &'static str) -> Result<StdioStream> {
    let Some(path) = target(uri, which)? else {
        return Ok(StdioStream::Null);
    };
    let mut options = OpenOptions::new();
    options.write(true);
    if uri.starts_with("file://") {
        options.append(true).create(true);
    }
    Ok(StdioStream::File(
        open_writer(path, &mut options, which, FIFO_OPEN_TIMEOUT).await?,
    ))
}

/// Opens stdin and relays it into a pipe whose write end the shim holds: CloseIO (or the
/// task's end) drops it, and the guest reads end-of-file.
///
/// The FIFO is opened read-only and non-blocking, which never waits: containerd opens its
/// end lazily (not at all when there is nothing to send). Until a writer comes the relay
/// sees no readiness rather than end-of-file (Linux reports a hang-up only after a writer
/// has come and gone), so input ends when containerd closes its end or sends CloseIO,
/// whichever comes first.
async fn open_stdin(uri: &str) -> Result<(StdioStream, Option<oneshot::Sender<()>>)> {
    let Some(path) = target(uri, "stdin")? else {
        return Ok((StdioStream::Null, None));
    };
    let source = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&path)
        .map_err(io(format!("opening stdin {path}")))?;
    let (read, write) = sys::pipe().map_err(io("creating the stdin pipe"))?;
    let sink = tokio::net::unix::pipe::Sender::from_file(write).map_err(io("stdin pipe"))?;
    let (close_tx, close_rx) = oneshot::channel();
    tokio::spawn(relay(source, sink, close_rx));
    Ok((StdioStream::File(read), Some(close_tx)))
}

async fn relay(
    source: tokio::net::unix::pipe::Receiver,
    mut sink: tokio::net::unix::pipe::Sender,
    close: oneshot::Receiver<()>,
) {
    let copy = async {
        // A buffer only while there is input: most containers never get any, and a shim
        // holding hundreds of them would otherwise keep one for each.
        while source.readable().await.is_ok() {
            let mut buf = vec![0; RELAY_BUFFER];
            match source.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sink.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        let _ = sink.shutdown().await;
    };
    let closed = tokio::select! {
        () = copy => false,
        _ = close => true,
    };
    if closed {
        // CloseIO says the client has written all it will: what it wrote may still be in
        // the FIFO, unread by the copy (`ctr task exec` writes and closes at once). The
        // guest gets that before its end of file.
        if let Ok(fd) = source.into_nonblocking_fd() {
            let mut fifo = File::from(fd);
            let mut buf = vec![0; RELAY_BUFFER];
            while let Ok(n @ 1..) = std::io::Read::read(&mut fifo, &mut buf) {
                if sink.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        let _ = sink.shutdown().await;
    }
}

/// Bytes the stdin relay moves at a time.
const RELAY_BUFFER: usize = 8 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_uris() {
        assert_eq!(target("", "stdout").unwrap(), None);
        assert_eq!(
            target("/run/containerd/fifo/1/c-stdout", "stdout").unwrap(),
            Some("/run/containerd/fifo/1/c-stdout".into())
        );
        assert_eq!(
            target("file:///var/log/c.log", "stdout").unwrap(),
            Some("/var/log/c.log".into())
        );
        let err = target("binary:///usr/bin/logger?x=1", "stdout").unwrap_err();
        assert!(err.to_string().contains("binary://"), "{err}");
        let err = target("fifo://x", "stderr").unwrap_err();
        assert!(err.to_string().contains("\"fifo\""), "{err}");
    }

    /// A FIFO named `stdin` in `dir`, as containerd makes them.
    fn mkfifo(dir: &Path) -> std::path::PathBuf {
        mkfifo_named(dir, "stdin")
    }

    fn mkfifo_named(dir: &Path, name: &str) -> std::path::PathBuf {
        let fifo = dir.join(name);
        sys::mkfifo(&fifo).unwrap();
        fifo
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_stdin_gives_the_guest_end_of_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = mkfifo(dir.path());
        let (stream, close) = open_stdin(fifo.to_str().unwrap()).await.unwrap();
        // containerd's side comes later, and stays open, as while `ctr run` reads a terminal.
        std::thread::sleep(Duration::from_millis(100));
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, b"hello").unwrap();
        let StdioStream::File(mut read) = stream else {
            panic!("stdin should be a pipe")
        };
        let mut got = [0u8; 5];
        tokio::task::block_in_place(|| read.read_exact(&mut got)).unwrap();
        assert_eq!(&got, b"hello");
        drop(close.expect("a close switch"));
        let mut rest = Vec::new();
        tokio::task::block_in_place(|| read.read_to_end(&mut rest)).unwrap();
        assert!(rest.is_empty());
    }

    /// What the client wrote just before its CloseIO reaches the guest, whether or not the
    /// relay had read it yet (CI's `ctr task exec` of a stdin reader once got 0 bytes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn input_written_before_close_io_is_not_lost() {
        use std::io::Read;
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let fifo = mkfifo(dir.path());
            let (stream, close) = open_stdin(fifo.to_str().unwrap()).await.unwrap();
            let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
            std::io::Write::write_all(&mut writer, b"wasm\n").unwrap();
            // The writer stays open: only CloseIO ends the input.
            drop(close.expect("a close switch"));
            let StdioStream::File(mut read) = stream else {
                panic!("stdin should be a pipe")
            };
            let mut all = String::new();
            tokio::task::block_in_place(|| read.read_to_string(&mut all)).unwrap();
            assert_eq!(all, "wasm\n");
            drop(writer);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_closing_gives_the_guest_end_of_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = mkfifo(dir.path());
        let (stream, _close) = open_stdin(fifo.to_str().unwrap()).await.unwrap();
        let StdioStream::File(mut read) = stream else {
            panic!("stdin should be a pipe")
        };
        // No writer yet: that is not the end of input.
        std::thread::sleep(Duration::from_millis(100));
        let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, b"piped input").unwrap();
        drop(writer); // `echo ... | ctr run`: input ends before any CloseIO
        let mut all = String::new();
        tokio::task::block_in_place(|| read.read_to_string(&mut all)).unwrap();
        assert_eq!(all, "piped input");
    }

    /// Issue 17, finding 4: a stdout FIFO nobody reads fails the open at its deadline and
    /// leaves no thread behind (a blocked `open(2)` on a blocking thread outlived its
    /// Create, and the runtime's shutdown waited for it for ever).
    #[test]
    fn an_unread_fifo_times_out_and_leaves_no_thread_behind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = mkfifo_named(dir.path(), "stdout");
        let path = fifo.to_str().unwrap().to_owned();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_time()
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            let result = rt.block_on(open_writer(
                path,
                OpenOptions::new().write(true),
                "stdout",
                Duration::from_millis(200),
            ));
            let took = started.elapsed();
            drop(rt); // waits for any blocking task still running
            done_tx.send((result.map(|_| ()), took)).unwrap();
        });
        let (result, took) = done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the runtime shut down promptly");
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("stdout") && err.contains("nobody opened the other end within 200ms"),
            "{err}"
        );
        assert!(took >= Duration::from_millis(200), "{took:?}");
    }

    /// A reader that comes late is still found, and the guest gets a blocking descriptor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_reader_is_found_and_the_stream_blocks() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = mkfifo_named(dir.path(), "stdout");
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // A blocking open, which counts as a reader while it waits for a writer.
            let mut r = OpenOptions::new().read(true).open(reader_path).unwrap();
            let mut got = String::new();
            r.read_to_string(&mut got).unwrap();
            got
        });
        let StdioStream::File(mut out) =
            open_output(fifo.to_str().unwrap(), "stdout").await.unwrap()
        else {
            panic!("stdout should be the FIFO")
        };
        assert!(!sys::is_nonblocking(&out), "the guest's stdout blocks");
        std::io::Write::write_all(&mut out, b"late hello").unwrap();
        drop(out);
        assert_eq!(reader.join().unwrap(), "late hello");
    }
}
