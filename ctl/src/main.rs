//! `segctl`: the seg node controller (`segctl node run`) and its admin
//! commands. Exit status: 0 success, 1 error, 2 usage error (from clap).
//!
//! Adding a command group (policy, net, icc, audit land later) is one
//! variant in [`Command`] plus one arm in [`dispatch`]; the group's clap
//! type and `run` live in its own module.

use clap::{Parser, Subcommand};
use segctl::cli;
use std::process::ExitCode;

/// Every heap block is zeroed when it is freed, and `realloc` always moves
/// to a new block and zeroes the old one (the crate keeps the trait's
/// default `realloc`). Secret values are copied into locked `SecretBytes`,
/// but the buffers they pass through on the way (hyper's read buffer and the
/// body chunks it shares out, which we cannot wipe while hyper holds them,
/// and every copy left behind when such a buffer grows) belong to other
/// crates: wiping on free is the one place that covers every allocation
/// path, present and future. Cost: see docs/benchmarks.md.
#[cfg(feature = "wipe-heap")]
#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<std::alloc::System> = zeroizing_alloc::ZeroAlloc(std::alloc::System);

#[derive(Debug, Parser)]
#[command(
    name = "segctl",
    version,
    about = "seg: secrets for containers by attestation, and a per-service container firewall",
    propagate_version = true
)]
struct Cli {
    /// Run directory of the controller (holds admin.sock); same as the
    /// command's own --run-dir or SEG_RUN_DIR. Default /run/seg.
    #[arg(long = "run-dir", value_name = "DIR")]
    top_run_dir: Option<std::ffi::OsString>,
    /// A node's cluster endpoint (`https://HOST:PORT`) instead of the local
    /// admin socket; same as SEG_SERVER. Needs --admin-dir.
    #[arg(long = "server", value_name = "URL")]
    top_server: Option<std::ffi::OsString>,
    /// The admin certificate's directory (`segctl cluster admin-cert
    /// --out DIR`); same as SEG_ADMIN_DIR.
    #[arg(long = "admin-dir", value_name = "DIR")]
    top_admin_dir: Option<std::ffi::OsString>,
    #[command(subcommand)]
    command: Command,
}

