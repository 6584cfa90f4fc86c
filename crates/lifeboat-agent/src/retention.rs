//! Which backups retention deletes. Pure. The rules every peer's users wished theirs had: the
//! newest `minKeep` backups of an asset are never deleted, whatever their age (so a stalled
//! schedule never ages out the last good backup); a pass that would delete more than a share of an
//! asset's backups is refused unless explicitly allowed (a retention edit or a clock jump is not
//! permission to wipe a history); backups dated in the future are kept and do not count towards
//! `keepLast` (one backup stamped by a skewed clock would otherwise sort first forever and push
//! every later backup out); the backup a pass follows is never deleted by its own pass; the newest
//! backup proven readable (verified by checksums or restored by a drill) is never deleted, whatever
//! the rules say, because it is the one a recovery can count on; a backup whose objects the store
//! still locks (S3 Object Lock) is not deleted before its lock ends, since the store would keep it
//! anyway and a delete would only hide it behind delete markers.

use jiff::Timestamp;
use lifeboat_api::backup_policy::Retention;

/// One backup, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub snapshot_time: Timestamp,
    /// Proven readable (a verification record): the newest such backup is never deleted.
    pub verified: bool,
    /// The backup this pass follows (the one just committed): never deleted by it, whatever
    /// the clock says of the others.
    pub fresh: bool,
    /// The end of the backup's S3 Object Lock, when its destination locks: kept until then.
    pub locked_until: Option<Timestamp>,
}

/// Why a pass was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to delete {delete} of {total} backups of asset {asset} in one pass (more than {limit}%); check the retention rules and the clock; if it is meant, raise retention.maxDeletePercent or prune once with --allow-mass-delete"
)]
pub struct MassDeletion {
    pub asset: String,
    pub delete: usize,
    pub total: usize,
    pub limit: u32,
}

