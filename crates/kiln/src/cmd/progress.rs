//! How `kiln build` shows its progress: plain `#N` lines (CI, tests), a live multi-line view on
//! a terminal (as BuildKit's tty view: each running step with its timer and last output lines,
//! finished steps folded into one line), or JSON events, one per line, for tools.
//!
//! Events come from the threads of concurrent stages, so each view takes `&self` and keeps
//! its state behind a lock.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IsTerminal as _, Write};
use std::sync::Mutex;
use std::time::Duration;

use kiln_build::{Event, Reporter};

use super::Progress;
use super::build::StepPrinter;

/// Output lines a live step shows under its title.
const LIVE_LINES: usize = 3;

/// A build's progress view.
pub enum BuildView {
    /// `#N [stage i/n] INSTRUCTION` lines.
    Plain(StepPrinter),
    /// Redrawn bars on a terminal.
    Live(Live),
    /// One JSON object per event.
    Json(JsonEvents),
}

impl BuildView {
    /// The view for a `--progress` mode: `auto` is live on a terminal and plain elsewhere.
    pub fn new(progress: Progress) -> BuildView {
        let terminal = io::stderr().is_terminal();
        match progress {
            Progress::Json => BuildView::Json(JsonEvents::default()),
            Progress::Tty | Progress::Auto if terminal => BuildView::Live(Live::new()),
            // `--progress tty` without a terminal falls back to lines, as BuildKit's does.
            other => BuildView::Plain(StepPrinter::new(other)),
        }
    }

    /// A line that is not a step's ("writing image … done").
    pub fn line(&self, text: &str) {
        match self {
            BuildView::Plain(printer) => printer.line(text),
            BuildView::Live(live) => live.println(text),
            BuildView::Json(json) => json.emit(&serde_json::json!({ "type": "log", "text": text })),
        }
    }
}

impl Reporter for BuildView {
    fn report(&self, event: Event<'_>) {
        match self {
            BuildView::Plain(printer) => printer.report(event),
            BuildView::Live(live) => live.report(event),
            BuildView::Json(json) => json.report(event),
        }
    }
}

/// The terminal view.
pub struct Live {
    multi: indicatif::MultiProgress,
    steps: Mutex<HashMap<usize, LiveStep>>,
}

struct LiveStep {
    bar: indicatif::ProgressBar,
    title: String,
    tail: VecDeque<String>,
}

impl Live {
    fn new() -> Live {
        Live {
            multi: indicatif::MultiProgress::new(),
            steps: Mutex::new(HashMap::new()),
        }
    }

    fn println(&self, text: &str) {
        // Drawing is best effort: a closed terminal must not fail the build.
        let _ = self.multi.println(text);
    }

    fn report(&self, event: Event<'_>) {
        let mut steps = match self.steps.lock() {
            Ok(steps) => steps,
            Err(poisoned) => poisoned.into_inner(),
        };
        match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let title = format!("[{stage} {index}/{total}] {}", first_line(text));
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {elapsed:>4}\n{msg}",
                ) {
                    bar.set_style(style);
                }
                bar.set_prefix(title.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                steps.insert(
                    id,
                    LiveStep {
                        bar,
                        title,
                        tail: VecDeque::new(),
                    },
                );
            }
            Event::Output { id, line } => {
                if let Some(step) = steps.get_mut(&id) {
                    if step.tail.len() == LIVE_LINES {
                        step.tail.pop_front();
                    }
                    step.tail.push_back(line.to_owned());
                    let shown: Vec<String> = step.tail.iter().map(|l| format!("    {l}")).collect();
                    step.bar.set_message(shown.join("\n"));
                }
            }
            Event::Transfer {
                id,
                blob,
                done,
                total,
            } => {
                if let Some(step) = steps.get_mut(&id) {
                    let of = total.map(|t| format!(" of {}", super::human_size(t)));
                    step.bar.set_message(format!(
                        "    {blob}: {}{}",
                        super::human_size(done),
                        of.unwrap_or_default()
                    ));
                }
            }
            Event::Committed { .. } => {}
            Event::Cached { id } => {
                if let Some(step) = steps.remove(&id) {
                    step.bar.finish_and_clear();
                    self.println(&format!("=> CACHED {}", step.title));
                }
            }
            Event::Done { id, seconds } => {
                if let Some(step) = steps.remove(&id) {
                    step.bar.finish_and_clear();
                    self.println(&format!("=> {} {seconds:.1}s", step.title));
                }
            }
            Event::Warning { text } => self.println(&format!("WARN: {text}")),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Steps cut short by a failure: leave their last state on the screen.
        if let Ok(steps) = self.steps.get_mut() {
            for step in steps.values() {
                step.bar.abandon();
            }
        }
    }
}

fn first_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or(text);
    if text.contains('\n') {
        format!("{first} …")
    } else {
        first.to_owned()
    }
}

/// JSON events on stderr, one per line.
#[derive(Default)]
pub struct JsonEvents {
    stderr: Mutex<()>,
}

impl JsonEvents {
    fn emit(&self, value: &serde_json::Value) {
        let _guard = self.stderr.lock();
        let _ = writeln!(io::stderr(), "{value}");
    }

    fn report(&self, event: Event<'_>) {
        use serde_json::json;
        let value = match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => {
                json!({"type": "step", "id": id, "stage": stage, "index": index, "total": total, "text": text})
            }
            Event::Cached { id } => json!({"type": "cached", "id": id}),
            Event::Output { id, line } => json!({"type": "output", "id": id, "line": line}),
            Event::Transfer {
                id,
                blob,
                done,
                total,
            } => json!({"type": "transfer", "id": id, "blob": blob, "done": done, "total": total}),
            Event::Committed { id, bytes, seconds } => {
                json!({"type": "committed", "id": id, "bytes": bytes, "seconds": seconds})
            }
            Event::Done { id, seconds } => json!({"type": "done", "id": id, "seconds": seconds}),
            Event::Warning { text } => json!({"type": "warning", "text": text}),
        };
        self.emit(&value);
    }
}
