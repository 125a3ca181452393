use super::*;

fn names() -> Names {
    Names::new(
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100::/:/bin/sh\n",
        "root:x:0:\nstaff:x:50:\nusers:x:100:\n",
    )
}

fn parse(text: &str) -> Exports {
    Exports::parse(text, &names()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn path(p: &str) -> Vec<String> {
    components(p).unwrap()
}

#[test]
fn a_line_without_options_is_read_only_with_root_mapped_to_nobody() {
    let e = parse("* /\n");
    let g = e.check(ip("10.0.0.1"), &[], false, &Proof::None).unwrap();
    assert!(g.read_only);
    assert!(!g.admin);
    assert_eq!(g.maproot, Some(NOBODY));
    assert_eq!(g.mapall, None);
    assert_eq!(g.line, 1);
}

#[test]
fn addresses_as_one_ip_network_mask_and_range() {
    let e = parse(
        "# comment line\n\
         10.0.0.5 / rw\n\
         192.168.0.0/16 / rw # trailing comment\n\
         172.16.0.0/255.240.0.0 / rw\n\
         10.1.0.1-10.1.0.9 / rw\n",
    );
    let ok = |a: &str| e.check(ip(a), &[], false, &Proof::None).map(|g| g.line);
    assert_eq!(ok("10.0.0.5"), Ok(2));
    assert!(ok("10.0.0.6").is_err());
    assert_eq!(ok("192.168.255.255"), Ok(3));
    assert!(ok("192.169.0.1").is_err());
    assert_eq!(ok("172.31.1.1"), Ok(4));
    assert!(ok("172.32.0.1").is_err());
    assert_eq!(ok("10.1.0.9"), Ok(5));
    assert!(ok("10.1.0.10").is_err());
    // An IPv4 client seen through an IPv6 socket matches IPv4 lines.
    assert_eq!(ok("::ffff:10.0.0.5"), Ok(2));
    assert!(ok("::1").is_err());
}

#[test]
fn directories_match_exactly_or_below_with_alldirs() {
    let e = parse("* /a rw\n* /b rw,alldirs\n* . rw\n");
    let check = |p: &str| {
        e.check(ip("1.2.3.4"), &path(p), false, &Proof::None)
            .map(|g| g.line)
    };
    assert_eq!(check("/a"), Ok(1));
    assert!(check("/a/x").is_err());
    assert!(check("/").is_err());
    assert_eq!(check("/b"), Ok(2));
    assert_eq!(check("//b/x/y/"), Ok(2));
    assert!(check("/bb").is_err());
    let meta = e.check(ip("1.2.3.4"), &[], true, &Proof::None).unwrap();
    assert!(meta.meta);
    assert_eq!(meta.line, 3);
    let none = parse("* / rw,alldirs\n");
    assert!(matches!(
        none.check(ip("1.2.3.4"), &[], true, &Proof::None),
        Err(Refusal::NoExport { .. })
    ));
}

#[test]
fn the_first_matching_line_wins_and_passwords_are_checked() {
    let hash = "5ebe2294ecd0e0f08eab7690d2a6ee69"; // md5("secret")
    let e = parse(&format!(
        "* /p rw,password=open-sesame\n* /m rw,md5pass={hash}\n* /p ro\n"
    ));
    let check = |p: &str, pw: &str| {
        let proof = match pw {
            "" => Proof::None,
            pw => Proof::Plain(pw.to_string()),
        };
        e.check(ip("1.2.3.4"), &path(p), false, &proof)
    };
    let g = check("/p", "open-sesame").unwrap();
    assert_eq!((g.line, g.read_only), (1, false));
    // Without the password, the later line without one applies.
    let g = check("/p", "").unwrap();
    assert_eq!((g.line, g.read_only), (3, true));
    assert_eq!(check("/m", "secret").map(|g| g.line), Ok(2));
    match check("/m", "") {
        Err(Refusal::Password { line: 2, given, .. }) => assert!(given.contains("none")),
        other => panic!("{other:?}"),
    }
    match check("/m", "guess") {
        Err(e @ Refusal::Password { .. }) => assert!(e.to_string().contains("wrong")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_map_users_and_bound_goal_and_trash_time() {
    let e = parse(
        "* / rw,admin,maproot=alice,mapall=bob:staff,mingoal=2,maxgoal=3,mintrashtime=1h,maxtrashtime=1w2d,dynamicip,ignoregid,minversion=1.6.0\n",
    );
    let g = e.check(ip("1.2.3.4"), &[], false, &Proof::None).unwrap();
    assert!(!g.read_only && g.admin && g.dynamic_ip);
    assert_eq!(g.maproot, Some((1000, 1000)));
    assert_eq!(g.mapall, Some((1001, 50)));
    assert_eq!(g.goal, (2, 3));
    assert_eq!(g.trash_time, (3600, 9 * 86400));
    let numbers = parse("* / maproot=0:0,mapall=4242\n");
    let g = numbers
        .check(ip("1.2.3.4"), &[], false, &Proof::None)
        .unwrap();
    assert_eq!(g.maproot, Some((0, 0)));
    assert_eq!(g.mapall, Some((4242, 4242)));
}

#[test]
fn bad_lines_are_refused_naming_the_line_and_what_is_wrong() {
    let bad = |text: &str, wanted: &str| {
        let e = Exports::parse(text, &names()).unwrap_err();
        assert!(e.contains(wanted), "{text:?}: {e}");
    };
    bad("\n*\n", "line 2");
    bad("10.0.0.300 / rw\n", "not an IPv4 address");
    bad("10.0.0.0/33 / rw\n", "prefix length");
    bad("10.0.0.0/255.0.255.0 / rw\n", "not a network mask");
    bad("10.0.0.9-10.0.0.1 / rw\n", "ends before it starts");
    bad("* relative rw\n", "starting with `/`");
    bad("* /a/../b rw\n", "`..`");
    bad("* / rw,turbo\n", "unknown option `turbo`");
    bad("* / maproot=nosuchuser\n", "no user `nosuchuser`");
    bad("* / mapall=alice:nosuchgroup\n", "no group");
    bad("* / password=\n", "needs a value");
    bad("* / md5pass=abc\n", "32 hexadecimal");
    bad("* / mingoal=3,maxgoal=2\n", "above maxgoal");
    bad("* / maxgoal=0\n", "a goal is 1..");
    bad(
        "* / mintrashtime=2d,maxtrashtime=1d\n",
        "above maxtrashtime",
    );
    bad("* / maxtrashtime=1x\n", "1w2d3h4m5s");
    bad("* / rw extra\n", "unexpected `extra`");
}

#[test]
fn refusals_say_who_asked_for_what() {
    let e = parse("10.0.0.0/8 / rw\n");
    let r = e
        .check(ip("192.0.2.7"), &path("/data"), false, &Proof::None)
        .unwrap_err();
    let text = r.to_string();
    assert!(
        text.contains("192.0.2.7") && text.contains("/data"),
        "{text}"
    );
}

#[test]
fn the_example_file_parses_and_lets_everyone_in() {
    let text = include_str!("../../../deploy/mfsexports.cfg");
    let e = Exports::parse(text, &names()).unwrap();
    let g = e
        .check(ip("192.0.2.1"), &path("/any/dir"), false, &Proof::None)
        .unwrap();
    assert!(!g.read_only && g.admin);
    assert_eq!(g.maproot, Some((0, 0)));
    assert!(e.check(ip("192.0.2.1"), &[], true, &Proof::None).is_ok());
}

#[test]
fn a_challenge_digest_proves_the_password_once_per_nonce() {
    let hash = "5ebe2294ecd0e0f08eab7690d2a6ee69"; // md5("secret")
    let e = parse(&format!(
        "* /p rw,password=open-sesame\n* /m rw,md5pass={hash}\n"
    ));
    let nonce = vec![7u8; 32];
    let proof = |pw: &str, n: &[u8]| Proof::Digest {
        nonce: n.to_vec(),
        digest: challenge_answer(n, &password_md5(pw)).to_vec(),
    };
    let at = |p: &str, proof: &Proof| e.check(ip("1.2.3.4"), &path(p), false, proof);
    assert_eq!(
        at("/p", &proof("open-sesame", &nonce)).map(|g| g.line),
        Ok(1)
    );
    assert_eq!(at("/m", &proof("secret", &nonce)).map(|g| g.line), Ok(2));
    assert!(at("/p", &proof("guess", &nonce)).is_err());
    // A digest made for another nonce proves nothing.
    let other = Proof::Digest {
        nonce: nonce.clone(),
        digest: challenge_answer(&[8u8; 32], &password_md5("open-sesame")).to_vec(),
    };
    assert!(at("/p", &other).is_err());
    assert!(at(
        "/p",
        &Proof::Digest {
            nonce,
            digest: vec![]
        }
    )
    .is_err());
}
