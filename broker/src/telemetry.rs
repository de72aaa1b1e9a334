//! Logs to stderr (filtered by `FJORD_LOG`) and, when `fjord.tracing.otlp.endpoint` (or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, one trace per Kafka request exported over
//! OTLP/HTTP. A sampled request's trace id is also attached to its latency bucket as an
//! exemplar, so a slow bucket on a dashboard leads to a concrete trace.
//!
//! Only spans with the `fjord::request` target go to the exporter: openraft and the rest
//! would otherwise flood it with spans nobody asked for.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static TRACING: AtomicBool = AtomicBool::new(false);

const DEFAULT_LOG: &str = "info,openraft=error,openraft::replication=off,openraft::engine=off";

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// OTLP's base URL convention: traces go to `<base>/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

pub fn init(otlp_endpoint: Option<&str>, sample_ratio: f64, node_id: i32) -> anyhow::Result<Guard> {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_env("FJORD_LOG").unwrap_or_else(|_| DEFAULT_LOG.into()));
    let provider = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = SpanExporter::builder().with_http().with_endpoint(traces_url(endpoint)).build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio))))
                    .with_resource(
                        Resource::builder()
                            .with_service_name("fjord")
                            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", node_id.to_string()))
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("fjord"))
            .with_filter(filter_fn(|m| m.target() == "fjord::request"))
    });
    tracing_subscriber::registry().with(otel).with(fmt).try_init()?;
    TRACING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Guard(provider))
}

/// The span of one request, with its trace id if it was sampled (the exemplar).
pub struct RequestSpan {
    pub span: tracing::Span,
    pub trace_id: Option<String>,
}

/// The span of one request when tracing is on.
pub fn request_span(api: &'static str, client_id: &str) -> Option<RequestSpan> {
    if !TRACING.load(Ordering::Relaxed) {
        return None;
    }
    let span = tracing::info_span!(target: "fjord::request", "kafka.request", otel.name = api, rpc.system = "kafka", rpc.method = api, client.id = client_id);
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    let trace_id = (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string());
    Some(RequestSpan { span, trace_id })
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(super::traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(super::traces_url("http://otel:4318/v1/traces/"), "http://otel:4318/v1/traces");
    }
}
