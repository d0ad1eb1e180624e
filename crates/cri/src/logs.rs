//! The CRI container log format (`<RFC 3339 time> <stdout|stderr> <F|P> <message>`, one
//! line each, `P` lines continued by the next of the same stream), read whole or followed.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Which stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One whole line the container wrote (partial lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The runtime's timestamp of the line's first part.
    pub time: String,
    /// stdout or stderr.
    pub stream: Stream,
    /// The line without its newline.
    pub message: String,
}

/// A line of the file: its time, stream, whether it is partial, and the message.
fn parse_line(line: &str) -> Option<(&str, Stream, bool, &str)> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        "F" => false,
        "P" => true,
        _ => return None,
    };
    Some((time, stream, partial, parts.next().unwrap_or("")))
}

/// Reads a CRI log file from where it left off.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    offset: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    tail: Vec<u8>,
    /// Partial entries per stream, waiting for their final part.
    partial: [Option<Entry>; 2],
}

impl LogReader {
    /// A reader at the start of `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            tail: Vec::new(),
            partial: [None, None],
        }
    }

    /// The whole lines written since the last call. A missing file has none yet.
    pub fn read_new(&mut self) -> Result<Vec<Entry>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path)(e)),
        };
        let len = file.metadata().map_err(Error::io(&self.path))?.len();
        if len < self.offset {
            // Truncated or rotated: start over.
            self.offset = 0;
            self.tail.clear();
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(Error::io(&self.path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(Error::io(&self.path))?;
        self.offset += bytes.len() as u64;
        self.tail.extend_from_slice(&bytes);
        let mut entries = Vec::new();
        let Some(last_newline) = self.tail.iter().rposition(|&b| b == b'\n') else {
            return Ok(entries);
        };
        let complete: Vec<u8> = self.tail.drain(..=last_newline).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            let Some((time, stream, partial, message)) = parse_line(line) else {
                tracing::debug!(path = %self.path.display(), line, "not a CRI log line");
                continue;
            };
            let slot = &mut self.partial[stream as usize];
            let entry = match slot.take() {
                Some(mut e) => {
                    e.message.push_str(message);
                    e
                }
                None => Entry {
                    time: time.to_owned(),
                    stream,
                    message: message.to_owned(),
                },
            };
            if partial {
                *slot = Some(entry);
            } else {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Partial lines still waiting for their end (a container that ended mid-line).
    pub fn flush(&mut self) -> Vec<Entry> {
        self.partial.iter_mut().filter_map(Option::take).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut reader = LogReader::new(&path);
        assert!(
            reader.read_new().unwrap().is_empty(),
            "a missing file has no lines"
        );
        let mut f = std::fs::File::create(&path).unwrap();
        write!(
            f,
            "2026-11-26T06:00:00.000000001Z stdout F hello world\n\
             2026-11-26T06:00:00.000000002Z stderr P par\n\
             2026-11-26T06:00:00.000000003Z stdout F between\n\
             2026-11-26T06:00:00.000000004Z stderr F tial\n\
             garbage line\n\
             2026-11-26T06:00:00.000000005Z stdout F \n\
             2026-11-26T06:00:00.000000006Z stdout F unfinish"
        )
        .unwrap();
        let got = reader.read_new().unwrap();
        let msgs: Vec<(Stream, &str)> =
            got.iter().map(|e| (e.stream, e.message.as_str())).collect();
        assert_eq!(
            msgs,
            [
                (Stream::Stdout, "hello world"),
                (Stream::Stdout, "between"),
                (Stream::Stderr, "partial"),
                (Stream::Stdout, ""),
            ]
        );
        assert_eq!(got[2].time, "2026-11-26T06:00:00.000000002Z");
        // The unfinished line arrives once its newline does.
        writeln!(f, "ed").unwrap();
        let got = reader.read_new().unwrap();
        assert_eq!(got[0].message, "unfinished");
        assert!(reader.read_new().unwrap().is_empty());
        writeln!(f, "2026-11-26T06:00:01Z stdout P cut off").unwrap();
        assert!(reader.read_new().unwrap().is_empty());
        assert_eq!(reader.flush()[0].message, "cut off");
    }
}
