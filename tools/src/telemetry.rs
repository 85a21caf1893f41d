//! Logging and request tracing for every `meridian` command: `RUST_LOG` filters (default
//! `default`), lines go to stderr, and every span logs one line when it closes (with its fields
//! and timings: the proxy's and replicas' request spans are at `debug`, see
//! `meridian_replica::trace`). Built with `--features otel` and run with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP/gRPC.
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Flushes exported spans when dropped (at the end of `main`).
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<(
        opentelemetry_sdk::trace::SdkTracerProvider,
        tokio::runtime::Runtime,
    )>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some((p, rt)) = self.provider.take() {
            let _ = p.shutdown();
            rt.shutdown_background();
        }
    }
}

/// `service`: the OpenTelemetry service name (`meridian-replica`, `meridian-proxy`, ...).
pub fn init(default: &str, service: &str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::CLOSE);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, provider) = match otel::layer(service) {
            Ok(Some((l, p))) => (Some(l), Some(p)),
            Ok(None) => (None, None),
            Err(e) => {
                eprintln!("meridian: OpenTelemetry export is off: {e}");
                (None, None)
            }
        };
        registry.with(layer).init();
        Guard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = service;
        registry.init();
        Guard {}
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The OTLP layer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else none.
    /// The OTLP/gRPC client runs on a runtime of its own (one thread), whatever the command
    /// does with its own runtimes; it lives as long as the returned provider is used.
    #[allow(clippy::type_complexity)]
    pub fn layer<S>(
        service: &str,
    ) -> anyhow::Result<
        Option<(
            tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
            (SdkTracerProvider, tokio::runtime::Runtime),
        )>,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            return Ok(None);
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let exporter = {
            let _in_rt = rt.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_string())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("meridian");
        Ok(Some((
            tracing_opentelemetry::layer().with_tracer(tracer),
            (provider, rt),
        )))
    }
}