/// Parses the command line. A `--run-dir` given before the command group is
/// handed to every group through `SEG_RUN_DIR` (each group's own flag reads
/// it), then the line is parsed again so the groups see it as their default.
fn parse_cli() -> Cli {
    let first = Cli::parse();
    let top = [
        ("SEG_RUN_DIR", &first.top_run_dir),
        ("SEG_SERVER", &first.top_server),
        ("SEG_ADMIN_DIR", &first.top_admin_dir),
    ];
    if top.iter().all(|(_, v)| v.is_none()) {
        return first;
    }
    for (var, value) in top {
        if let Some(value) = value {
            // Still single-threaded: no other thread can be reading the environment.
            std::env::set_var(var, value);
        }
    }
    Cli::parse()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node controller.
    #[command(subcommand)]
    Node(segctl::node::command::NodeCmd),
    /// Show whether the controller runs and what it sees.
    Status(cli::status::StatusArgs),
    /// Manage secrets: put, ls, get, rm, grant, revoke, ttl, rotate, status, hook.
    Secret(cli::secret::SecretArgs),
    /// Check this Docker host's security (CIS Docker Benchmark + seg's own); --fix what seg owns.
    Audit(segctl::audit::AuditArgs),
    /// Network policies: apply, ls, show, rm, diff, lint, check, verify.
    Policy(cli::policy::PolicyArgs),
    /// Docker networks for segregation: create, ls, rm (through the controller).
    Net(cli::net::NetArgs),
    /// Inter-container traffic on docker0: status, disable, enable.
    Icc(cli::icc::IccArgs),
    /// Write the compose override that delivers `x-seg.secrets` (sidecars, tmpfs volumes).
    Compose(cli::compose::ComposeArgs),
    /// Many hosts, one set of secrets: init, join, ls, remove, token, admin-cert.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `segctl cluster`: `init` and `join` set this node up (the controller's
/// side, stopped); the rest ask a running controller (the CLI's side).
#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Make this node the first of a new cluster on etcd (controller stopped).
    Init(segctl::node::cluster_setup::InitArgs),
    /// Join a cluster with a token from `segctl cluster token` (controller stopped).
    Join(segctl::node::cluster_setup::JoinArgs),
    #[command(flatten)]
    Admin(cli::cluster::ClusterCmd),
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(cmd) => segctl::node::command::run(cmd).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Secret(args) => cli::secret::run(args).await,
        Command::Audit(args) => segctl::audit::run(args).await,
        Command::Policy(args) => cli::policy::run(args).await,
        Command::Net(args) => cli::net::run(args).await,
        Command::Icc(args) => cli::icc::run(args).await,
        Command::Compose(args) => cli::compose::run(args).await,
        Command::Cluster(ClusterCommand::Init(args)) => segctl::node::cluster_setup::init(args).await,
        Command::Cluster(ClusterCommand::Join(args)) => segctl::node::cluster_setup::join(args).await,
        Command::Cluster(ClusterCommand::Admin(cmd)) => cli::cluster::run(cmd).await,
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 here, before anything else happens.
    let cli = parse_cli();
    // No core dumps or ptrace of a process that may hold secret values.
    if let Err(err) = seg_common::sys::harden_process() {
        eprintln!("segctl: error: cannot harden the process (core dumps, ptrace): {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match &cli.command {
        // The controller serves many connections; a command makes one call.
        Command::Node(_) => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("segctl: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("segctl: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(all(test, feature = "wipe-heap"))]
mod tests {
    //! The installed allocator, observed from outside the Rust heap: freed
    //! blocks are read back through `/proc/self/mem` (a syscall, not a
    //! dereference of freed memory).
    use std::os::unix::fs::FileExt;

    fn marker(len: usize) -> Vec<u8> {
        (0..len).map(|_| fastrand::u8(1..)).collect()
    }

    /// Reads a (possibly freed) range back. Made before the free: opening
    /// the file and making the buffer allocate, and could reuse (and so
    /// overwrite) the very block under test.
    struct Probe {
        mem: std::fs::File,
        buf: Vec<u8>,
    }

    impl Probe {
        fn new(len: usize) -> Probe {
            let mem = std::fs::File::open("/proc/self/mem").expect("open /proc/self/mem");
            Probe { mem, buf: vec![0u8; len] }
        }

        /// Bytes at `addr` that still equal `marker`.
        fn left_over(&mut self, addr: usize, marker: &[u8]) -> usize {
            if self.mem.read_exact_at(&mut self.buf, addr as u64).is_err() {
                return 0; // unmapped: returned to the kernel, which zeroes pages
            }
            self.buf.iter().zip(marker).filter(|(a, b)| a == b).count()
        }
    }

    #[test]
    fn freed_blocks_are_zeroed() {
        for len in [24, 3000, 20_000, 300_000] {
            let mark = marker(len);
            let block = mark.clone();
            let addr = block.as_ptr() as usize;
            let mut probe = Probe::new(len);
            drop(block);
            // The allocator reuses a few words of a free block for its own
            // lists; every other byte must be gone.
            let left = probe.left_over(addr, &mark);
            assert!(left <= 32 + len / 100, "{left} of {len} bytes survived the free");
        }
    }

    #[test]
    fn growing_a_vec_leaves_no_copy_behind() {
        let mark = marker(5000);
        let mut grown = Vec::with_capacity(mark.len());
        grown.extend_from_slice(&mark);
        let old = grown.as_ptr() as usize;
        let mut probe = Probe::new(mark.len());
        grown.reserve(200_000);
        assert_ne!(grown.as_ptr() as usize, old, "realloc grew in place; nothing to check");
        let left = probe.left_over(old, &mark);
        assert!(left <= 32 + mark.len() / 100, "{left} of {} bytes survived the realloc", mark.len());
        assert_eq!(&grown[..], &mark[..]);
    }
}
