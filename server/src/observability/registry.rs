//! One Service's Prometheus registry: a recorder that is never installed
//! globally (tests run several services in one process), rendered by our
//! own `/metrics` route.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusRecorder};

use super::names::{self, Kind};

/// Required by the `Recorder` API; the Prometheus recorder ignores it.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The registry of one Service.
pub struct Registry {
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry with vLLM's histogram buckets; token-count buckets reach
    /// `max_model_len`.
    pub fn new(max_model_len: usize) -> Self {
        let builder = match with_buckets(max_model_len) {
            Ok(b) => b,
            Err(e) => {
                // Only empty bucket lists are refused, and none is empty.
                tracing::error!("metric buckets refused ({e}); histograms become summaries");
                PrometheusBuilder::new().with_recommended_naming(true)
            }
        };
        let recorder = builder.build_recorder();
        for &(name, kind, help) in names::ALL {
            let name = KeyName::from_const_str(name);
            let help = help.into();
            match kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        Self { recorder }
    }

    /// The counter `name{labels}`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// The histogram `name{labels}`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Moves recorded histogram samples into their buckets, so memory stays
    /// flat between scrapes.
    pub fn run_upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn with_buckets(max_model_len: usize) -> Result<PrometheusBuilder, BuildError> {
    let tokens = names::buckets_1_2_5(max_model_len);
    let table: [(&str, &[f64]); 6] = [
        (names::TIME_TO_FIRST_TOKEN, names::TTFT_BUCKETS),
        (names::INTER_TOKEN_LATENCY, names::ITL_BUCKETS),
        (names::E2E_REQUEST_LATENCY, names::REQUEST_LATENCY_BUCKETS),
        (names::REQUEST_QUEUE_TIME, names::REQUEST_LATENCY_BUCKETS),
        (names::REQUEST_PROMPT_TOKENS, &tokens),
        (names::REQUEST_GENERATION_TOKENS, &tokens),
    ];
    // Counters get `_total`, as vLLM's Prometheus client writes them.
    let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
    for (name, buckets) in table {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)?;
    }
    Ok(builder)
}
