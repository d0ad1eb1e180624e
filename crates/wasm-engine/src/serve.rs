//! Serving a `wasi:http/proxy` (0.2) or `wasi:http/service` (0.3) component: HTTP/1 on
//! hyper, a fresh instance per request from one pre-instantiated template (`ProxyPre` or
//! `ServicePre`), a drain on shutdown. What one container's server may hold — connections,
//! time, instance slots — is bounded by its [`HttpLimits`].

mod conn;
mod limits;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::io::TokioIo as WasiTokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

use crate::error::{chain, Error, Result};
use crate::limits::MemoryBudget;
use crate::net::{NetworkPolicy, PolicyHooks};
use crate::program::{Code, Program};
use crate::run::{
    add_preopens, component_store, CpuMeter, KillHandle, Limits, MemoryGauge, Metered, P2Host,
    Preopen,
};
use crate::stdio::{self, Stdio, StdioStream};
use crate::Engine;

pub use limits::HttpLimits;
pub(crate) use limits::Slots;
use limits::{Quota, Slot};

/// What every instance of a served component is given, and what stops the server.
#[derive(Debug, Default)]
pub struct ServeConfig {
    /// Environment variables of every instance.
    pub env: Vec<(String, String)>,
    /// Directories every instance may use.
    pub preopens: Vec<Preopen>,
    /// Where the instances' stdout and stderr go (stdin is always empty).
    pub stdio: Stdio,
    /// The memory cap of all instances together (see [`memory`](Self::memory)).
    pub limits: Limits,
    /// Counts the CPU time of all instances together, and holds their shared budget.
    pub cpu: CpuMeter,
    /// The memory of all instances together, under one cap: [`Limits::memory`] when set
    /// (a container's memory limit covers everything it runs at once).
    pub memory: MemoryGauge,
    /// Stops the server: no new connections; requests in flight are answered, then
    /// [`Engine::serve`] returns.
    pub shutdown: KillHandle,
    /// What every instance may do on the network (`wasi:sockets`, outgoing `wasi:http`).
    pub network: NetworkPolicy,
    /// What this server may hold: connections, time and instance slots.
    pub http: HttpLimits,
}

impl From<crate::RunConfig> for ServeConfig {
    /// The same environment, directories, output, limits, CPU meter and network; the run's
    /// kill handle becomes the shutdown, and stdin is closed (requests are the input).
    fn from(run: crate::RunConfig) -> Self {
        ServeConfig {
            env: run.env,
            preopens: run.preopens,
            stdio: Stdio {
                stdin: StdioStream::Null,
                ..run.stdio
            },
            limits: run.limits,
            cpu: run.cpu,
            memory: run.memory,
            shutdown: run.kill,
            network: run.network,
            http: HttpLimits::default(),
        }
    }
}

/// What a server did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests answered by the component.
    pub requests: u64,
    /// Requests that failed inside the component (answered 500), or that it did not
    /// answer within the request timeout (answered 504).
    pub failed: u64,
}

/// A copy of one output stream for one instance.
fn clone_stream(stream: &StdioStream) -> std::io::Result<StdioStream> {
    Ok(match stream {
        StdioStream::Inherit => StdioStream::Inherit,
        StdioStream::Null => StdioStream::Null,
        StdioStream::File(f) => StdioStream::File(f.try_clone()?),
    })
}

/// The template of a served component's instances, by the `wasi:http` it exports.
enum HttpPre {
    /// `wasi:http/incoming-handler@0.2`.
    P2(ProxyPre<P2Host>),
    /// `wasi:http/handler@0.3`: an async export whose response body the instance goes on
    /// writing inside its store's event loop.
    P3(ServicePre<P2Host>),
}

struct Server {
    engine: wasmtime::Engine,
    pre: HttpPre,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    stdio: Stdio,
    memory: MemoryGauge,
    cpu: CpuMeter,
    network: Arc<NetworkPolicy>,
    requests: AtomicU64,
    failed: AtomicU64,
    /// The instances running; dropping the server aborts them.
    instances: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The instance slots this server may take.
    quota: Quota,
    request_timeout: std::time::Duration,
    /// The tenant's failures, said once per interval (their count in between).
    hush: conn::Hush,
}