/// The ids to delete among `backups` of `asset`, newest kept first.
pub fn select(
    asset: &str,
    backups: &[Candidate],
    rules: &Retention,
    now: Timestamp,
    allow_mass_delete: bool,
) -> Result<Vec<String>, MassDeletion> {
    let max_delete_percent = rules.max_delete_percent;
    // Dated after `now`: written by a clock ahead of this one (or this clock is behind). Kept,
    // and left out of the ranking: a backup from "the future" would otherwise be the newest
    // forever, so `keepLast` would count it and delete each later backup as soon as it lands.
    let mut newest_first: Vec<&Candidate> =
        backups.iter().filter(|b| b.snapshot_time <= now).collect();
    newest_first.sort_by(|a, b| {
        b.snapshot_time
            .cmp(&a.snapshot_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    let floor = usize::try_from(rules.min_keep.max(1)).unwrap_or(usize::MAX);
    let keep_last = rules.keep_last.and_then(|k| usize::try_from(k).ok());
    let max_age = rules
        .max_age
        .as_ref()
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let newest_verified = newest_first.iter().position(|b| b.verified);
    let delete: Vec<String> = newest_first
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            if *i < floor || Some(*i) == newest_verified || b.fresh {
                return false;
            }
            if b.locked_until.is_some_and(|until| until > now) {
                return false;
            }
            let beyond_count = keep_last.is_some_and(|k| *i >= k);
            let age = now.as_second() - b.snapshot_time.as_second();
            let too_old = max_age.is_some_and(|m| age > m);
            beyond_count || too_old
        })
        .map(|(_, b)| b.id.clone())
        .collect();
    let total = backups.len();
    if !allow_mass_delete
        && total > 0
        && delete.len() * 100 > total * max_delete_percent as usize
        && delete.len() > 1
    {
        return Err(MassDeletion {
            asset: asset.to_owned(),
            delete: delete.len(),
            total,
            limit: max_delete_percent,
        });
    }
    Ok(delete)
}

/// How long a backup without metadata must have been idle before prune deletes it: far above any
/// backup Job's deadline, so a backup still being written (its files still changing) is never
/// taken for a dead one.
pub const STALE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Whether an unfinished backup whose newest file was written at `newest` is abandoned. A time
/// in the future (clock skew) is never stale.
pub fn is_stale(newest: Timestamp, now: Timestamp, stale_after: jiff::SignedDuration) -> bool {
    now.duration_since(newest) > stale_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// `n` hourly backups ending at `last`.
    fn hourly(n: i64, last: &str) -> Vec<Candidate> {
        (0..n)
            .map(|i| {
                let t = at(last) - jiff::SignedDuration::from_hours(i);
                Candidate {
                    id: t.strftime("%Y%m%dT%H%M%SZ").to_string(),
                    snapshot_time: t,
                    verified: false,
                    fresh: false,
                    locked_until: None,
                }
            })
            .collect()
    }

    fn rules(keep_last: Option<u32>, max_age: Option<&str>, min_keep: u32) -> Retention {
        Retention {
            keep_last,
            max_age: max_age.map(|m| m.parse().unwrap()),
            min_keep,
            max_delete_percent: 50,
        }
    }

    /// `r` with the mass-deletion guard at `percent`.
    fn pct(mut r: Retention, percent: u32) -> Retention {
        r.max_delete_percent = percent;
        r
    }

    #[test]
    fn keep_last_and_max_age_delete_the_oldest() {
        let b = hourly(10, "2026-11-24T10:00:00Z");
        let now = at("2026-11-24T10:30:00Z");
        let d = select("db", &b, &pct(rules(Some(8), None, 1), 50), now, false).unwrap();
        assert_eq!(d, vec![b[8].id.clone(), b[9].id.clone()]);
        let d = select("db", &b, &pct(rules(None, Some("5h"), 1), 50), now, false).unwrap();
        assert_eq!(
            d.len(),
            5,
            "backups older than 5h (05:00 and before): {d:?}"
        );
    }

    #[test]
    fn the_floor_keeps_the_newest_backups_even_when_every_rule_would_delete_them() {
        // The schedule stalled for a month: every backup is older than maxAge.
        let b = hourly(3, "2026-10-01T00:00:00Z");
        let now = at("2026-11-24T10:00:00Z");
        let d = select("db", &b, &pct(rules(None, Some("7d"), 1), 100), now, false).unwrap();
        assert_eq!(d.len(), 2);
        assert!(!d.contains(&b[0].id), "the newest good backup survives");
        let d = select("db", &b, &pct(rules(None, Some("7d"), 3), 100), now, false).unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn a_mass_deletion_is_refused_unless_allowed() {
        let b = hourly(30, "2026-11-24T10:00:00Z");
        let now = at("2026-11-24T10:30:00Z");
        let e = select("db", &b, &pct(rules(Some(7), None, 1), 50), now, false).unwrap_err();
        assert_eq!((e.delete, e.total), (23, 30));
        assert!(e.to_string().contains("--allow-mass-delete"));
        assert_eq!(
            select("db", &b, &pct(rules(Some(7), None, 1), 50), now, true)
                .unwrap()
                .len(),
            23
        );
        // The policy sets the share: 23 of 30 (77%) passes at 80%, is refused at 75%, and 100
        // switches the guard off.
        let ok = |p| select("db", &b, &pct(rules(Some(7), None, 1), p), now, false);
        assert_eq!(ok(80).unwrap().len(), 23);
        assert_eq!(ok(75).unwrap_err().limit, 75);
        assert_eq!(ok(100).unwrap().len(), 23);
        assert!(ok(100).is_ok_and(|d| !d.contains(&b[0].id)));
        // Steady state (one new backup, one out) is far below the limit.
        let b = hourly(8, "2026-11-24T10:00:00Z");
        assert_eq!(
            select("db", &b, &pct(rules(Some(7), None, 1), 50), now, false)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn clock_skew_never_deletes_the_newest_backup() {
        let b = hourly(5, "2026-11-24T10:00:00Z");
        // The clock jumped a day ahead: everything looks old, the floor still holds.
        let d = select(
            "db",
            &b,
            &pct(rules(None, Some("1h"), 1), 100),
            at("2026-11-25T10:00:00Z"),
            false,
        )
        .unwrap();
        assert!(!d.contains(&b[0].id));
        // The clock is a day behind: backups are "in the future", none is too old.
        let d = select(
            "db",
            &b,
            &pct(rules(None, Some("1h"), 1), 100),
            at("2026-11-23T10:00:00Z"),
            false,
        )
        .unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn a_backup_from_the_future_neither_counts_nor_pushes_later_backups_out() {
        // One backup stamped two days ahead by a skewed clock, then three real hourly ones.
        let mut b = hourly(3, "2026-11-24T10:00:00Z");
        b.push(Candidate {
            id: "20261126T100000Z".into(),
            snapshot_time: at("2026-11-26T10:00:00Z"),
            verified: false,
            fresh: false,
            locked_until: None,
        });
        b[0].fresh = true;
        let now = at("2026-11-24T10:00:30Z");
        let d = select("db", &b, &pct(rules(Some(1), None, 1), 100), now, false).unwrap();
        // keepLast 1 keeps the newest real backup (the fresh one) and the future one.
        assert_eq!(d, vec![b[1].id.clone(), b[2].id.clone()]);
    }

    #[test]
    fn a_backup_still_locked_by_the_store_is_kept_and_goes_once_its_lock_ends() {
        // Six hourly backups, keepLast 2: the four oldest are beyond the count. The two oldest
        // were locked for a day from their start; the others are not locked.
        let mut b = hourly(6, "2026-11-24T10:00:00Z");
        for c in &mut b[4..] {
            c.locked_until = Some(c.snapshot_time + jiff::SignedDuration::from_hours(24));
        }
        let r = pct(rules(Some(2), None, 1), 100);
        let now = at("2026-11-24T10:30:00Z");
        let d = select("db", &b, &r, now, false).unwrap();
        assert_eq!(
            d,
            vec![b[2].id.clone(), b[3].id.clone()],
            "the locked ones stay"
        );
        // The oldest lock ends at 2026-11-25T05:00: after it, that backup goes; the other's lock
        // (06:00) still holds.
        let d = select("db", &b, &r, at("2026-11-25T05:30:00Z"), false).unwrap();
        assert_eq!(d, vec![b[2].id.clone(), b[3].id.clone(), b[5].id.clone()]);
        // A lock ending exactly now no longer holds.
        let d = select("db", &b, &r, at("2026-11-25T06:00:00Z"), false).unwrap();
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn the_backup_a_pass_follows_is_never_its_victim() {
        // The fresh backup is not the newest by the clock (another run landed after it, a second
        // later): keepLast 1 would delete it, but its own pass never does.
        let mut b = hourly(2, "2026-11-24T10:00:00Z");
        b[1].fresh = true;
        let now = at("2026-11-24T10:00:30Z");
        let d = select("db", &b, &pct(rules(Some(1), None, 1), 100), now, false).unwrap();
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn nothing_listed_means_nothing_deleted() {
        assert!(
            select(
                "db",
                &[],
                &pct(rules(Some(1), Some("1h"), 1), 50),
                at("2026-11-24T10:00:00Z"),
                false
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn the_newest_verified_backup_survives_rules_that_would_delete_it() {
        let mut backups = hourly(10, "2026-11-24T10:00:00Z");
        // Only the sixth newest has been proven readable; an older one was too, once.
        backups[5].verified = true;
        backups[8].verified = true;
        let doomed = select(
            "db",
            &backups,
            &pct(rules(Some(2), Some("1h"), 1), 100),
            at("2026-11-24T10:30:00Z"),
            false,
        )
        .unwrap();
        assert!(!doomed.contains(&backups[5].id), "{doomed:?}");
        assert!(
            doomed.contains(&backups[8].id),
            "only the newest verified is protected"
        );
        assert_eq!(
            doomed.len(),
            8,
            "all but the newest (the floor) and the newest verified"
        );
    }

    #[test]
    fn only_long_idle_leftovers_are_stale() {
        let now = at("2026-11-24T10:00:00Z");
        let day = jiff::SignedDuration::from_hours(24);
        assert!(is_stale(at("2026-11-22T10:00:00Z"), now, day));
        assert!(
            !is_stale(at("2026-11-24T09:59:00Z"), now, day),
            "a backup being written"
        );
        assert!(
            !is_stale(at("2026-11-23T10:00:00Z"), now, day),
            "exactly a day"
        );
        assert!(
            !is_stale(at("2026-11-30T10:00:00Z"), now, day),
            "the clock is behind: not stale"
        );
    }
}
