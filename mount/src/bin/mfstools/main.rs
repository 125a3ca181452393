//! `mfstools`: the MooseFS-style admin tools in one binary. Each tool runs
//! by its MooseFS name (argv[0], through a symlink: `mfsgetgoal -r dir`) or
//! as `mfstools NAME ARGS` (`mfstools getgoal -r dir` also works);
//! `mfstools` alone lists them.

mod ops;
mod quota;
mod snapshot;

use std::path::Path;
use std::process::ExitCode;

/// A tool: its name, its usage line, what it does.
struct Tool {
    name: &'static str,
    args: &'static str,
    about: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "mfsgetgoal",
        args: "[-r] PATH...",
        about:
            "print the goal (number of copies) of files and directories; -r: count a tree by goal",
    },
    Tool {
        name: "mfssetgoal",
        args: "[-r] GOAL PATH...",
        about: "set the goal (1..9); -r: of a whole tree",
    },
    Tool {
        name: "mfsgettrashtime",
        args: "[-r] PATH...",
        about: "print the trash time in seconds; -r: count a tree by trash time",
    },
    Tool {
        name: "mfssettrashtime",
        args: "[-r] SECONDS PATH...",
        about:
            "set the trash time (seconds a deleted file stays in the trash); -r: of a whole tree",
    },
    Tool {
        name: "mfsgeteattr",
        args: "[-r] PATH...",
        about: "print the extra attributes; -r: count a tree by extra attributes",
    },
    Tool {
        name: "mfsseteattr",
        args: "[-r] -f ATTR [-f ATTR]... PATH...",
        about: "set extra attributes (noowner, noattrcache, noentrycache, undeletable, \
                appendonly, immutable); -r: on a whole tree",
    },
    Tool {
        name: "mfsdeleattr",
        args: "[-r] -f ATTR [-f ATTR]... PATH...",
        about: "remove extra attributes; -r: from a whole tree",
    },
    Tool {
        name: "mfsmakesnapshot",
        args: "[-o] SOURCE... DESTINATION",
        about: "copy files or trees at once, sharing chunks until either side writes \
                (DESTINATION an existing directory: the copies go in it; -o: replace \
                what has the copy's name)",
    },
    Tool {
        name: "mfsrmsnapshot",
        args: "PATH...",
        about: "remove trees (snapshots or any), deepest names first",
    },
    Tool {
        name: "mfsgetquota",
        args: "PATH...",
        about: "print the quota of directories: usage, soft and hard limits of inodes, \
                length, size and realsize",
    },
    Tool {
        name: "mfssetquota",
        args: "[-iI INODES] [-lL LENGTH] [-sS SIZE] [-rR REALSIZE] [-p GRACE_SECS] DIR...",
        about: "set quota limits of directories (lowercase: soft, uppercase: hard; \
                numbers take k, M, G, T or Ki, Mi, Gi, Ti); other limits are kept",
    },
    Tool {
        name: "mfsdelquota",
        args: "[-a] [-iI] [-lL] [-sS] [-rR] DIR...",
        about: "remove quota limits of directories (-a: the whole quota)",
    },
    Tool {
        name: "mfscheckfile",
        args: "PATH...",
        about: "count the chunks of files by their number of valid copies",
    },
    Tool {
        name: "mfsfileinfo",
        args: "PATH...",
        about: "list each chunk of files with its id, version and copies",
    },
    Tool {
        name: "mfsdirinfo",
        args: "PATH...",
        about: "sum inodes, directories, files, chunks, length, size and realsize of trees",
    },
];

const COMMON_OPTS: &str = "options:\n  \
    -H HOST:PORT,...  the masters to ask (default: the mount's own, or MFS_MASTERS)\n  \
    -n                plain numbers (the only form printed; accepted for MooseFS scripts)\n  \
    -h, --help        this help\n\
    environment: MFS_TLS_CA_FILE=PATH, the PEM CA of a cluster serving TLS";

fn find_tool(name: &str) -> Option<&'static Tool> {
    TOOLS
        .iter()
        .find(|t| t.name == name || t.name.strip_prefix("mfs") == Some(name))
}

fn list_tools() -> String {
    let mut s = String::from(
        "mfstools: the rmfs admin tools (MooseFS names).\n\
         usage: mfstools NAME ARGS...  or  NAME ARGS... (through a link named NAME)\n\ntools:\n",
    );
    for t in TOOLS {
        s.push_str(&format!("  {:<16} {}\n", t.name, t.about));
    }
    s.push_str("\nmfstools NAME -h shows the usage of one tool.\n");
    s
}

fn usage(t: &Tool) -> String {
    format!(
        "usage: {} [-H HOST:PORT,...] {}\n{}.\n{COMMON_OPTS}",
        t.name, t.args, t.about
    )
}

