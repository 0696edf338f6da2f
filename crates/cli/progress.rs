//! Progress bars (indicatif) for the engine's [`Progress`] reports, and a log
//! writer that does not tear them.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use cairn_engine::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ACTIVE: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active() -> &'static Mutex<Option<ProgressBar>> {
    ACTIVE.get_or_init(|| Mutex::new(None))
}

/// A progress bar on stderr, hidden when stderr is not a terminal or output
/// is quiet/JSON; notes (a shard done, a restore step) go to stderr unless
/// output is quiet or JSON.
pub struct Bar {
    bar: ProgressBar,
    notes: bool,
}

impl Bar {
    pub fn new(g: &crate::global::GlobalArgs) -> Self {
        let visible = !g.quiet && !g.json;
        let bar = ProgressBar::hidden();
        if visible && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        *active()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar.clone());
        Self {
            bar,
            notes: visible,
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: Option<u64>) {
        let style = match total {
            Some(t) => {
                self.bar.set_length(t);
                ProgressStyle::with_template(
                    "{msg:8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
            }
            None => {
                ProgressStyle::with_template("{msg:8} {spinner} {bytes} {binary_bytes_per_sec}")
            }
        };
        if let Ok(style) = style {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_position(0);
        self.bar.set_message(phase.to_string());
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn note(&self, message: &str) {
        if self.notes {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }
}

/// Writes log lines to stderr, suspending any progress bar while doing so.
#[derive(Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = active().lock().ok().and_then(|b| b.clone());
        match bar {
            Some(b) => b.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
