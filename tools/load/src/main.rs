//! `ringcast-load`: flags → mode. See `ringcast_load` for the layout and tools/load/README.md.

use std::rc::Rc;

use clap::Parser;
use ringcast_load::cli::{Cli, Cmd};
use ringcast_load::link::WorkerLink;
use ringcast_load::{echo, fanout, hold, net};

fn main() {
    let cli = Cli::parse();
    net::raise_nofile();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringcast-load: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run(cli));
    let code = match result {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("ringcast-load: {e}");
            2
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // Exit without dropping the runtime: a worker's blocking stdin read would hold it open.
    std::process::exit(code);
}

/// Runs the mode as the parent (returns its summary) or as a worker process (returns nothing:
/// its report went up the link).
async fn run(cli: Cli) -> Result<Option<serde_json::Value>, String> {
    match cli.cmd {
        Cmd::Fanout(a) => {
            let worker = a.common.worker_index.is_some();
            let cfg = Rc::new(fanout::Cfg::new(a)?);
            if worker {
                fanout::worker(cfg, WorkerLink::from_stdio()).await;
                return Ok(None);
            }
            fanout::run(cfg).await.map(Some)
        }
        Cmd::Hold(a) => {
            let worker = a.common.worker_index.is_some();
            let cfg = Rc::new(hold::Cfg::new(a)?);
            if worker {
                hold::worker(cfg, WorkerLink::from_stdio()).await;
                return Ok(None);
            }
            hold::run(cfg).await.map(Some)
        }
        Cmd::Echo(a) => {
            let worker = a.common.worker_index.is_some();
            let cfg = Rc::new(echo::Cfg::new(a)?);
            if worker {
                echo::worker(cfg, WorkerLink::from_stdio()).await;
                return Ok(None);
            }
            echo::run(cfg).await.map(Some)
        }
    }
}
