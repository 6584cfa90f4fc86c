//! Application checks after a restore (the playbook's `/health` step, generalised): SQL, Redis and
//! HTTP checks against the restore targets, retried until they all pass or time runs out.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lifeboat_api::agent_job::{AgentRestoreJob, AgentValidateJob};
use lifeboat_api::common::{HttpCheck, RedisCheck, SqlCheck, ValidationCheck};
use lifeboat_api::restore_request::{CheckResult, canary_check_name};

use crate::error::{AgentError, Result};
use crate::jobs::Env;
use crate::postgres;

const RETRY: Duration = Duration::from_secs(2);

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
            let t0 = Instant::now();
            let outcome = match probe {
                Probe::Check(check) => one(env, &job.assets, check).map(|()| None),
                Probe::Canary(asset) => canary_check(env, asset).map(Some),
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

fn one(env: &Env, assets: &[AgentRestoreJob], check: &ValidationCheck) -> Result<()> {
    match (&check.sql, &check.redis, &check.http) {
        (Some(sql), _, _) => sql_check(env, assets, sql),
        (_, Some(redis), _) => redis_check(env, assets, redis),
        (_, _, Some(http)) => http_check(http),
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
) -> Result<lifeboat_api::agent_result::CanaryMarker> {
    let fail = |m: String| AgentError::new(lifeboat_api::agent_result::ErrorClass::Validation, m);
    let found = if let Some(source) = &a.asset.postgres {
        let target = a.target.as_ref().and_then(|t| t.postgres.as_ref());
        let conn = env.pg(target.map_or(&source.connection, |t| &t.connection))?;
        let databases = match target.and_then(|t| t.database.clone()) {
            Some(db) => vec![db],
            None => source.databases.clone(),
        };
        let mut oldest: Option<lifeboat_api::agent_result::CanaryMarker> = None;
        for db in &databases {
            let Some(m) = crate::canary::newest_postgres(&conn, db)? else {
                return Err(fail(format!(
                    "database {db} holds no canary marker: the restore lacks the data written just before backup {}",
                    a.backup_id
                )));
            };
            if oldest.as_ref().is_none_or(|o| m.written_at < o.written_at) {
                oldest = Some(m);
            }
        }
        oldest
    } else if let Some(source) = &a.asset.redis {
        let target = a.target.as_ref().and_then(|t| t.redis.as_ref());
        crate::canary::newest_redis(
            &env.redis(target.map_or(&source.connection, |t| &t.connection))?,
        )?
    } else if let Some(source) = &a.asset.object_storage {
        let target = a.target.as_ref().and_then(|t| t.object_storage.as_ref());
        crate::canary::newest_bucket(env, target.unwrap_or(&source.source))?
    } else {
        return Err(AgentError::config(format!(
            "{}: canary markers are PostgreSQL, Redis and bucket only",
            a.asset.name
        )));
    };
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

fn sql_check(env: &Env, assets: &[AgentRestoreJob], check: &SqlCheck) -> Result<()> {
    let a = restored(assets, &check.asset)?;
    let source =
        a.asset.postgres.as_ref().ok_or_else(|| {
            AgentError::config(format!("{} is not a PostgreSQL asset", check.asset))
        })?;
    let target = a.target.as_ref().and_then(|t| t.postgres.as_ref());
    let conn = env.pg(target.map_or(&source.connection, |t| &t.connection))?;
    let database = check
        .database
        .clone()
        .or_else(|| target.and_then(|t| t.database.clone()))
        .or_else(|| source.databases.first().cloned())
        .unwrap_or_else(|| "postgres".into());
    let got = postgres::query(&conn, &database, &check.query)?;
    if got == check.expect {
        Ok(())
    } else {
        Err(AgentError::new(
            lifeboat_api::agent_result::ErrorClass::Validation,
            format!("expected {:?}, got {got:?}", check.expect),
        ))
    }
}

fn redis_check(env: &Env, assets: &[AgentRestoreJob], check: &RedisCheck) -> Result<()> {
    let a = restored(assets, &check.asset)?;
    let source = a
        .asset
        .redis
        .as_ref()
        .ok_or_else(|| AgentError::config(format!("{} is not a Redis asset", check.asset)))?;
    let target = a.target.as_ref().and_then(|t| t.redis.as_ref());
    let conn = env.redis(target.map_or(&source.connection, |t| &t.connection))?;
    let fail = |m: String| AgentError::new(lifeboat_api::agent_result::ErrorClass::Validation, m);
    match &check.expect {
        Some(expect) => {
            let got = conn.run(check.db, &["GET", &check.key])?;
            if &got == expect {
                Ok(())
            } else {
                Err(fail(format!(
                    "{}: expected {expect:?}, got {got:?}",
                    check.key
                )))
            }
        }
        None => {
            let n = conn.run(check.db, &["EXISTS", &check.key])?;
            if n == "1" {
                Ok(())
            } else {
                Err(fail(format!("key {} does not exist", check.key)))
            }
        }
    }
}

/// A plain HTTP/1.1 GET: health endpoints inside a cluster are usually plain HTTP, and this keeps
/// a TLS stack out of the agent until an HTTPS check needs one.
fn http_check(check: &HttpCheck) -> Result<()> {
    let fail = |m: String| AgentError::new(lifeboat_api::agent_result::ErrorClass::Validation, m);
    let rest = check.url.strip_prefix("http://").ok_or_else(|| {
        AgentError::config(format!(
            "{}: only http:// checks are supported by this agent build",
            check.url
        ))
    })?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let timeout = check.timeout.as_std();
    let socket = addr
        .to_socket_addrs()
        .map_err(|e| fail(format!("{}: {e}", check.url)))?
        .next()
        .ok_or_else(|| fail(format!("{}: no address", check.url)))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)
        .map_err(|e| fail(format!("{}: {e}", check.url)))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: lifeboat-agent\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(format!("{}: {e}", check.url)))?;
    // Read up to the end of the status line (it may arrive in pieces).
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .map_err(|e| fail(format!("{}: {e}", check.url)))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(format!("{}: not an HTTP response", check.url)))?;
    if status == check.expected_status {
        Ok(())
    } else {
        Err(fail(format!(
            "{}: status {status}, expected {}",
            check.url, check.expected_status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve(status: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                // Read the whole request first: closing with unread bytes resets the connection.
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        format!("http://{addr}/health")
    }

    fn check(url: String) -> HttpCheck {
        serde_json::from_value(serde_json::json!({"url": url})).unwrap()
    }

    #[test]
    fn http_checks_compare_the_status() {
        assert!(http_check(&check(serve("200 OK"))).is_ok());
        let e = http_check(&check(serve("503 Service Unavailable"))).unwrap_err();
        assert!(
            e.message.contains("status 503, expected 200"),
            "{}",
            e.message
        );
        let closed = crate::local::free_port().unwrap();
        assert!(http_check(&check(format!("http://127.0.0.1:{closed}/health"))).is_err());
        assert_eq!(
            http_check(&check("https://example.com/".into()))
                .unwrap_err()
                .class,
            lifeboat_api::agent_result::ErrorClass::Config
        );
    }
}