/// Stops an instance when dropped, unless it was told to [`keep`](Self::keep) it: a request
/// whose client left, or that ran out of time, before it had its response.
struct StopUnlessAnswered(Option<tokio::task::AbortHandle>);

impl StopUnlessAnswered {
    /// The response is out: the instance goes on writing its body, to its deadline.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for StopUnlessAnswered {
    fn drop(&mut self) {
        if let Some(instance) = self.0.take() {
            instance.abort();
        }
    }
}

impl Server {
    fn store(&self) -> Result<Store<P2Host>> {
        let mut builder = WasiCtxBuilder::new();
        builder.envs(&self.env);
        self.network.apply(&mut builder);
        add_preopens(&mut builder, &self.preopens)?;
        let io = |e| Error::Io {
            context: "the instance's output streams".into(),
            source: e,
        };
        let streams = Stdio {
            stdin: StdioStream::Null,
            stdout: clone_stream(&self.stdio.stdout).map_err(io)?,
            stderr: clone_stream(&self.stdio.stderr).map_err(io)?,
        };
        stdio::install(streams, &mut builder)?;
        Ok(component_store(
            &self.engine,
            builder.build(),
            PolicyHooks(self.network.clone()),
            MemoryBudget::shared(self.memory.clone()),
            self.cpu.clone(),
        ))
    }

    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        deadline: tokio::time::Instant,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let slot = self.quota.slot().await;
        match &self.pre {
            HttpPre::P2(pre) => {
                let pre = pre.clone();
                self.handle_p2(pre, req, slot, deadline).await
            }
            HttpPre::P3(pre) => {
                let pre = pre.clone();
                self.handle_p3(pre, req, slot, deadline).await
            }
        }
    }

    /// Runs `task` (one instance, holding `slot`) as the server's, its CPU time the
    /// container's, until `deadline` at the latest.
    fn spawn_instance(
        &self,
        slot: Slot,
        deadline: tokio::time::Instant,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> StopUnlessAnswered {
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        while instances.try_join_next().is_some() {}
        let meter = self.cpu.clone();
        // A moment past the request's own deadline: an unanswered request is answered 504
        // (and its instance stopped) by `answer`; this stops one still writing its body.
        let deadline = deadline + std::time::Duration::from_secs(1);
        let task = async move {
            let _slot = slot;
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::debug!("an instance outlived its request timeout; stopped");
            }
        };
        let handle = instances.spawn(
            Metered {
                inner: Box::pin(task),
                meter,
            }
            .in_current_span(),
        );
        StopUnlessAnswered(Some(handle))
    }

    async fn handle_p3(
        self: Arc<Self>,
        pre: ServicePre<P2Host>,
        req: hyper::Request<hyper::body::Incoming>,
        slot: Slot,
        deadline: tokio::time::Instant,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = self.store()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let req = req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        // The incoming headers are checked by wasi:http's default rules: the policy's
        // hooks decide outgoing requests only.
        let (request, io) =
            wasmtime_wasi_http::p3::Request::from_http(wasmtime_wasi_http::default_hooks(), req);
        let instance = self.spawn_instance(slot, deadline, async move {
            let result = async {
                let service = pre.instantiate_async(&mut store).await?;
                store
                    .run_concurrent(async move |accessor| {
                        let response = match service.handle(accessor, request).await? {
                            Ok(response) => response,
                            Err(code) => {
                                let _ = sender.send(Err(code));
                                return Ok(());
                            }
                        };
                        let response =
                            accessor.with(|mut store| response.into_http(&mut store, io))?;
                        // The body is the guest's stream: keep this loop running until
                        // hyper has sent it (or dropped it, the client gone).
                        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
                        let response = response.map(|body| {
                            WhileAlive {
                                body,
                                _alive: sent_tx,
                            }
                            .boxed_unsync()
                        });
                        if sender.send(Ok(response)).is_ok() {
                            let _ = sent_rx.await;
                        }
                        wasmtime::Result::<()>::Ok(())
                    })
                    .await?
            }
            .await;
            let _ = done_tx.send(result);
        });
        match receiver.await {
            Ok(Ok(response)) => {
                instance.keep();
                Ok(response)
            }
            Ok(Err(code)) => Err(wasmtime::Error::msg(format!(
                "the component answered with an error: {code:?}"
            ))),
            Err(_) => {
                let error = match done_rx.await {
                    Ok(Ok(())) => wasmtime::Error::msg("the component set no response"),
                    Ok(Err(e)) => e,
                    Err(_) => wasmtime::Error::msg("the instance was stopped"),
                };
                Err(error.context("the component set no response"))
            }
        }
    }

    async fn handle_p2(
        self: Arc<Self>,
        pre: ProxyPre<P2Host>,
        req: hyper::Request<hyper::body::Incoming>,
        slot: Slot,
        deadline: tokio::time::Instant,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = self.store()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // The guest may go on writing the body after it has sent the head.
        let instance = self.spawn_instance(slot, deadline, async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            }
            .await;
            let _ = done_tx.send(result);
        });
        match receiver.await {
            Ok(Ok(response)) => {
                instance.keep();
                Ok(response)
            }
            Ok(Err(code)) => Err(wasmtime::Error::msg(format!(
                "the component answered with an error: {code:?}"
            ))),
            Err(_) => {
                let error = match done_rx.await {
                    Ok(Ok(())) => wasmtime::Error::msg("the component set no response"),
                    Ok(Err(e)) => e,
                    Err(_) => wasmtime::Error::msg("the instance was stopped"),
                };
                Err(error.context("the component set no response"))
            }
        }
    }

    /// Answers one request: the component's response, or 500 naming nothing of its
    /// internals (they are logged).
    async fn answer(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> std::result::Result<hyper::Response<HyperOutgoingBody>, std::convert::Infallible> {
        let server = self.clone();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let (status, text): (_, &'static [u8]) =
            match tokio::time::timeout_at(deadline, server.handle(req, deadline)).await {
                Ok(Ok(response)) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(e)) => {
                    if let Some(held) = self.hush.allow() {
                        tracing::warn!(error = %chain(&e), unsaid = held, "request failed");
                    }
                    (
                        hyper::StatusCode::INTERNAL_SERVER_ERROR,
                        b"internal error in the wasm handler\n",
                    )
                }
                Err(_) => {
                    if let Some(held) = self.hush.allow() {
                        tracing::warn!(
                            timeout = ?self.request_timeout,
                            unsaid = held,
                            "the handler did not answer within the request timeout"
                        );
                    }
                    (
                        hyper::StatusCode::GATEWAY_TIMEOUT,
                        b"the wasm handler did not answer in time\n",
                    )
                }
            };
        self.failed.fetch_add(1, Ordering::Relaxed);
        let body = http_body_util::Full::new(bytes::Bytes::from_static(text))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = hyper::Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}

/// A response body that keeps `_alive` (the instance's event loop waits on its receiver)
/// until hyper has sent or dropped it.
struct WhileAlive<B> {
    body: B,
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for WhileAlive<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>>
    {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Engine {
    fn http_pre(&self, program: &Program) -> Result<HttpPre> {
        let Code::Component(component) = &*program.code else {
            return Err(Error::Instantiate(
                "a core module cannot serve HTTP: it must be a component exporting \
                 wasi:http/incoming-handler (0.2) or wasi:http/handler (0.3)"
                    .into(),
            ));
        };
        let pre = self
            .p2_linker()?
            .instantiate_pre(component)
            .map_err(|e| Error::Instantiate(chain(&e)))?;
        if let Ok(service) = ServicePre::new(pre.clone()) {
            return Ok(HttpPre::P3(service));
        }
        ProxyPre::new(pre).map(HttpPre::P2).map_err(|e| {
            Error::Instantiate(format!(
                "the component exports neither wasi:http/incoming-handler (0.2) nor \
                 wasi:http/handler (0.3): {}",
                chain(&e)
            ))
        })
    }

    /// Whether `program` is a component that serves HTTP (exports
    /// `wasi:http/incoming-handler` of 0.2 or `wasi:http/handler` of 0.3), rather than a
    /// command.
    pub fn serves_http(&self, program: &Program) -> bool {
        self.http_pre(program).is_ok()
    }

    /// Serves `program` on `listener` until [`ServeConfig::shutdown`] is used: each request
    /// gets a fresh instance of the component; then requests in flight are answered and
    /// idle connections closed before this returns. Dropping the future instead aborts
    /// every connection and instance at once (a SIGKILL). Must be called inside a tokio
    /// runtime.
    pub async fn serve(
        &self,
        program: &Program,
        listener: TcpListener,
        config: ServeConfig,
    ) -> Result<ServeStats> {
        self.start_ticker()?;
        let pre = self.http_pre(program)?;
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Io { context, source }
        };
        listener
            .set_nonblocking(true)
            .map_err(io("the listening socket"))?;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(io("the listening socket"))?;
        let ServeConfig {
            env,
            preopens,
            stdio,
            limits,
            cpu,
            memory,
            shutdown,
            network,
            http,
        } = config;
        memory.set_limit(limits.memory);
        let server = Arc::new(Server {
            engine: self.inner.wasmtime.clone(),
            pre,
            env,
            preopens,
            stdio,
            memory,
            cpu,
            network: Arc::new(network),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            instances: Default::default(),
            quota: self.inner.slots.quota(&http),
            request_timeout: http.request_timeout,
            hush: conn::Hush::default(),
        });
        // Dropping this future (an abort) drops the connections, and with the last of
        // them the server and its instances.
        let mut connections = tokio::task::JoinSet::new();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let open = Arc::new(tokio::sync::Semaphore::new(http.max_connections as usize));
        let mut accept_errors = conn::AcceptErrors::default();
        loop {
            // At the cap, further clients wait in the kernel's backlog, not in this process.
            let (permit, accepted) = tokio::select! {
                permit = open.clone().acquire_owned() => {
                    let Ok(permit) = permit else { break };
                    tokio::select! {
                        accepted = listener.accept() => (permit, accepted),
                        _ = shutdown.wait() => break,
                    }
                }
                _ = shutdown.wait() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    accept_errors.recovered();
                    stream
                }
                Err(e) => {
                    // Out of descriptors, say: retrying at once would spin. Wait, and say
                    // so once in a while rather than at every attempt.
                    let pause = accept_errors.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.wait() => break,
                    }
                }
            };
            // Responses go out as they are written, not held back for more (Nagle).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
            let (stream, activity) = conn::Watched::new(stream);
            let server = server.clone();
            let busy = activity.clone();
            let service = service_fn(move |req| {
                let answering = busy.answering();
                let answer = server.clone().answer(req);
                async move {
                    let response = answer.await;
                    drop(answering);
                    response
                }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(http.header_timeout)
                .max_buf_size(conn::MAX_BUF)
                .keep_alive(true)
                .serve_connection(WasiTokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            while connections.try_join_next().is_some() {}
            let idle = http.idle_timeout;
            // In the caller's span: what instances log names the container.
            connections.spawn(
                async move {
                    let _permit = permit;
                    tokio::select! {
                        ended = connection => if let Err(e) = ended {
                            tracing::debug!(error = %e, "connection ended");
                        },
                        () = activity.idle_for(idle) => {
                            tracing::debug!(?idle, "connection idle; closed");
                        }
                    }
                }
                .in_current_span(),
            );
        }
        drop(listener);
        tracing::info!("draining requests in flight");
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
        Ok(ServeStats {
            requests: server.requests.load(Ordering::Relaxed),
            failed: server.failed.load(Ordering::Relaxed),
        })
    }
}
