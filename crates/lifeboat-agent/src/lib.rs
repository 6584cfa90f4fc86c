//! Lifeboat's agent: the data path. It runs inside the Jobs the operator creates (configured by
//! the `LIFEBOAT_JOB` document and mounted Secret files) and on a laptop (configured by the same
//! custom resources as YAML files), with the playbook toolkit's verbs.

pub mod adopt;
pub mod bucket;
pub mod canary;
pub mod catalog;
pub mod copies;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod evidence;
pub mod fault;
pub mod jobs;
pub(crate) mod kinds;
pub mod kubestate;
pub mod layout;
pub mod local;
pub mod notify;
pub mod objectlock;
pub mod pgarchive;
pub mod pitr;
pub mod postgres;
pub mod redis;
pub mod redis_load;
pub mod resp;
pub mod retention;
pub mod signing;
pub mod stream;
pub mod tls;
pub mod tools;
pub mod validate;
pub mod wal;
