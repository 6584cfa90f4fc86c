//! PostgreSQL: `pg_dump` in the custom archive format, streamed through zstd and sha256 to the
//! destination (never staged whole on disk); restored with `pg_restore` in parallel after the
//! checksum is verified. The tools get every connection parameter from libpq's environment
//! (`PGDATABASE` included: libpq takes environment values literally, where a `--dbname` value
//! is read as a connection string) and the password from a private PGPASSFILE scoped to
//! `host:port:database:user`, never argv. Everything else (validation checks, canaries, the
//! empty-source test, `CREATE DATABASE`) goes through the tokio-postgres driver, with each
//! parameter set on its own and every call bounded in time.

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_result::{ErrorClass, ToolInfo};
use lifeboat_api::common::SslMode;
use tokio_postgres::SimpleQueryMessage;

use crate::error::{AgentError, Result};
use crate::stream::Stored;
use crate::tls::Verify;
use crate::tools;

/// The longest a validation check's statement may run, whatever its `timeout` says.
pub const CHECK_CAP: Duration = Duration::from_secs(300);
/// The bound of the agent's own statements (canaries, the empty-source test, the local drill's
/// sample data).
const OWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a connection may take to open (libpq's `connect_timeout` for the tools too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What status may show of a reason, at most.
const REASON_MAX: usize = 200;

/// A connection, with the password already read from its file.
#[derive(Clone, Debug)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub ssl_mode: SslMode,
}

fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// `s` with `\` and `:` escaped, as a field of a password file.
fn pgpass_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

impl Conn {
    /// Environment for libpq tools connecting to `database`: every parameter as its own
    /// variable (none is ever parsed as a connection string) and a PGPASSFILE in a private
    /// temporary directory (kept alive by the returned guard) whose one line names this host,
    /// port, database and user, so the password goes nowhere else.
    pub(crate) fn env(
        &self,
        cmd: &mut Command,
        database: &str,
    ) -> Result<Option<tempfile::TempDir>> {
        for var in [
            "PGPASSWORD",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGHOSTADDR",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", database)
            .env("PGSSLMODE", ssl_mode_name(self.ssl_mode))
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
        let Some(password) = &self.password else {
            cmd.env("PGPASSFILE", "/dev/null");
            return Ok(None);
        };
        let dir = tempfile::tempdir().map_err(|e| AgentError::storage("temporary directory", e))?;
        let path = dir.path().join("pgpass");
        let line = format!(
            "{}:{}:{}:{}:{}\n",
            pgpass_field(&self.host),
            self.port,
            pgpass_field(database),
            pgpass_field(&self.user),
            pgpass_field(password)
        );
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AgentError::storage(path.display(), e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| AgentError::storage(path.display(), e))?;
        cmd.env("PGPASSFILE", &path);
        Ok(Some(dir))
    }

