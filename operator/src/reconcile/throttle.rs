//! A client-side rate limit of the operator's writes to the API server: a token bucket of `qps` tokens a second
//! holding at most `burst`, as client-go's `--kube-api-qps` and `--kube-api-burst`. Reads and watches pass freely.
//!
//! The bucket is governor's GCRA limiter on tokio's clock (so tests can pause time). The layer sits on the API
//! client: a write waits for a token before it is sent, without holding up the requests behind it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt as _};

use super::metrics::Metrics;

/// The limit of API writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimit {
    /// Writes per second on average; 0 turns the limit off.
    pub qps: u32,
    /// Most writes at once after a quiet spell (the bucket's size); at least 1.
    pub burst: u32,
}

impl Default for WriteLimit {
    /// 50 writes a second, bursts of 100: kube-scheduler's defaults, enough for Plinth's tests and benchmarks at
    /// 1,000 Applications, gentle on a shared API server.
    fn default() -> Self {
        WriteLimit { qps: 50, burst: 100 }
    }
}

/// tokio's clock, for governor: paused and advanced with tokio's time in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// A token bucket shared by every clone.
#[derive(Debug, Clone)]
pub struct Bucket {
    limiter: Option<Arc<Limiter>>,
}

impl Bucket {
    /// A bucket for `limit`; one that never waits when `limit.qps` is 0.
    pub fn new(limit: WriteLimit) -> Bucket {
        let limiter = NonZeroU32::new(limit.qps).map(|qps| {
            let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct_with_clock(
                Quota::per_second(qps).allow_burst(burst),
                TokioClock,
            ))
        });
        Bucket { limiter }
    }

    /// Waits for a token; returns how long that took.
    pub async fn admit(&self) -> Duration {
        let Some(limiter) = &self.limiter else {
            return Duration::ZERO;
        };
        let started = tokio::time::Instant::now();
        while let Err(not_until) = limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
        }
        started.elapsed()
    }
}

/// Whether a request is a write (everything but GET, HEAD and OPTIONS; watches are GETs).
pub fn is_write(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

/// Requests waiting for a token, at most (beyond that, callers wait for a free slot).
const BUFFER: usize = 1024;

/// The layer: writes wait for a token of the bucket, counted in `plinth_api_throttled_seconds_total`.
/// `Req` is the body type of the requests (kube's client body).
#[derive(Debug, Clone)]
pub struct ThrottleLayer<Req = kube::client::Body> {
    bucket: Bucket,
    metrics: Option<Arc<Metrics>>,
    body: std::marker::PhantomData<fn() -> Req>,
}

impl<Req> ThrottleLayer<Req> {
    /// A layer limiting writes to `limit`; the time writes waited is added to `metrics` when given.
    pub fn new(limit: WriteLimit, metrics: Option<Arc<Metrics>>) -> ThrottleLayer<Req> {
        ThrottleLayer {
            bucket: Bucket::new(limit),
            metrics,
            body: std::marker::PhantomData,
        }
    }
}

impl<S, Req> Layer<S> for ThrottleLayer<Req>
where
    S: Service<http::Request<Req>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + Sync,
    Req: Send + 'static,
{
    type Service = Throttled<S, Req>;
    fn layer(&self, inner: S) -> Self::Service {
        Throttled {
            // A buffer makes the inner service cloneable, so a write can wait for its token apart from the others.
            inner: Buffer::new(inner, BUFFER),
            bucket: self.bucket.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`ThrottleLayer`].
pub struct Throttled<S, Req>
where
    S: Service<http::Request<Req>>,
{
    inner: Buffer<http::Request<Req>, S::Future>,
    bucket: Bucket,
    metrics: Option<Arc<Metrics>>,
}

impl<S, Req> std::fmt::Debug for Throttled<S, Req>
where
    S: Service<http::Request<Req>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<http::Request<Req>> for Throttled<S, Req>
where
    S: Service<http::Request<Req>> + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Req>) -> Self::Future {
        if !is_write(req.method()) {
            return Box::pin(self.inner.call(req));
        }
        let mut inner = self.inner.clone();
        let bucket = self.bucket.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let waited = bucket.admit().await;
            if let Some(m) = metrics
                && !waited.is_zero()
            {
                m.throttled.inc_by(waited.as_secs_f64());
            }
            inner.ready().await?.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_admits_a_burst_at_once_then_qps_a_second() {
        let bucket = Bucket::new(WriteLimit { qps: 10, burst: 5 });
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(bucket.admit().await, Duration::ZERO, "the burst passes at once");
        }
        let sixth = bucket.admit().await;
        assert_eq!(sixth, Duration::from_millis(100), "then one token every 1/qps");
        for _ in 0..10 {
            bucket.admit().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(1100),
            "5 at once, then 11 at 10 a second"
        );
        // A quiet spell refills the bucket, up to the burst.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let refilled = tokio::time::Instant::now();
        for _ in 0..5 {
            bucket.admit().await;
        }
        assert_eq!(refilled.elapsed(), Duration::ZERO);
        assert_eq!(
            bucket.admit().await,
            Duration::from_millis(100),
            "never more than the burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits() {
        let bucket = Bucket::new(WriteLimit { qps: 0, burst: 0 });
        for _ in 0..1000 {
            assert_eq!(bucket.admit().await, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_holds_back_writes_only() {
        let sent: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
        let start = tokio::time::Instant::now();
        let record = Arc::clone(&sent);
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let record = Arc::clone(&record);
            async move {
                record
                    .lock()
                    .map_err(|_| "poisoned")?
                    .push((req.method().to_string(), start.elapsed()));
                Ok::<_, BoxError>(http::Response::new(()))
            }
        });
        let metrics = Arc::new(Metrics::new());
        let mut svc =
            ThrottleLayer::<()>::new(WriteLimit { qps: 2, burst: 1 }, Some(Arc::clone(&metrics))).layer(inner);
        let mut calls = Vec::new();
        for method in ["PATCH", "GET", "POST", "GET", "DELETE", "PUT"] {
            let req = http::Request::builder()
                .method(method)
                .uri("/api/v1/namespaces/a/configmaps/b")
                .body(())
                .map_err(|e| e.to_string());
            let ready = svc.ready().await.map_err(|e| e.to_string());
            if let (Ok(req), Ok(ready)) = (req, ready) {
                calls.push(tokio::spawn(ready.call(req)));
            }
        }
        for c in calls {
            assert!(matches!(c.await, Ok(Ok(_))));
        }
        let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
        let times = |write: bool| -> Vec<Duration> {
            let mut t: Vec<Duration> = sent
                .iter()
                .filter(|(m, _)| (m != "GET") == write)
                .map(|(_, t)| *t)
                .collect();
            t.sort();
            t
        };
        let ms = Duration::from_millis;
        assert_eq!(times(false), [ms(0), ms(0)], "reads are not held back");
        assert_eq!(
            times(true),
            [ms(0), ms(500), ms(1000), ms(1500)],
            "writes: a burst of 1, then 2 a second"
        );
        assert!(
            metrics.encode().contains("plinth_api_throttled_seconds_total 3.0"),
            "{}",
            metrics.encode()
        );
    }
}
