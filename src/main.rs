//! The `ringcast` binary: flags → [`Config`] → [`runtime::run`]. No logic lives here.

use ringcast::config::sources::{self, LoadError};
use ringcast::runtime;

/// jemalloc instead of glibc malloc. Its size classes keep the small allocations a connection
/// holds for its life apart from the memory its setup uses and frees; under glibc those small
/// allocations were carved from freed setup buffers and pinned their pages, about 1.2 KB of
/// resident memory per idle connection that no `malloc_trim` could return.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read once at start): a background thread returns unused pages to the
/// kernel about a second after they are freed, so an idle node's RSS is what it holds.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    // Flags, then `RINGCAST_*` variables, then the `--config` file, then defaults; validated.
    let loaded = match sources::load(std::env::args_os()) {
        Ok(l) => l,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::Invalid(e)) => {
            eprintln!("ringcast: {e}");
            std::process::exit(2);
        }
    };
    let cfg = loaded.config.clone();
    ringcast::log::set_level(cfg.log_level);
    ringcast::log::set_format(cfg.log_format);
    for w in &loaded.warnings {
        ringcast::warn!("{w}");
    }
    // A key that does not parse is a configuration error like any other.
    let auth = match ringcast::auth::Auth::load(&cfg.auth_config()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringcast: {e}");
            std::process::exit(2);
        }
    };
    if cfg.check_config {
        print!("{}", loaded.render());
        return;
    }
    if let Err(e) = runtime::run(cfg, auth) {
        eprintln!("ringcast: {e}");
        std::process::exit(1);
    }
}