    /// The driver's settings for `database`, each parameter set on its own.
    fn config(&self, database: &str, connect_timeout: Duration) -> Result<tokio_postgres::Config> {
        // tokio-postgres reads a host starting with '/' as a socket directory.
        if self.host.is_empty() || self.host.starts_with('/') {
            return Err(AgentError::config(format!(
                "PostgreSQL host {:?} is not a host name or address",
                self.host
            )));
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .connect_timeout(connect_timeout)
            .application_name("lifeboat-agent");
        if let Some(p) = &self.password {
            config.password(p);
        }
        Ok(config)
    }

    /// A driver connection to `database` with TLS as `sslMode` asks, as libpq would: `allow`
    /// tries without TLS first, `prefer` with TLS first, `require` insists on TLS without
    /// checking the certificate, `verify-ca` checks it against the system's trust store and
    /// `verify-full` the host name as well.
    async fn connect(
        &self,
        database: &str,
        connect_timeout: Duration,
    ) -> Result<tokio_postgres::Client> {
        use tokio_postgres::config::SslMode as Driver;
        let config = self.config(database, connect_timeout)?;
        match self.ssl_mode {
            SslMode::Disable => open(config, Driver::Disable, Verify::Nothing).await,
            SslMode::Allow => match open(config.clone(), Driver::Disable, Verify::Nothing).await {
                Ok(client) => Ok(client),
                Err(_) => open(config, Driver::Require, Verify::Nothing).await,
            },
            SslMode::Prefer => open(config, Driver::Prefer, Verify::Nothing).await,
            SslMode::Require => open(config, Driver::Require, Verify::Nothing).await,
            SslMode::VerifyCa => open(config, Driver::Require, Verify::Chain).await,
            SslMode::VerifyFull => open(config, Driver::Require, Verify::ChainAndName).await,
        }
    }
}

async fn open(
    mut config: tokio_postgres::Config,
    mode: tokio_postgres::config::SslMode,
    verify: Verify,
) -> Result<tokio_postgres::Client> {
    let roots = match verify {
        Verify::Nothing => None,
        _ => Some(crate::tls::system_roots()?),
    };
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(verify, roots)?);
    let (client, connection) = config
        .ssl_mode(mode)
        .connect(tls)
        .await
        .map_err(|e| driver_error("connecting", &e, true))?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; errors surface on the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs `work` on a runtime of its own, given up after `bound`.
fn bounded<T>(bound: Duration, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::config(format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        tokio::time::timeout(bound, work).await.unwrap_or_else(|_| {
            Err(AgentError::new(
                ErrorClass::Timeout,
                format!("{what}: no answer within {bound:?}"),
            ))
        })
    })
}

/// The class and a message of a driver error. With `with_message`, the server's own message is
/// kept (the agent's own statements, whose messages carry no user data); without it only the
/// SQLSTATE and its condition name (a check's statement: messages echo data).
fn driver_error(what: &str, e: &tokio_postgres::Error, with_message: bool) -> AgentError {
    let Some(db) = e.as_db_error() else {
        // Not a server error: the connection failed or broke, or the server asked for a
        // password none was given for (no data in these messages; tokio-postgres exposes no
        // kind for them, only its text).
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        let class = if text.contains("password missing") || text.contains("authentication error") {
            ErrorClass::Auth
        } else if text.contains("timeout") {
            ErrorClass::Timeout
        } else {
            ErrorClass::SourceUnreachable
        };
        return AgentError::new(class, truncate(&format!("{what}: {text}")));
    };
    let code = db.code().code();
    let class = match code {
        "28P01" | "28000" => ErrorClass::Auth,
        "3D000" | "42P01" | "3F000" => ErrorClass::NotFound,
        "57014" => ErrorClass::Timeout,
        "57P01" | "57P02" | "57P03" | "53300" => ErrorClass::SourceUnreachable,
        _ => ErrorClass::ToolFailed,
    };
    let mut message = format!("{what}: SQLSTATE {code} ({})", condition(code));
    if with_message {
        message.push_str(&format!(": {}", db.message()));
    }
    AgentError::new(class, truncate(&message))
}

