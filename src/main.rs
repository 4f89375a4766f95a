//! The `ringcast` binary: flags → [`Config`] → [`runtime::run`]. No logic lives here.

use clap::Parser;
use ringcast::config::Config;
use ringcast::runtime;

fn main() {
    let mut cfg = Config::parse();
    if let Err(e) = cfg.validate() {
        eprintln!("ringcast: {e}");
        std::process::exit(2);
    }
    if let Err(e) = runtime::run(cfg) {
        eprintln!("ringcast: {e}");
        std::process::exit(1);
    }
}
