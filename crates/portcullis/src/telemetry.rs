//! OpenTelemetry traces, configured by the standard `OTEL_*` environment variables and
//! off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
//!
//! Read here: the endpoint, `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the
//! default, or `grpc`), `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_TRACES_EXPORTER` (`otlp` or `none`) and `OTEL_SDK_DISABLED`. A value that would
//! silently trace differently from what was asked (an unknown sampler, a ratio outside
//! 0..1, a protocol not built in) stops start-up with the variable named. The exporter
//! itself reads the rest (`OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_INSECURE`,
//! `OTEL_BSP_*`), and the resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! (`service.name` defaults to `portcullis`).

use anyhow::{Context as _, bail};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

/// The running exporter; flushes what is buffered when dropped at exit.
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// How traces are exported, read from the environment.
#[derive(Debug, PartialEq)]
pub(crate) struct Settings {
    pub endpoint: String,
    pub grpc: bool,
    pub sampler: SamplerChoice,
}

#[derive(Debug, PartialEq)]
pub(crate) enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedOn,
    ParentBasedOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(&self) -> Sampler {
        match *self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerChoice::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// The tracing settings in `vars`; `None` when tracing is off.
pub(crate) fn settings(vars: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Settings>> {
    let get = |name: &str| {
        vars(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(disabled) = get("OTEL_SDK_DISABLED") {
        match disabled.to_ascii_lowercase().as_str() {
            "true" => return Ok(None),
            "false" => {}
            other => bail!("OTEL_SDK_DISABLED={other}: write true or false"),
        }
    }
    match get("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!(
            "OTEL_TRACES_EXPORTER={other}: Portcullis exports traces over OTLP only; write otlp (or none), and point OTEL_EXPORTER_OTLP_ENDPOINT at a collector that forwards to {other}"
        ),
    }
    let Some(endpoint) =
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    let (protocol_var, protocol) = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            get("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
        ),
    };
    let grpc = match protocol.as_str() {
        "http/protobuf" => false,
        "grpc" => true,
        other => {
            bail!("{protocol_var}={other}: write http/protobuf or grpc (http/json is not built in)")
        }
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!(
            "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: write a URL such as http://otel-collector:4318 (http/protobuf) or http://otel-collector:4317 (grpc)"
        );
    }
    let ratio = || -> anyhow::Result<f64> {
        let Some(arg) = get("OTEL_TRACES_SAMPLER_ARG") else {
            return Ok(1.0);
        };
        match arg.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => bail!(
                "OTEL_TRACES_SAMPLER_ARG={arg}: write the fraction of traces to keep, from 0 to 1 (0.01 for 1%)"
            ),
        }
    };
    let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => SamplerChoice::ParentBasedOn,
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
        Some("parentbased_always_off") => SamplerChoice::ParentBasedOff,
        Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()?),
        Some(other) => bail!(
            "OTEL_TRACES_SAMPLER={other}: write always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        ),
    };
    Ok(Some(Settings {
        endpoint,
        grpc,
        sampler,
    }))
}

/// Starts exporting traces when the environment asks for it. Call inside the Tokio
/// runtime (the gRPC exporter's connection lives on it).
pub(crate) fn start() -> anyhow::Result<Option<Tracing>> {
    let Some(settings) = settings(|name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    let exporter = if settings.grpc {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
    }
    .context("cannot set up the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name("portcullis");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(settings.sampler.sampler())
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    portcullis_core::trace::enable();
    tracing::info!(
        endpoint = %settings.endpoint,
        protocol = if settings.grpc { "grpc" } else { "http/protobuf" },
        sampler = ?settings.sampler,
        "exporting traces over OTLP"
    );
    Ok(Some(Tracing { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> anyhow::Result<Option<Settings>> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(from(&[]).unwrap(), None);
        assert_eq!(from(&[("OTEL_TRACES_SAMPLER", "always_on")]).unwrap(), None);
        let on = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        assert!(!on.grpc);
        assert_eq!(on.sampler, SamplerChoice::ParentBasedOn);
        let off = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(off.unwrap(), None);
        let none = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert_eq!(none.unwrap(), None);
    }

    #[test]
    fn a_value_that_would_trace_differently_is_refused_by_name() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let e = from(&[base, ("OTEL_TRACES_SAMPLER", "ratio")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_SAMPLER=ratio"), "{e}");
        let e = from(&[
            base,
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "5"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        let e = from(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
        let e = from(&[base, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_TRACES_EXPORTER"), "{e}");
        let ok = from(&[
            base,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ])
        .unwrap()
        .unwrap();
        assert!(ok.grpc);
        assert_eq!(ok.sampler, SamplerChoice::ParentBasedRatio(0.01));
    }
}
