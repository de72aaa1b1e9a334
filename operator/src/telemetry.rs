//! Logs (text or JSON, filtered by `RUST_LOG`, default `info`) and, with an OTLP endpoint,
//! traces exported over OTLP/HTTP: each reconcile is a span (`#[instrument]`), so a slow
//! reconcile shows which API or broker call took the time.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the trace pipeline alive; `shutdown` flushes the spans still buffered.
pub struct Guard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Guard {
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider {
            // The exporter's blocking HTTP client must not be dropped on a runtime thread.
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);

    #[cfg(feature = "otlp")]
    {
        let provider = otlp_endpoint.map(otlp::provider).transpose()?;
        let layer = provider.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer().with_tracer(p.tracer("fjord-operator"))
        });
        registry.with(layer).try_init()?;
        Ok(Guard { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.try_init()?;
        if otlp_endpoint.is_some() {
            tracing::warn!("--otlp-endpoint ignored: built without the `otlp` feature");
        }
        Ok(Guard {})
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is the collector's base URL; traces go to
    /// `<base>/v1/traces`, as the OpenTelemetry spec says for that variable.
    pub fn traces_url(endpoint: &str) -> String {
        let base = endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }

    pub fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
        let exporter = SpanExporter::builder().with_http().with_endpoint(traces_url(endpoint)).build()?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("fjord-operator").build())
            .build())
    }

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(traces_url("http://otel:4318/v1/traces"), "http://otel:4318/v1/traces");
    }
}
