//! Application checks after a restore (the playbook's `/health` step, generalised): SQL, Redis and
//! HTTP checks against the restore targets, retried until they all pass or time runs out. Every
//! attempt is bounded by its check's `timeout` and by what is left of the validation's: the
//! deadline stops a check in progress, not only the next attempt.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lifeboat_api::agent_job::{AgentRestoreJob, AgentValidateJob};
use lifeboat_api::agent_result::ErrorClass;
use lifeboat_api::common::{HttpCheck, RedisCheck, SqlCheck, ValidationCheck};
use lifeboat_api::restore_request::{CheckResult, canary_check_name};

use crate::error::{AgentError, Result};
use crate::jobs::Env;
use crate::postgres;

const RETRY: Duration = Duration::from_secs(2);
/// The bound of a canary read (it has no timeout of its own).
const CANARY_TIMEOUT: Duration = Duration::from_secs(30);

/// What is checked: a declared check, or the canary marker of an asset that writes them.
enum Probe<'a> {
    Check(&'a ValidationCheck),
    Canary(&'a AgentRestoreJob),
}

/// Runs every check, and for each restored asset that writes canary markers the canary check
/// (`canary/<asset>`: the target must hold its backup's own marker), until all pass or
/// `job.timeout` passes; returns each check's last result.
pub fn run(env: &Env, job: &AgentValidateJob) -> Vec<CheckResult> {
    let deadline = Instant::now() + job.timeout.as_std();
    let probes: Vec<(String, Probe)> = job
        .checks
        .iter()
        .map(|c| (c.name.clone(), Probe::Check(c)))
        .chain(
            job.assets
                .iter()
                .filter(|a| a.asset.canary)
                .map(|a| (canary_check_name(&a.asset.name), Probe::Canary(a))),
        )
        .collect();
    let mut results: Vec<CheckResult> = probes
        .iter()
        .map(|(name, _)| CheckResult {
            name: name.clone(),
            passed: false,
            message: String::new(),
            attempts: 0,
            duration_seconds: 0.0,
            canary: None,
        })
        .collect();
    loop {
        for ((_, probe), result) in probes.iter().zip(results.iter_mut()) {
            if result.passed {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if result.message.is_empty() {
                    result.message = "the validation timed out before this check ran".into();
                }
                continue;
            }
            let t0 = Instant::now();
            let outcome = match probe {
                Probe::Check(check) => one(env, &job.assets, check, left).map(|()| None),
                Probe::Canary(asset) => {
                    canary_check(env, asset, left.min(CANARY_TIMEOUT)).map(Some)
                }
            };
            result.attempts += 1;
            result.duration_seconds += t0.elapsed().as_secs_f64();
            match outcome {
                Ok(canary) => {
                    result.passed = true;
                    result.message.clear();
                    result.canary = canary;
                }
                Err(e) => result.message = e.message,
            }
        }
        if results.iter().all(|r| r.passed) || Instant::now() + RETRY > deadline {
            return results;
        }
        std::thread::sleep(RETRY);
    }
}

/// The full report of a validation, written next to the restored backups: every check with its
/// message uncut, which the termination message cannot always hold.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    pub namespace: String,
    pub policy: String,
    /// The restore the checks validated (the RestoreRequest's name).
    pub restore: String,
    pub finished_at: jiff::Timestamp,
    /// The restored backups, as `<asset>/<backup id>`.
    pub backups: Vec<String>,
    pub checks: Vec<CheckResult>,
}

/// The file name of restore `name`'s report, beside the policy's backups and drill evidence
/// (`<namespace>/<policy>/restore-<name>.checks.json`).
pub fn report_file_name(name: &str) -> String {
    format!("restore-{name}.checks.json")
}

/// Writes the report of `checks` for restore `name` at the restored backups' location; returns
/// where. The name becomes part of a file name, so it must be a Kubernetes object name (lower
/// case letters, digits, `-` and `.`, alphanumeric at both ends, at most 253 characters).
pub fn write_report(
    env: &Env,
    job: &AgentValidateJob,
    name: &str,
    checks: &[CheckResult],
) -> Result<String> {
    let object_name = name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !object_name {
        return Err(AgentError::config(format!(
            "invalid restore name {:?} for the report",
            name.chars().take(80).collect::<String>()
        )));
    }
    let first = job.assets.first().ok_or_else(|| {
        AgentError::config("the report goes beside the restored backups: the job names none")
    })?;
    let scope = crate::layout::Scope::new(&job.namespace, &first.policy)?;
    let report = Report {
        namespace: job.namespace.clone(),
        policy: first.policy.clone(),
        restore: name.to_owned(),
        finished_at: jiff::Timestamp::now(),
        backups: job
            .assets
            .iter()
            .map(|a| format!("{}/{}", a.asset.name, a.backup_id))
            .collect(),
        checks: checks.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| AgentError::config(format!("serializing the report: {e}")))?;
    env.store
        .put_policy_file(&scope, &report_file_name(name), json)
}

/// One attempt of `check`, given up after its own timeout or `left`, whichever comes first.
fn one(
    env: &Env,
    assets: &[AgentRestoreJob],
    check: &ValidationCheck,
    left: Duration,
) -> Result<()> {
    match (&check.sql, &check.redis, &check.http) {
        (Some(sql), _, _) => sql_check(env, assets, sql, left.min(sql.timeout.as_std())),
        (_, Some(redis), _) => redis_check(env, assets, redis, left.min(redis.timeout.as_std())),
        (_, _, Some(http)) => http_check(env, http, left.min(http.timeout.as_std())),
        _ => Err(AgentError::config(format!(
            "check {} has no kind",
            check.name
        ))),
    }
}

