//! Progress of long operations (repair, drain, scrub, migrate-store): an
//! indicatif bar on stderr when it is a terminal, else a plain line on
//! stderr at most every second, so logs and pipes get no escape codes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Plain progress lines come at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// One operation's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress of `what` ("repair", "drain", ...), out of `total` steps
    /// when known.
    pub fn new(what: &'static str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total {
                Some(n) => (ProgressBar::new(n), "{prefix}: [{bar:30}] {pos}/{len} {msg}"),
                None => (ProgressBar::new_spinner(), "{prefix}: {spinner} {msg}"),
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            // Drawn at once, so that even a short operation shows it.
            bar.tick();
            bar
        });
        Progress { bar, what, last_line: None }
    }

    /// Where the operation is: `pos` steps done, and a short summary.
    pub fn update(&mut self, pos: u64, total: Option<u64>, msg: &str) {
        match &self.bar {
            Some(bar) => {
                if let Some(n) = total {
                    bar.set_length(n);
                }
                bar.set_position(pos);
                bar.set_message(msg.to_string());
            }
            None => {
                if self.last_line.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
                    return;
                }
                self.last_line = Some(Instant::now());
                match total {
                    Some(n) => eprintln!("{}: {pos}/{n} {msg}", self.what),
                    None => eprintln!("{}: {msg}", self.what),
                }
            }
        }
    }

    /// Prints a line on stdout, above the bar on a terminal.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Removes the bar; the caller prints the outcome.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
