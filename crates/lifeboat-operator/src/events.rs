//! Kubernetes Events (events.k8s.io/v1), published the way kube-runtime's `Recorder` does (a
//! repeat of the same type, reason and action about the same object within six minutes becomes
//! the first Event's series, not a new Event) at a cost that does not grow with the Events
//! already sent. kube-runtime's `Recorder` keeps every Event it published whole for six minutes
//! and scans all of them, under a write lock, at each publish: at 10,000 policies that is 20,000
//! Events held (tens of MiB) and a scan of up to 20,000 per publish. This keeps a fingerprint,
//! the Event's name and its count per series, and forgets expired series once per TTL.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

/// How long a series stays open (kube-runtime's and client-go's value).
const TTL: Duration = Duration::from_secs(6 * 60);

/// The controller that publishes, and its instance.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

/// One Event to publish.
pub struct Event<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    /// What the Event is about: repeats with the same type, reason and action fold into one.
    pub action: &'a str,
    pub note: String,
}

/// The series an Event opened: its name, how often it was seen, and when last.
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes Events as one controller (see the module's documentation).
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Mutex<OpenSeries>,
}

/// The open series by fingerprint, and when expired ones were last forgotten.
struct OpenSeries {
    open: HashMap<u64, Series>,
    swept: Instant,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Mutex::new(OpenSeries {
                open: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    fn fingerprint(&self, ev: &Event<'_>, regarding: &ObjectReference) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        matches!(ev.type_, EventType::Warning).hash(&mut h);
        ev.reason.hash(&mut h);
        ev.action.hash(&mut h);
        (
            &regarding.api_version,
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
            &regarding.uid,
        )
            .hash(&mut h);
        h.finish()
    }

    /// The series `key` continues, counted once more; `None` when it opens a new one.
    fn continued(&self, key: u64) -> Option<(String, String, i32)> {
        let mut s = self.series.lock().ok()?;
        let now = Instant::now();
        if now.duration_since(s.swept) >= TTL {
            s.open.retain(|_, v| now.duration_since(v.last) < TTL);
            s.swept = now;
        }
        let series = s.open.get_mut(&key)?;
        if now.duration_since(series.last) >= TTL {
            return None;
        }
        series.count += 1;
        series.last = now;
        Some((series.namespace.clone(), series.name.clone(), series.count))
    }

    /// Publishes `ev` about `regarding` (in its namespace, `default` for cluster objects).
    pub async fn publish(
        &self,
        ev: &Event<'_>,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = self.fingerprint(ev, regarding);
        let now = Timestamp::now();
        if let Some((ns, name, count)) = self.continued(key) {
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            let events = Api::<K8sEvent>::namespaced(self.client.clone(), &ns);
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Deleted meanwhile (the API server keeps Events an hour by default): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            action: Some(ev.action.to_owned()),
            reason: Some(ev.reason.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(ev.note.clone()),
            metadata: ObjectMeta {
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await?;
        if let Ok(mut s) = self.series.lock() {
            s.open.insert(
                key,
                Series {
                    namespace: ns,
                    name,
                    count: 1,
                    last: Instant::now(),
                },
            );
        }
        Ok(())
    }
}
