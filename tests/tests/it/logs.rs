//! The binary's one tracing subscriber (as the one metrics recorder), installed on first use, with
//! two layers tests read: the info-and-above events, each with the thread it was logged on (a test on
//! a current-thread runtime counts its own), and the `trace_id` every span records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The events logged at info and above, as (thread, level, message).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<(ThreadId, tracing::Level, String)>>>);

/// The `trace_id` every span records, by span name.
#[derive(Clone, Default)]
pub struct TraceIds(pub Arc<Mutex<HashMap<&'static str, Vec<String>>>>);

fn installed() -> &'static (Captured, TraceIds) {
    static LAYERS: OnceLock<(Captured, TraceIds)> = OnceLock::new();
    LAYERS.get_or_init(|| {
        let (captured, ids) = (Captured::default(), TraceIds::default());
        let subscriber =
            tracing_subscriber::registry().with(captured.clone().with_filter(LevelFilter::INFO)).with(ids.clone());
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this process");
        (captured, ids)
    })
}

/// The captured events.
pub fn captured() -> &'static Captured {
    &installed().0
}

/// The recorded trace ids.
pub fn trace_ids() -> &'static TraceIds {
    &installed().1
}

impl Captured {
    /// How many events at `level` with this message were logged on the calling thread.
    pub fn count_here(&self, level: tracing::Level, message: &str) -> usize {
        let here = std::thread::current().id();
        self.0.lock().unwrap().iter().filter(|(t, l, m)| *t == here && *l == level && m == message).count()
    }
}

/// One field of an event or span, by name.
struct Field1(&'static str, Option<String>);

impl Visit for Field1 {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.0 {
            self.1 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.0 {
            self.1 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = Field1("message", None);
        event.record(&mut message);
        let entry = (std::thread::current().id(), *event.metadata().level(), message.1.unwrap_or_default());
        self.0.lock().unwrap().push(entry);
    }
}

impl<S> Layer<S> for TraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        let mut found = Field1("trace_id", None);
        values.record(&mut found);
        if let (Some(trace), Some(span)) = (found.1, ctx.span(id)) {
            self.0.lock().unwrap().entry(span.name()).or_default().push(trace);
        }
    }
}
