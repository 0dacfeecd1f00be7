//! Log events captured on the test's own thread, to check what duet logs and at which level.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The events logged while it is installed, as (level, message).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl Captured {
    /// Captures the events of this thread (all of a current-thread runtime's tasks) until the guard
    /// drops.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// How many events at `level` had this message.
    pub fn count(&self, level: tracing::Level, message: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(l, m)| *l == level && m == message).count()
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push((*event.metadata().level(), message.0));
    }
}
