//! `kepler-rs top`: a live terminal view of power per container, pod or process, read from a
//! running exporter's `/metrics` (the local one by default, or `--url`).
//!
//! Every interval it scrapes once and shows the power between the last two scrapes
//! ([`table`]). Keys: `p`/`e`/`n` sort by power, energy or name, `g` switches between
//! container, pod and process rows, `q` quits. `--once` scrapes twice one interval apart (longer
//! if the exporter has not measured again by then), prints one plain table and exits (for
//! scripts and tests).

pub mod table;

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use reqwest::blocking::{Client, Response};

use crate::config::top::{Group, SortBy, TopOptions};
use table::Counters;

/// Largest `/metrics` body accepted (a node with process metrics on can be tens of MB).
const MAX_BODY: u64 = 256 << 20;

/// The HTTP client for the scrapes: no overall timeout (a slow exporter is waited for), TLS on
/// the process-wide ring provider as everywhere else in the crate.
fn client() -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(None::<Duration>)
        .build()
        .context("cannot set up the HTTP client")
}

/// One scrape, parsed.
fn scrape(client: &Client, url: &str) -> Result<prometheus_parse::Scrape> {
    let response = client
        .get(url)
        .send()
        .and_then(Response::error_for_status)
        .with_context(|| format!("cannot scrape {url}"))?;
    let mut body = String::new();
    response
        .take(MAX_BODY + 1)
        .read_to_string(&mut body)
        .with_context(|| format!("cannot read the answer of {url}"))?;
    anyhow::ensure!(
        body.len() as u64 <= MAX_BODY,
        "cannot read the answer of {url}: larger than {MAX_BODY} bytes"
    );
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .with_context(|| format!("{url} did not answer in the Prometheus text format"))
}

/// Prints one table and returns.
pub fn run_once(opts: &TopOptions) -> Result<()> {
    let client = client()?;
    let first = scrape(&client, &opts.url)?;
    let started = Instant::now();
    std::thread::sleep(opts.interval);
    let mut second = scrape(&client, &opts.url)?;
    // An exporter that has not measured again since the first scrape (its interval is longer
    // than ours, or the node is busy) shows no rate yet: wait for its next snapshot, for at
    // most ten of our intervals.
    let deadline = Instant::now() + opts.interval * 10;
    while !table::shows_newer_snapshot(&first, &second) && Instant::now() < deadline {
        std::thread::sleep(opts.interval.min(Duration::from_millis(250)));
        second = scrape(&client, &opts.url)?;
    }
    let rows = table::build(
        &table::counters(&first, opts.group),
        &table::counters(&second, opts.group),
        table::elapsed_between(&first, &second, started.elapsed()),
        opts.sort,
    );
    println!(
        "{}",
        table::render(
            &rows,
            &opts.url,
            opts.group,
            opts.sort,
            usize::MAX,
            opts.rows
        )
    );
    Ok(())
}

/// Restores the terminal however the view ends.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// The interactive view, until `q`.
pub fn run_interactive(mut opts: TopOptions) -> Result<()> {
    let client = client()?;
    let _screen = Screen::enter()
        .context("this terminal does not support an interactive view; use --once")?;
    let mut previous: Option<(prometheus_parse::Scrape, Instant)> = None;
    let mut latest: Option<(prometheus_parse::Scrape, Instant)> = None;
    let mut error: Option<String> = None;
    let mut next_scrape = Instant::now();
    loop {
        if Instant::now() >= next_scrape {
            match scrape(&client, &opts.url) {
                // The same snapshot again adds nothing: keep the pair that shows a rate.
                Ok(s)
                    if latest
                        .as_ref()
                        .and_then(|(l, _)| table::snapshot_time(l))
                        .is_some_and(|t| Some(t) == table::snapshot_time(&s)) => {}
                Ok(s) => {
                    previous = latest.take();
                    latest = Some((s, Instant::now()));
                    error = None;
                }
                Err(e) => error = Some(format!("{e:#}")),
            }
            next_scrape = Instant::now() + opts.interval;
        }
        draw(&opts, previous.as_ref(), latest.as_ref(), error.as_deref())?;
        let wait = next_scrape.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(KeyEvent {
                code, modifiers, ..
            }) = event::read()?
            {
                match code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('p') => opts.sort = SortBy::Power,
                    KeyCode::Char('e') => opts.sort = SortBy::Energy,
                    KeyCode::Char('n') => opts.sort = SortBy::Name,
                    KeyCode::Char('g') => opts.group = next_group(opts.group),
                    _ => {}
                }
            }
        }
    }
}

/// The grouping after `group`, for the `g` key.
fn next_group(group: Group) -> Group {
    match group {
        Group::Container => Group::Pod,
        Group::Pod => Group::Process,
        Group::Process => Group::Container,
    }
}

type Scraped = (prometheus_parse::Scrape, Instant);

fn draw(
    opts: &TopOptions,
    previous: Option<&Scraped>,
    latest: Option<&Scraped>,
    error: Option<&str>,
) -> Result<()> {
    let (width, height) = terminal::size().unwrap_or((120, 40));
    let text = match latest {
        Some((after, t1)) => {
            // Before a second scrape there is no rate yet: power shows as 0.
            let (before, elapsed) = match previous {
                Some((before, t0)) => (
                    table::counters(before, opts.group),
                    table::elapsed_between(before, after, t1.duration_since(*t0)),
                ),
                None => (Counters::new(), Duration::ZERO),
            };
            let rows = table::build(
                &before,
                &table::counters(after, opts.group),
                elapsed,
                opts.sort,
            );
            table::render(
                &rows,
                &opts.url,
                opts.group,
                opts.sort,
                usize::from(width),
                usize::from(height).saturating_sub(4),
            )
        }
        None => format!(
            "kepler-rs top  {}  waiting for the first scrape...",
            opts.url
        ),
    };
    let mut out = io::stdout();
    queue!(
        out,
        terminal::Clear(terminal::ClearType::All),
        cursor::MoveTo(0, 0)
    )?;
    for line in text.lines() {
        write!(out, "{line}\r\n")?;
    }
    if let Some(e) = error {
        write!(out, "\r\nscrape failed: {e}\r\n")?;
    }
    out.flush()?;
    Ok(())
}
