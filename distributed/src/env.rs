//! Launch environment: which rank this process is and where the rendezvous store lives, read once from
//! the torchrun variables, the SLURM variables, or neither (a single process).

use crate::error::DistError;
use crate::Result;

/// Where the rank information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher variables: one process, world size 1.
    Single,
    /// torchrun / `--nproc-per-node`: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
    Torchrun,
    /// `srun`: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_JOB_NODELIST`.
    Slurm,
}

/// This process's place in the job; construct with [`DistEnv::from_env`] (or the fields, in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Rank on this node; selects the GPU (`cuda:local_rank`).
    pub local_rank: usize,
    /// Host of the rank-0 TCPStore.
    pub master_addr: String,
    /// Port of the rank-0 TCPStore.
    pub master_port: u16,
    /// Which convention supplied the values.
    pub launcher: Launcher,
}

/// Default store port when neither `MASTER_PORT` nor a SLURM job id is available (PyTorch's default).
const DEFAULT_PORT: u16 = 29500;

impl DistEnv {
    /// A lone process (rank 0 of 1).
    pub fn single() -> Self {
        DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".to_owned(),
            master_port: DEFAULT_PORT,
            launcher: Launcher::Single,
        }
    }

    /// Reads the process environment; see [`DistEnv::from_lookup`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Resolves the environment given a variable lookup. torchrun variables (`RANK` + `WORLD_SIZE`) win over
    /// SLURM ones (`SLURM_PROCID` + `SLURM_NTASKS`), so a job that runs `--nproc-per-node` inside an
    /// allocation works. Under SLURM, `MASTER_ADDR` defaults to the first host of `SLURM_JOB_NODELIST` and
    /// `MASTER_PORT` to `20000 + SLURM_JOB_ID % 20000` (so jobs sharing a node do not collide).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let has = |name: &str| get(name).is_some_and(|v| !v.trim().is_empty());
        let env = if has("RANK") && has("WORLD_SIZE") {
            DistEnv {
                rank: parse_usize(&get, "RANK")?,
                world_size: parse_usize(&get, "WORLD_SIZE")?,
                local_rank: parse_usize(&get, "LOCAL_RANK")?,
                master_addr: required(&get, "MASTER_ADDR")?,
                master_port: parse_port(&get, "MASTER_PORT")?,
                launcher: Launcher::Torchrun,
            }
        } else if has("SLURM_PROCID") && has("SLURM_NTASKS") {
            let master_addr = match get("MASTER_ADDR").filter(|v| !v.trim().is_empty()) {
                Some(addr) => addr,
                None => {
                    let list = get("SLURM_JOB_NODELIST")
                        .or_else(|| get("SLURM_NODELIST"))
                        .ok_or(DistError::Env {
                            var: "SLURM_JOB_NODELIST",
                            problem: "not set (needed to find the rank-0 host; or set MASTER_ADDR)"
                                .to_owned(),
                        })?;
                    first_host(&list)?
                }
            };
            let master_port = if has("MASTER_PORT") {
                parse_port(&get, "MASTER_PORT")?
            } else if has("SLURM_JOB_ID") {
                let id = parse_usize(&get, "SLURM_JOB_ID")?;
                // 20000..40000: clear of the usual ephemeral range start and of well-known services.
                20000 + u16::try_from(id % 20000).unwrap_or(0)
            } else {
                DEFAULT_PORT
            };
            DistEnv {
                rank: parse_usize(&get, "SLURM_PROCID")?,
                world_size: parse_usize(&get, "SLURM_NTASKS")?,
                local_rank: parse_usize(&get, "SLURM_LOCALID")?,
                master_addr,
                master_port,
                launcher: Launcher::Slurm,
            }
        } else {
            return Ok(Self::single());
        };
        if env.world_size == 0 || env.rank >= env.world_size {
            return Err(DistError::Env {
                var: if env.launcher == Launcher::Slurm {
                    "SLURM_PROCID"
                } else {
                    "RANK"
                },
                problem: format!("rank {} is outside world size {}", env.rank, env.world_size),
            });
        }
        Ok(env)
    }

    /// True when more than one process takes part.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// True on rank 0, the process that logs, shows progress and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The GPU index this process should use given how many CUDA devices it can see: `local_rank` when it
    /// sees the node's GPUs, 0 when the launcher exposes exactly one GPU per task (`--gpus-per-task=1`).
    pub fn local_device(&self, visible_devices: usize) -> Result<usize> {
        match visible_devices {
            0 => Err(DistError::InvalidArgument(format!("rank {}: no CUDA device is visible", self.rank))),
            1 => Ok(0),
            n if self.local_rank < n => Ok(self.local_rank),
            n => Err(DistError::InvalidArgument(format!(
                "rank {}: local rank {} needs a GPU but only {n} are visible (one task per GPU expected)",
                self.rank, self.local_rank
            ))),
        }
    }
}

fn required(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<String> {
    match get(var) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(DistError::Env {
            var,
            problem: "not set".to_owned(),
        }),
    }
}