/// Parsed command line of one tool.
#[derive(Debug, Default)]
pub struct Args {
    /// -r given.
    pub recursive: bool,
    /// -H value.
    pub masters: Option<String>,
    /// The operands (value and paths).
    pub rest: Vec<String>,
    /// -h given.
    pub help: bool,
    /// -f values (extra attribute names).
    pub flags: Vec<String>,
    /// -o given (mfsmakesnapshot: overwrite).
    pub overwrite: bool,
}

fn parse_args(tool: &Tool, raw: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = raw.iter();
    let takes_r = tool.args.starts_with("[-r]");
    let takes_f = tool.args.contains("-f ATTR");
    let takes_o = tool.args.starts_with("[-o]");
    while let Some(s) = it.next() {
        match s.as_str() {
            "--" => {
                a.rest.extend(it.by_ref().cloned());
                break;
            }
            "-h" | "--help" => a.help = true,
            "-r" if takes_r => a.recursive = true,
            "-o" if takes_o => a.overwrite = true,
            "-n" => {}
            "-H" => {
                let v = it
                    .next()
                    .ok_or_else(|| "-H needs the masters' addresses (HOST:PORT,...)".to_string())?;
                a.masters = Some(v.clone());
            }
            o if o.starts_with("-H") => a.masters = Some(o[2..].to_string()),
            "-f" if takes_f => {
                let v = it.next().ok_or_else(|| {
                    "-f needs an extra attribute name (e.g. immutable)".to_string()
                })?;
                a.flags.push(v.clone());
            }
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(format!("unknown option {o}"));
            }
            _ => a.rest.push(s.clone()),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    let argv0 = raw
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tool, args) = match find_tool(&argv0) {
        Some(t) => (t, &raw[1.min(raw.len())..]),
        None => match raw.get(1).map(String::as_str) {
            None | Some("-h") | Some("--help") | Some("help") => {
                print!("{}", list_tools());
                return ExitCode::SUCCESS;
            }
            Some(name) => match find_tool(name) {
                Some(t) => (t, &raw[2..]),
                None => {
                    eprint!("mfstools: unknown tool {name:?}\n\n{}", list_tools());
                    return ExitCode::from(1);
                }
            },
        },
    };
    let parsed = if tool.name.ends_with("quota") {
        quota::parse(tool.name, args).map(Parsed::Quota)
    } else {
        parse_args(tool, args).map(Parsed::Plain)
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}\n{}", tool.name, usage(tool));
            return ExitCode::from(1);
        }
    };
    let ca = std::env::var("MFS_TLS_CA_FILE").unwrap_or_default();
    match mfs_proto::tls::Tls::dialing("MFS_TLS_CA_FILE", &ca) {
        Ok(t) => mfs_proto::tls::set(t),
        Err(e) => {
            eprintln!("{}: {e}", tool.name);
            return ExitCode::from(1);
        }
    }
    let help = match &parsed {
        Parsed::Plain(a) => a.help,
        Parsed::Quota(a) => a.help,
    };
    if help {
        println!("{}", usage(tool));
        return ExitCode::SUCCESS;
    }
    let Some(rt) = runtime(tool) else {
        return ExitCode::from(1);
    };
    let result = match parsed {
        Parsed::Plain(a) => rt.block_on(ops::run(tool.name, a)),
        Parsed::Quota(a) => Ok(rt.block_on(quota::run(tool.name, a))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{}: {e}\n{}", tool.name, usage(tool));
            ExitCode::from(1)
        }
    }
}

/// A tool's command line: the quota tools have options of their own.
enum Parsed {
    Plain(Args),
    Quota(quota::QuotaArgs),
}

/// A runtime for one tool run (None: said why on stderr).
fn runtime(tool: &Tool) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", tool.name);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tools_are_found_with_or_without_the_mfs_prefix() {
        assert_eq!(find_tool("mfsgetgoal").map(|t| t.name), Some("mfsgetgoal"));
        assert_eq!(find_tool("dirinfo").map(|t| t.name), Some("mfsdirinfo"));
        assert!(find_tool("mfstools").is_none());
        assert!(find_tool("mfsnothing").is_none());
    }

    #[test]
    fn options_and_operands_are_split() {
        let t = find_tool("mfssetgoal").unwrap();
        let a = parse_args(t, &strs(&["-r", "-H", "h:1", "3", "a", "--", "-b"])).unwrap();
        assert!(a.recursive);
        assert_eq!(a.masters.as_deref(), Some("h:1"));
        assert_eq!(a.rest, strs(&["3", "a", "-b"]));
        assert!(parse_args(t, &strs(&["-x"])).is_err());
        let c = find_tool("mfscheckfile").unwrap();
        assert!(
            parse_args(c, &strs(&["-r", "f"])).is_err(),
            "no -r for checkfile"
        );
    }
}