/// The condition name of a SQLSTATE as PostgreSQL's errcodes table names it: the conditions a
/// check or a canary meets, else the class (the first two characters). tokio-postgres exposes
/// codes only, and no maintained crate maps them to names.
fn condition(code: &str) -> &'static str {
    match code {
        "42601" => "syntax_error",
        "42501" => "insufficient_privilege",
        "42P01" => "undefined_table",
        "42703" => "undefined_column",
        "42883" => "undefined_function",
        "42P02" => "undefined_parameter",
        "42804" => "datatype_mismatch",
        "25006" => "read_only_sql_transaction",
        "25001" => "active_sql_transaction",
        "57014" => "query_canceled",
        "22P02" => "invalid_text_representation",
        "22012" => "division_by_zero",
        "22003" => "numeric_value_out_of_range",
        "3D000" => "invalid_catalog_name",
        "3F000" => "invalid_schema_name",
        "28P01" => "invalid_password",
        "28000" => "invalid_authorization_specification",
        "42P04" => "duplicate_database",
        "0A000" => "feature_not_supported",
        "08P01" => "protocol_violation",
        "53300" => "too_many_connections",
        "57P01" => "admin_shutdown",
        _ => match code.get(..2).unwrap_or_default() {
            "08" => "connection_exception",
            "0A" => "feature_not_supported",
            "21" => "cardinality_violation",
            "22" => "data_exception",
            "23" => "integrity_constraint_violation",
            "25" => "invalid_transaction_state",
            "28" => "invalid_authorization_specification",
            "2B" => "dependent_privilege_descriptors_still_exist",
            "34" => "invalid_cursor_name",
            "38" => "external_routine_exception",
            "39" => "external_routine_invocation_exception",
            "3D" => "invalid_catalog_name",
            "3F" => "invalid_schema_name",
            "40" => "transaction_rollback",
            "42" => "syntax_error_or_access_rule_violation",
            "44" => "with_check_option_violation",
            "53" => "insufficient_resources",
            "54" => "program_limit_exceeded",
            "55" => "object_not_in_prerequisite_state",
            "57" => "operator_intervention",
            "58" => "system_error",
            "P0" => "plpgsql_error",
            "XX" => "internal_error",
            _ => "unknown condition",
        },
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= REASON_MAX {
        return s.to_owned();
    }
    let mut end = REASON_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The server's major version, from `server_version_num` (150018 → 15), which picks the client
/// programs ([`tools::find_pg`]).
pub fn server_major(conn: &Conn, database: &str) -> Result<u32> {
    let num = query_within(conn, database, "SHOW server_version_num", CONNECT_TIMEOUT)?;
    num.trim().parse::<u32>().map(|n| n / 10_000).map_err(|_| {
        AgentError::new(
            ErrorClass::ToolFailed,
            format!("server_version_num is {num:?}, not a number"),
        )
    })
}

/// Dumps `database` into `out`. Returns what was stored, the snapshot time (pg_dump takes one
/// consistent snapshot when it starts) and the pg_dump that ran (the server's major picks it).
pub fn backup(
    conn: &Conn,
    database: &str,
    extra: &[String],
    sink: &mut dyn FnMut(&mut dyn Read) -> Result<Stored>,
) -> Result<(Stored, Timestamp, ToolInfo)> {
    let program = tools::find_pg("pg_dump", server_major(conn, database)?)?;
    let tool = tools::version_of("pg_dump", &program)?;
    let mut cmd = Command::new(&program);
    let _pass = conn.env(&mut cmd, database)?;
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let snapshot = Timestamp::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::config(format!("pg_dump: {e}")))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::config("pg_dump: no stdout"))?;
    let mut magic = MagicCheck::new(stdout, b"PGDMP");
    let stored = sink(&mut magic);
    let matched = magic.matched();
    // Close our end of the pipe before waiting: when the store failed (a full destination),
    // pg_dump is still writing and would block on the full pipe forever.
    drop(magic);
    if stored.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| AgentError::config(format!("pg_dump: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let class = tools::classify(&stderr);
        // A failed store makes pg_dump fail too (killed, or a broken pipe): then the store's
        // error is the cause, unless pg_dump names one of its own (auth, a missing database).
        if let Err(e) = stored
            && class == ErrorClass::ToolFailed
        {
            return Err(e);
        }
        return Err(AgentError::new(
            class,
            format!("pg_dump of {database} failed: {}", tools::tail(&stderr)),
        ));
    }
    let stored = stored?;
    if !matched {
        return Err(AgentError::integrity(format!(
            "pg_dump of {database} produced no custom-format archive"
        )));
    }
    Ok((stored, snapshot, tool))
}