fn parse_usize(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<usize> {
    let raw = required(get, var)?;
    raw.parse().map_err(|_| DistError::Env {
        var,
        problem: format!("'{raw}' is not a non-negative integer"),
    })
}

fn parse_port(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<u16> {
    let raw = required(get, var)?;
    match raw.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(DistError::Env {
            var,
            problem: format!("'{raw}' is not a TCP port (1-65535)"),
        }),
    }
}

/// First host of a SLURM compact host list: `node[01-04,07],gpu5` → `node01`, `rack[2-3]-n[1,5]` →
/// `rack2-n1`. Each bracket group contributes its first element with its zero padding as written.
pub fn first_host(list: &str) -> Result<String> {
    let err = |problem: &str| DistError::NodeList {
        list: list.to_owned(),
        problem: problem.to_owned(),
    };
    let list_trimmed = list.trim();
    let mut host = String::new();
    let mut depth_start: Option<usize> = None;
    for (i, c) in list_trimmed.char_indices() {
        match (c, depth_start) {
            ('[', None) => depth_start = Some(i + 1),
            ('[', Some(_)) => return Err(err("nested '['")),
            (']', Some(start)) => {
                let inner = list_trimmed.get(start..i).unwrap_or("");
                let first = inner.split(',').next().unwrap_or("");
                let first = first.split('-').next().unwrap_or("").trim();
                if first.is_empty() || !first.chars().all(|d| d.is_ascii_digit()) {
                    return Err(err(
                        "a bracket range must start with digits, like [01-04,07]",
                    ));
                }
                host.push_str(first);
                depth_start = None;
            }
            (']', None) => return Err(err("unbalanced ']'")),
            (',', None) => break,
            (_, Some(_)) => {}
            (c, None) => host.push(c),
        }
    }
    if depth_start.is_some() {
        return Err(err("unclosed '['"));
    }
    if host.is_empty() {
        return Err(err("no host name"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn first_host_handles_compact_lists() {
        assert_eq!(first_host("node[01-04,07]").unwrap(), "node01");
        assert_eq!(first_host("node[07,01-04]").unwrap(), "node07");
        assert_eq!(first_host("gpu5,gpu6").unwrap(), "gpu5");
        assert_eq!(first_host("a[3-4],b[1-2]").unwrap(), "a3");
        assert_eq!(first_host("rack[2-3]-n[001-004]").unwrap(), "rack2-n001");
        assert_eq!(first_host(" single ").unwrap(), "single");
        for bad in ["", "node[01-04", "node]1", "n[[1]]", "n[a-b]", "[]", ","] {
            assert!(first_host(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn local_device_maps_local_rank_to_a_visible_gpu() {
        let env = DistEnv {
            local_rank: 2,
            ..DistEnv::single()
        };
        assert_eq!(env.local_device(4).unwrap(), 2);
        assert_eq!(env.local_device(1).unwrap(), 0);
        assert!(env.local_device(2).is_err());
        assert!(env.local_device(0).is_err());
    }

    #[test]
    fn no_launcher_means_single_process() {
        let env = DistEnv::from_lookup(lookup(&[])).unwrap();
        assert_eq!(env, DistEnv::single());
        assert!(!env.is_distributed() && env.is_main());
    }

    #[test]
    fn torchrun_variables_are_read_and_win_over_slurm() {
        let env = DistEnv::from_lookup(lookup(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (3, 4, 1));
        assert_eq!(
            (env.master_addr.as_str(), env.master_port),
            ("10.0.0.1", 1234)
        );
        assert_eq!(env.launcher, Launcher::Torchrun);
    }

    #[test]
    fn slurm_variables_give_rank_and_master_from_the_node_list() {
        let env = DistEnv::from_lookup(lookup(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-10]"),
            ("SLURM_JOB_ID", "123456"),
        ]))
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (5, 8, 1));
        assert_eq!(env.master_addr, "gpu07");
        assert_eq!(env.master_port, 20000 + (123456 % 20000) as u16);
        assert_eq!(env.launcher, Launcher::Slurm);
        let explicit = DistEnv::from_lookup(lookup(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "head"),
            ("MASTER_PORT", "4000"),
        ]))
        .unwrap();
        assert_eq!(
            (explicit.master_addr.as_str(), explicit.master_port),
            ("head", 4000)
        );
    }

    #[test]
    fn malformed_variables_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[
                    ("RANK", "x"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                ],
                "RANK",
            ),
            (
                &[
                    ("RANK", "2"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                ],
                "RANK",
            ),
            (
                &[
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_PORT", "1"),
                ],
                "MASTER_ADDR",
            ),
            (
                &[
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT",
            ),
            (
                &[
                    ("SLURM_PROCID", "0"),
                    ("SLURM_NTASKS", "2"),
                    ("SLURM_LOCALID", "0"),
                ],
                "SLURM_JOB_NODELIST",
            ),
        ];
        for (vars, name) in cases {
            let err = DistEnv::from_lookup(lookup(vars)).unwrap_err().to_string();
            assert!(err.contains(name), "{err} should name {name}");
        }
    }
}