/// The newest canary marker in the restored target of `a` (the oldest over its databases):
/// it must be the marker written just before the backup that was restored. None, or an older
/// one, means the target does not hold that backup's data.
fn canary_check(
    env: &Env,
    a: &AgentRestoreJob,
    bound: Duration,
) -> Result<lifeboat_api::agent_result::CanaryMarker> {
    let fail = |m: String| AgentError::new(ErrorClass::Validation, m);
    let found = crate::kinds::driver(&a.asset.source).newest_canary(
        env,
        a.target.as_ref().map(|t| &t.to),
        &a.backup_id,
        bound,
    )?;
    let found = found.ok_or_else(|| {
        fail(format!(
            "no canary marker in the restored target: it lacks the data written just before backup {}",
            a.backup_id
        ))
    })?;
    if found.id != a.backup_id {
        return Err(fail(format!(
            "the newest canary marker in the restored target is {:?} (written {}), not backup {}'s",
            found.id, found.written_at, a.backup_id
        )));
    }
    Ok(found)
}

fn restored<'a>(assets: &'a [AgentRestoreJob], name: &str) -> Result<&'a AgentRestoreJob> {
    assets
        .iter()
        .find(|a| a.asset.name == name)
        .ok_or_else(|| AgentError::config(format!("no restored asset named {name:?}")))
}

fn sql_check(
    env: &Env,
    assets: &[AgentRestoreJob],
    check: &SqlCheck,
    bound: Duration,
) -> Result<()> {
    let a = restored(assets, &check.asset)?;
    let source = a
        .asset
        .postgres()
        .ok_or_else(|| AgentError::config(format!("{} is not a PostgreSQL asset", check.asset)))?;
    let target = a.target.as_ref().and_then(|t| t.postgres());
    let conn = env.pg(target.map_or(&source.connection, |t| &t.connection))?;
    let database = check
        .database
        .clone()
        .or_else(|| target.and_then(|t| t.database.clone()))
        .or_else(|| source.databases.first().cloned())
        .unwrap_or_else(|| "postgres".into());
    postgres::check(&conn, &database, &check.query, &check.expect, bound)
}

fn redis_check(
    env: &Env,
    assets: &[AgentRestoreJob],
    check: &RedisCheck,
    bound: Duration,
) -> Result<()> {
    let a = restored(assets, &check.asset)?;
    let source = a
        .asset
        .redis()
        .ok_or_else(|| AgentError::config(format!("{} is not a Redis asset", check.asset)))?;
    let target = a.target.as_ref().and_then(|t| t.redis());
    let conn = env.redis(target.map_or(&source.connection, |t| &t.connection))?;
    conn.check(check.db, &check.key, check.expect.as_deref(), bound)
}

/// An HTTP check's URL as admission accepts it: printable ASCII (a space, a line break or a
/// control character is refused, never sent), http or https, with a host.
pub fn check_url(url: &str) -> Result<http::Uri> {
    let refuse = |why: &str| AgentError::config(format!("the check's url {why}"));
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "holds a space, a line break, a control or a non-ASCII character (percent-encode it)",
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| refuse(&format!("is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(refuse("must start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("has no host"));
    }
    Ok(uri)
}

/// One GET through hyper (http or https; TLS checked against `caSecret`, else the system's
/// CAs), bounded in time from the connection to the status line. Redirects are not followed: a
/// 3xx is the status compared.
fn http_check(env: &Env, check: &HttpCheck, bound: Duration) -> Result<()> {
    let fail = |m: String| AgentError::new(ErrorClass::Validation, m);
    let uri = check_url(&check.url)?;
    let https = uri.scheme_str() == Some("https");
    let roots = match (&check.ca_secret, https) {
        (Some(r), _) => Some(crate::tls::pem_roots(
            &env.secret(r)?,
            &format!("caSecret {}/{}", r.name, r.key),
        )?),
        (None, true) => Some(crate::tls::system_roots()?),
        (None, false) => None,
    };
    let verify = if roots.is_some() {
        crate::tls::Verify::ChainAndName
    } else {
        // Plain http: the TLS settings are never used (a redirect to https is not followed).
        crate::tls::Verify::Nothing
    };
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(bound));
    tcp.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(verify, roots)?);
    let connector = if https {
        builder.https_only()
    } else {
        builder.https_or_http()
    }
    .enable_http1()
    .wrap_connector(tcp);
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "lifeboat-agent")
        .body(Empty::<Bytes>::new())
        .map_err(|e| AgentError::config(format!("the check's request: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::config(format!("tokio runtime: {e}")))?;
    let status = rt.block_on(async {
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        match tokio::time::timeout(bound, client.request(request)).await {
            Ok(Ok(response)) => Ok(response.status().as_u16()),
            Ok(Err(e)) => Err(fail(format!("the request failed: {}", innermost(&e)))),
            Err(_) => Err(fail(format!("no response within {bound:?}"))),
        }
    })?;
    if status == check.expected_status {
        Ok(())
    } else {
        Err(fail(format!(
            "status {status}, expected {}",
            check.expected_status
        )))
    }
}

/// The root cause of an error (a refused connection, an unknown certificate issuer), cut short.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_admission_refuses_are_refused_here_too() {
        for bad in [
            "http://a/health\r\nX-Injected: 1",
            "http://a/he alth",
            "http://a/\u{7f}",
            "http://a/é",
            "ftp://a/health",
            "file:///etc/passwd",
            "/health",
            "http://",
        ] {
            assert_eq!(
                check_url(bad).map_err(|e| e.class),
                Err(ErrorClass::Config),
                "{bad:?}"
            );
        }
        for good in [
            "http://shop.staging.svc:8080/health?full=1",
            "https://shop.example/health",
            "http://[::1]:8080/health",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
    }
}
