//! What the node tests compare before and after a restore, shared by their binaries.

/// Every key of every database of the Redis behind `conn`: type, value (sets and hashes
/// sorted) and when it expires (`EXPIRETIME`, unix seconds; -1 without a TTL), as text to
/// compare: an RDB keeps the moment a key expires, so a restored TTL is the same moment.
pub fn redis_digest(
    conn: &lifeboat_agent::redis::Conn,
) -> std::collections::BTreeMap<String, (String, String, i64)> {
    let mut out = std::collections::BTreeMap::new();
    for db in 0..16u8 {
        let keys = conn.run(db, &["KEYS", "*"]).unwrap();
        for key in keys.lines().filter(|k| !k.is_empty()) {
            let t = conn.run(db, &["TYPE", key]).unwrap();
            let sorted = |s: String| {
                let mut l: Vec<&str> = s.lines().collect();
                l.sort_unstable();
                l.join("\n")
            };
            let v = match t.as_str() {
                "string" => conn.run(db, &["GET", key]).unwrap(),
                "list" => conn.run(db, &["LRANGE", key, "0", "-1"]).unwrap(),
                "set" => sorted(conn.run(db, &["SMEMBERS", key]).unwrap()),
                "zset" => conn
                    .run(db, &["ZRANGE", key, "0", "-1", "WITHSCORES"])
                    .unwrap(),
                "hash" => sorted(conn.run(db, &["HGETALL", key]).unwrap()),
                "stream" => conn.run(db, &["XRANGE", key, "-", "+"]).unwrap(),
                other => panic!("unexpected type {other}"),
            };
            let ttl: i64 = conn.run(db, &["EXPIRETIME", key]).unwrap().parse().unwrap();
            out.insert(format!("{db}/{key}"), (t, v, ttl));
        }
    }
    out
}

/// The sha256 of every file under `dir` (a bucket of the S3 server, which serves directories as
/// buckets), by key.
pub fn bucket_digest(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest as _;
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let sum = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                out.insert(key, sum.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