/// Restores the custom-format dump at `dump` (decompressed and verified by the caller) into
/// `database`, in parallel.
pub fn restore(
    conn: &Conn,
    dump: &Path,
    database: &str,
    create: bool,
    jobs: u8,
    clean: bool,
) -> Result<()> {
    if create {
        create_database(conn, database)?;
    }
    let mut cmd = Command::new(tools::find_pg("pg_restore", server_major(conn, database)?)?);
    let _pass = conn.env(&mut cmd, database)?;
    // An empty --dbname puts pg_restore in database mode and leaves the name to PGDATABASE.
    cmd.args([
        "--dbname=",
        "--no-password",
        "--no-owner",
        "--exit-on-error",
    ])
    .arg(format!("--jobs={}", jobs.max(1)));
    if clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    let out = cmd
        .arg("--")
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AgentError::config(format!("pg_restore: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(AgentError::new(
            tools::classify(&stderr),
            format!(
                "pg_restore into {database} failed: {}",
                tools::tail(&stderr)
            ),
        ));
    }
    Ok(())
}

/// `CREATE DATABASE` unless it exists, the name sent as a quoted identifier.
fn create_database(conn: &Conn, database: &str) -> Result<()> {
    let statement = format!(
        "CREATE DATABASE {}",
        postgres_protocol::escape::escape_identifier(database)
    );
    bounded(OWN_TIMEOUT, "creating the database", async {
        let client = conn.connect("postgres", CONNECT_TIMEOUT).await?;
        match client.batch_execute(&statement).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(())
            }
            Err(e) => Err(driver_error(
                &format!("creating database {database}"),
                &e,
                true,
            )),
        }
    })
}

/// Runs the agent's own `sql` (never a user's: it may hold several statements and write) in
/// `database` and returns the first column of the first row of the last statement that
/// returned rows, as text (`""` when none did).
pub fn query(conn: &Conn, database: &str, sql: &str) -> Result<String> {
    query_within(conn, database, sql, OWN_TIMEOUT)
}

/// [`query`] given up after `bound`.
pub fn query_within(conn: &Conn, database: &str, sql: &str, bound: Duration) -> Result<String> {
    bounded(bound, "query", async {
        let client = conn.connect(database, bound.min(CONNECT_TIMEOUT)).await?;
        let messages = client
            .simple_query(sql)
            .await
            .map_err(|e| driver_error("query failed", &e, true))?;
        Ok(first_value(&messages, true).unwrap_or_default())
    })
}

/// The first column of the first row, as PostgreSQL's output function printed it (NULL as
/// `""`, as psql shows it); with `last`, of the last statement that returned a row.
fn first_value(messages: &[SimpleQueryMessage], last: bool) -> Option<String> {
    let mut found = None;
    let mut in_statement = false;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(row) if !in_statement => {
                in_statement = true;
                let value = row.get(0).unwrap_or_default().to_owned();
                if !last {
                    return Some(value);
                }
                found = Some(value);
            }
            SimpleQueryMessage::CommandComplete(_) => in_statement = false,
            _ => {}
        }
    }
    found
}

