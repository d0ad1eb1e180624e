//! One connection's bookkeeping: when a byte last moved, whether the component is working
//! out a response, and how accept errors are waited out and reported.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The most a connection buffers of a request's head (hyper's default is 400 KiB): a head
/// larger than this is refused, so a thousand connections cannot hold 400 MiB.
pub(super) const MAX_BUF: usize = 64 << 10;

/// What a connection's watcher sees of it.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to when a byte last moved.
    last: AtomicU64,
    /// Requests whose response head the component has not given yet.
    answering: AtomicU32,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Marks a request in the component's hands until the guard is dropped.
    pub(super) fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// Ends when no byte has moved for `idle` while the component was not answering.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            tokio::time::sleep_until(last + idle).await;
            let quiet = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)));
            if self.answering.load(Ordering::Relaxed) > 0 {
                // The component is working: it may take its time (the request timeout
                // bounds it); the quiet starts again when it has answered.
                self.touch();
            } else if quiet >= idle {
                return;
            }
        }
    }
}

/// A request in the component's hands (see [`Activity::answering`]).
pub(super) struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes when bytes move through it.
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            answering: AtomicU32::new(0),
        });
        (
            Self {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Lets a warning through at most once per [`REPORT_EVERY`], counting those held back: a
/// tenant whose every request fails must not fill the node's log.
#[derive(Debug, Default)]
pub(crate) struct Hush {
    /// Milliseconds from `start` when one was last let through; 0 for never.
    last: AtomicU64,
    held: AtomicU64,
    start: std::sync::OnceLock<Instant>,
}

impl Hush {
    /// Whether to say this one now; if so, how many were held back since the last.
    pub(crate) fn allow(&self) -> Option<u64> {
        let start = *self.start.get_or_init(Instant::now);
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = REPORT_EVERY.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < every {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

/// How often a warning held back by [`Hush`] is said: the first at once, then one line
/// per interval with the count since.
const REPORT_EVERY: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A run of failed accepts: how long to pause before the next, and which to say.
#[derive(Debug, Default)]
pub(super) struct AcceptErrors {
    pause: Option<Duration>,
    hush: Hush,
}

impl AcceptErrors {
    /// An accept failed with `error`: how long to wait before the next. The pause doubles
    /// from 5 ms to 1 s while the errors go on.
    pub(super) fn failed(&mut self, error: &std::io::Error) -> Duration {
        if let Some(held) = self.hush.allow() {
            tracing::warn!(
                %error,
                failures = held + 1,
                "cannot accept connections; pausing between attempts"
            );
        }
        let pause = self
            .pause
            .map_or(FIRST_PAUSE, |p| (p * 2).min(LONGEST_PAUSE));
        self.pause = Some(pause);
        pause
    }

    /// An accept succeeded: the run is over.
    pub(super) fn recovered(&mut self) {
        if self.pause.take().is_some() {
            let held = self.hush.held.swap(0, Ordering::Relaxed);
            if held > 0 {
                tracing::info!(failures = held, "accepting connections again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hushed_warning_is_said_once_per_interval() {
        let hush = Hush::default();
        assert_eq!(hush.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(hush.allow(), None);
        }
        assert_eq!(hush.held.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn accept_errors_back_off_to_a_second() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..12).map(|_| errors.failed(&e)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(pauses[11], LONGEST_PAUSE);
        // Said once, the rest counted for the next report.
        assert_eq!(errors.hush.held.load(Ordering::Relaxed), 11);
        errors.recovered();
        assert_eq!(errors.failed(&e), FIRST_PAUSE);
    }
}
