//! What every reconcile is handed: the client, the Event recorder, metrics and settings.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::config::AgentConfig;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub agent: AgentConfig,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, agent: AgentConfig) -> Self {
        let reporter = Reporter {
            controller: crate::config::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            agent,
        }
    }
}