/// A validation check: `sql` must be one statement, is run read-only in a transaction that is
/// always rolled back, within `timeout` (at most [`CHECK_CAP`]) on the server and on the
/// client, and the first column of its first row must read `expect`. The error says why in
/// terms that carry no data: never the value read, and for a server error only its SQLSTATE and
/// condition name (a server's message can echo data, e.g. `invalid input syntax for type
/// integer: "<a secret>"`).
///
/// The value is compared as PostgreSQL prints it (what psql shows, `t` for true): the statement
/// is parsed first on the extended protocol, whose Parse refuses more than one statement, and
/// then run on the simple protocol, whose rows come in text made by each type's own output
/// function. Re-creating PostgreSQL's text formats (numerics, timestamps, arrays) from binary
/// values on the client would only approximate them.
pub fn check(
    conn: &Conn,
    database: &str,
    sql: &str,
    expect: &str,
    timeout: Duration,
) -> Result<()> {
    let timeout = timeout.min(CHECK_CAP);
    let fail = |m: String| AgentError::new(ErrorClass::Validation, truncate(&m));
    let started = std::time::Instant::now();
    let value = bounded(timeout, "the SQL check", async {
        let mut client = conn.connect(database, timeout.min(CONNECT_TIMEOUT)).await?;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(|e| driver_error("starting a read-only transaction", &e, false))?;
        // The server cancels the statement a moment before the client would give up, so that
        // the reason is its own. The timeout is a number of ours; then a first query takes the
        // transaction's snapshot, after which PostgreSQL refuses `SET TRANSACTION READ WRITE`.
        let left = timeout
            .saturating_sub(started.elapsed())
            .saturating_sub(Duration::from_millis(250))
            .max(Duration::from_millis(1));
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}; SELECT 1",
            left.as_millis()
        ))
        .await
        .map_err(|e| driver_error("preparing the transaction", &e, false))?;
        tx.prepare(sql)
            .await
            .map_err(|e| driver_error("the statement was refused", &e, false))?;
        let messages = tx
            .simple_query(sql)
            .await
            .map_err(|e| driver_error("the statement failed", &e, false));
        let _ = tx.rollback().await;
        Ok(first_value(&messages?, false))
    })
    .map_err(|e| match e.class {
        ErrorClass::Timeout => fail(format!("{} (timeout {timeout:?})", e.message)),
        _ => fail(e.message),
    })?;
    match value {
        None => Err(fail("the query returned no rows".into())),
        Some(v) if v == expect => Ok(()),
        Some(_) => Err(fail(
            "the first column of the first row is not the expected value".into(),
        )),
    }
}

/// Refuses a database with no user relations (tables, views, sequences, foreign tables;
/// Lifeboat's own `lifeboat_canary` and what extensions own aside): an empty source is far
/// more often a wrong database or a failed migration than the truth.
pub fn ensure_not_empty(conn: &Conn, database: &str) -> Result<()> {
    let n = query(
        conn,
        database,
        "SELECT count(*) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname !~ '^pg_(toast|temp_)' \
         AND NOT (c.relname = 'lifeboat_canary' AND c.relkind = 'r') \
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
           WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
    )?;
    if n == "0" {
        return Err(AgentError::not_found(format!(
            "database {database} on {}:{} holds no tables, views or sequences (Lifeboat's lifeboat_canary aside): an empty source is refused; set allowEmpty: true if it is meant to be empty",
            conn.host, conn.port
        )));
    }
    Ok(())
}

/// Passes bytes through and remembers whether they started with `magic`.
struct MagicCheck<R> {
    inner: R,
    magic: &'static [u8],
    seen: Vec<u8>,
}

impl<R: Read> MagicCheck<R> {
    fn new(inner: R, magic: &'static [u8]) -> Self {
        Self {
            inner,
            magic,
            seen: Vec::new(),
        }
    }

    fn matched(&self) -> bool {
        self.seen.starts_with(self.magic)
    }
}

impl<R: Read> Read for MagicCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.seen.len() < self.magic.len() {
            let take = (self.magic.len() - self.seen.len()).min(n);
            self.seen.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_file_names_one_host_port_database_and_user() {
        let conn = Conn {
            host: "::1".into(),
            port: 5433,
            user: "app:ro".into(),
            password: Some("p:w\\d".into()),
            ssl_mode: SslMode::VerifyFull,
        };
        let mut cmd = Command::new("true");
        let _dir = conn.env(&mut cmd, "shop").unwrap();
        let env: std::collections::BTreeMap<_, _> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        assert_eq!(env["PGDATABASE"], "shop");
        assert_eq!(env["PGHOST"], "::1");
        assert_eq!(env["PGSSLMODE"], "verify-full");
        let line = std::fs::read_to_string(&env["PGPASSFILE"]).unwrap();
        assert_eq!(line, "\\:\\:1:5433:shop:app\\:ro:p\\:w\\\\d\n");
    }

    #[test]
    fn server_errors_say_their_condition_not_their_message() {
        assert_eq!(condition("22P02"), "invalid_text_representation");
        assert_eq!(condition("42P99"), "syntax_error_or_access_rule_violation");
        assert_eq!(truncate(&"é".repeat(300)).chars().count(), 101);
    }
}
