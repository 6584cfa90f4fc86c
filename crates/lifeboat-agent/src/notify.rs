//! A drill's result posted to its webhook (`notify`), from the drill's own namespace: the URL is
//! a credential, read here from the mounted Secret file so that the operator never reads Secret
//! data. The Job runs once (`backoffLimit: 0`) and this sends once: no retry, no redirect.
//!
//! What comes back is deliberately coarse. The URL is whatever a namespace user wrote, so a
//! status code or an answer body reported from it would let them probe what the pod can reach
//! (which ports answer, which paths exist). The outcome says "sent" (a 2xx answer) or "not
//! delivered", never why the remote refused, and never the URL (docs/security.md).

use std::time::Duration;

use lifeboat_api::agent_job::AgentNotifyJob;
use lifeboat_api::agent_result::ErrorClass;
use lifeboat_api::drill_schedule::host_matches;

use crate::error::{AgentError, Result};
use crate::jobs::Env;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a webhook URL is refused before anything is sent (the message names neither the URL nor
/// its host: the host alone can be the secret part of an internal endpoint).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not a URL, or not http(s).
    #[error("the webhook URL in the Secret is not an http or https URL")]
    NotHttp,
    /// The platform team restricted webhook hosts and this one is not among them.
    #[error("the webhook URL's host is not one the platform allows (drills.webhookAllowedHosts)")]
    HostNotAllowed,
}

/// The URL to post to, if `text` is an http(s) URL on an allowed host (any host when `allowed`
/// is empty).
pub fn checked_url(
    text: &str,
    allowed: &[String],
) -> std::result::Result<reqwest::Url, UrlRefused> {
    let url = reqwest::Url::parse(text.trim()).map_err(|_| UrlRefused::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRefused::NotHttp);
    }
    let host = url.host_str().ok_or(UrlRefused::NotHttp)?;
    // IPv6 literals come bracketed; patterns name them bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !allowed.is_empty() && !host_matches(allowed, host) {
        return Err(UrlRefused::HostNotAllowed);
    }
    Ok(url)
}

/// Posts `{"text": job.text}` to the webhook in `job.webhook_secret`, once.
pub fn send(env: &Env, job: &AgentNotifyJob) -> Result<()> {
    let url = checked_url(&env.secret(&job.webhook_secret)?, &job.allowed_hosts)
        .map_err(|e| AgentError::config(e.to_string()))?;
    let body = serde_json::to_vec(&serde_json::json!({ "text": job.text }))
        .map_err(|e| AgentError::config(format!("serializing the notification: {e}")))?;
    // reqwest's errors carry the URL: none of them is shown, only the fixed message below.
    let not_delivered = || {
        AgentError::new(
            ErrorClass::SourceUnreachable,
            "the webhook did not accept the notification (no connection, no answer within 10s, or a non-2xx answer; which one is not reported)",
        )
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        // Straight to the URL's host, the one the allowlist checked: no proxy from the pod's
        // environment.
        .no_proxy()
        .build()
        .map_err(|_| AgentError::config("building the HTTP client"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::config(format!("runtime: {e}")))?;
    // Sent inside the runtime: the request's timers need its reactor.
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let status = rt
        .block_on(async { request.send().await })
        .map_err(|_| not_delivered())?
        .status();
    if status.is_success() {
        Ok(())
    } else {
        Err(not_delivered())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_http_urls_on_allowed_hosts_pass() {
        let allowed = vec![
            "hooks.slack.com".to_owned(),
            "*.chat.example.com".to_owned(),
        ];
        for ok in [
            "https://hooks.slack.com/services/T/B/x",
            "http://a.chat.example.com:8080/hook",
            "  https://HOOKS.slack.com/x\n",
        ] {
            assert!(checked_url(ok, &allowed).is_ok(), "{ok}");
        }
        for (bad, why) in [
            (
                "https://hooks.slack.com.evil.io/x",
                UrlRefused::HostNotAllowed,
            ),
            ("https://chat.example.com/x", UrlRefused::HostNotAllowed),
            ("http://10.0.0.1:6443/api", UrlRefused::HostNotAllowed),
            ("http://[::1]:80/", UrlRefused::HostNotAllowed),
            ("file:///etc/passwd", UrlRefused::NotHttp),
            ("gopher://hooks.slack.com/", UrlRefused::NotHttp),
            ("hooks.slack.com/x", UrlRefused::NotHttp),
        ] {
            assert_eq!(checked_url(bad, &allowed).unwrap_err(), why, "{bad}");
        }
        // No restriction configured: any http(s) host, IPv6 literals included.
        assert!(checked_url("http://[::1]:8080/x", &[]).is_ok());
        assert_eq!(
            checked_url("ftp://x/", &[]).unwrap_err(),
            UrlRefused::NotHttp
        );
        // An IPv6 literal can be allowed by name.
        assert!(checked_url("http://[::1]:8080/x", &["::1".to_owned()]).is_ok());
    }

    #[test]
    fn refusals_never_name_the_url_or_its_host() {
        for e in [UrlRefused::NotHttp, UrlRefused::HostNotAllowed] {
            let m = e.to_string();
            assert!(!m.contains("://") && !m.contains("slack"), "{m}");
        }
    }
}
