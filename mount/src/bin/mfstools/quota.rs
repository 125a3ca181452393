//! mfsgetquota, mfssetquota, mfsdelquota: directory quotas, with MooseFS's
//! options (lowercase: soft limit, uppercase: hard) and output.

use mfs_mount::tools::report;
use mfs_proto::v1::{QuotaInfo, QuotaLimits, SetQuotaRequest};

use crate::ops::Ctx;

/// The quota tools' command line.
#[derive(Debug, Default, PartialEq)]
pub struct QuotaArgs {
    pub masters: Option<String>,
    pub help: bool,
    /// Limits to set (or with `del`, flags of limits to delete).
    pub soft: QuotaLimits,
    pub hard: QuotaLimits,
    /// -p: grace period in seconds.
    pub grace: Option<u32>,
    /// mfsdelquota -a: every limit.
    pub all: bool,
    pub paths: Vec<String>,
}

/// A number with an optional decimal point and SI (k, M, G, T, P, E) or
/// IEC (Ki, Mi, ...) suffix, as MooseFS's tools take: "10M", "1.5Gi".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a number (e.g. 1000, 10M, 1.5Gi)");
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if !num.contains('.') && mult == 1.0 {
        return num.parse::<u64>().map_err(|_| bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let v = (v * mult).round();
    if !(0.0..=u64::MAX as f64).contains(&v) {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Parses the arguments of `tool` (mfsgetquota takes no limits,
/// mfsdelquota flags without values).
pub fn parse(tool: &str, raw: &[String]) -> Result<QuotaArgs, String> {
    let mut a = QuotaArgs::default();
    let mut it = raw.iter();
    let del = tool == "mfsdelquota";
    let set = tool == "mfssetquota";
    while let Some(s) = it.next() {
        let limit = |l: &str| -> Option<(bool, usize)> {
            let c = l.strip_prefix('-')?;
            let i = ["i", "l", "s", "r"]
                .iter()
                .position(|x| x.eq_ignore_ascii_case(c))?;
            Some((c.chars().all(|ch| ch.is_ascii_uppercase()), i))
        };
        match s.as_str() {
            "--" => {
                a.paths.extend(it.by_ref().cloned());
                break;
            }
            "-h" | "--help" => a.help = true,
            "-n" | "-k" | "-m" | "-g" => {}
            "-H" => {
                let v = it
                    .next()
                    .ok_or("-H needs the masters' addresses (HOST:PORT,...)")?;
                a.masters = Some(v.clone());
            }
            "-a" if del => a.all = true,
            "-p" if set => {
                let v = it.next().ok_or("-p needs the grace period in seconds")?;
                let secs = parse_size(v).map_err(|e| format!("-p: {e}"))?;
                a.grace = Some(u32::try_from(secs).map_err(|_| format!("-p {v}: too long"))?);
            }
            o if (set || del) && limit(o).is_some() => {
                let Some((hard, i)) = limit(o) else {
                    continue;
                };
                let value = if set {
                    let v = it.next().ok_or_else(|| format!("{o} needs a value"))?;
                    parse_size(v).map_err(|e| format!("{o}: {e}"))?
                } else {
                    1
                };
                let l = if hard { &mut a.hard } else { &mut a.soft };
                let slot = match i {
                    0 => &mut l.inodes,
                    1 => &mut l.length,
                    2 => &mut l.size,
                    _ => &mut l.realsize,
                };
                *slot = Some(value);
            }
            o if o.starts_with('-') && o.len() > 1 => return Err(format!("unknown option {o}")),
            _ => a.paths.push(s.clone()),
        }
    }
    if a.help {
        return Ok(a);
    }
    if a.paths.is_empty() {
        return Err("missing PATH".into());
    }
    let none = a.soft == QuotaLimits::default() && a.hard == QuotaLimits::default();
    if set && none && a.grace.is_none() {
        return Err("no limit given (-i/-I, -l/-L, -s/-S, -r/-R, -p)".into());
    }
    if del && none && !a.all {
        return Err("no limit given to delete (-a, -i/-I, -l/-L, -s/-S, -r/-R)".into());
    }
    Ok(a)
}

/// `current` with the limits given set (mfssetquota) or removed
/// (mfsdelquota: the flags in `given`).
fn merge(current: QuotaLimits, given: QuotaLimits, del: bool) -> QuotaLimits {
    let pick = |cur: Option<u64>, g: Option<u64>| match (del, g) {
        (true, Some(_)) => None,
        (false, Some(v)) => Some(v),
        (_, None) => cur,
    };
    QuotaLimits {
        inodes: pick(current.inodes, given.inodes),
        length: pick(current.length, given.length),
        size: pick(current.size, given.size),
        realsize: pick(current.realsize, given.realsize),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn one(ctx: &mut Ctx, tool: &str, a: &QuotaArgs, path: &str) -> Result<String, String> {
    let t = ctx.target(path).await?;
    let err = |e: mfs_mount::ClientError| e.to_string();
    let current = t.client.get_quota(t.inode).await.map_err(err)?;
    if tool == "mfsgetquota" {
        return Ok(report::quota(path, current.as_ref(), now_secs()));
    }
    let del = tool == "mfsdelquota";
    let cur: QuotaInfo = current.unwrap_or_default();
    let soft = merge(cur.soft.unwrap_or_default(), a.soft, del);
    let hard = merge(cur.hard.unwrap_or_default(), a.hard, del);
    let empty = soft == QuotaLimits::default() && hard == QuotaLimits::default();
    let req = SetQuotaRequest {
        id: None,
        cred: Some(ctx.cred.clone()),
        inode: t.inode,
        delete: empty || (del && a.all),
        soft: Some(soft),
        hard: Some(hard),
        grace_secs: a.grace.unwrap_or(cur.grace_secs),
    };
    let after = t.client.set_quota(req).await.map_err(err)?;
    Ok(report::quota(path, after.as_ref(), now_secs()))
}

/// Runs a quota tool; `Ok(false)`: some path failed (reported).
pub async fn run(tool: &'static str, a: QuotaArgs) -> bool {
    let mut ctx = Ctx::new(tool, a.masters.clone(), tool != "mfsgetquota");
    let mut ok = true;
    for path in &a.paths {
        ok &= crate::ops::print_outcome(path, one(&mut ctx, tool, &a, path).await);
    }
    ctx.close().await;
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes_take_si_and_iec_suffixes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-5").is_err());
    }

    #[test]
    fn lowercase_is_soft_uppercase_hard() {
        let a = parse(
            "mfssetquota",
            &strs(&["-i", "5", "-I", "10", "-L", "10M", "-p", "3600", "/m/d"]),
        )
        .expect("parsed");
        assert_eq!(a.soft.inodes, Some(5));
        assert_eq!(a.hard.inodes, Some(10));
        assert_eq!(a.hard.length, Some(10_000_000));
        assert_eq!(a.grace, Some(3600));
        assert_eq!(a.paths, vec!["/m/d"]);
        let d = parse("mfsdelquota", &strs(&["-I", "-l", "/m/d"])).expect("parsed");
        assert_eq!((d.hard.inodes, d.soft.length), (Some(1), Some(1)));
        assert!(parse("mfssetquota", &strs(&["/m/d"])).is_err());
        assert!(parse("mfsdelquota", &strs(&["/m/d"])).is_err());
        assert!(parse("mfsgetquota", &strs(&["-i", "5", "/m/d"])).is_err());
        assert!(parse("mfsgetquota", &strs(&[])).is_err());
    }

    #[test]
    fn merging_sets_and_deletes_only_what_is_given() {
        let cur = QuotaLimits {
            inodes: Some(5),
            length: Some(100),
            ..Default::default()
        };
        let given = QuotaLimits {
            inodes: Some(9),
            ..Default::default()
        };
        let set = merge(cur, given, false);
        assert_eq!((set.inodes, set.length), (Some(9), Some(100)));
        let del = merge(cur, given, true);
        assert_eq!((del.inodes, del.length), (None, Some(100)));
    }
}
