// Drives the broker's monitor page in headless Chromium (Debian's /usr/bin/chromium) through
// playwright-core, one step per line on stdin, reporting each on stdout, so the Rust test
// (tests/it/monitor.rs) starts and kills processes between the steps.
//
// Usage: node monitor.cjs URL SCREENSHOT   (PLAYWRIGHT_CORE: the playwright-core directory)
//
// Steps (stdin → stdout):
//   start [URL]          → opens URL (default: the one given), `loaded` once its stream is live
//   unauthorised [URL]   → opens URL, `unauthorised` once the page says it needs its token
//   appear CHANNEL       → `appeared`, then `rate <frames/s>` once the rate is positive and
//                          has changed from the first value shown
//   points CHANNEL N     → `points` once the channel's plot holds at least N points
//   consumer CHANNEL     → `consumer <lag>` once a consumer row with a lag shows
//   screenshot           → `screenshot` once written
//   down CHANNEL         → `down` once the channel shows down
//   hash                 → `hash <location.hash>`
//   quit                 → closes the browser, exits 0
// Any failure prints `error <message>` and exits 1.
"use strict";

const readline = require("node:readline");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const [url, screenshot] = process.argv.slice(2);
// Below the Rust side's 30 s watchdog, so a timeout here is reported as an error line.
const WAIT_MS = 20000;

function say(line) {
  process.stdout.write(line + "\n");
}

const row = (name) => `tr.channel[data-channel="${name}"]`;

// A fresh load (a new URL differing only in its fragment would not reload the page).
async function open(page, target) {
  await page.goto("about:blank");
  await page.goto(target);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: [
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 420 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [step, arg] = line.trim().split(/\s+/);
    if (problems.length) throw new Error("page error: " + problems.join("; "));
    if (step === "start") {
      await open(page, arg || url);
      await page.waitForSelector('#status[data-status="live"]', { timeout: WAIT_MS });
      say("loaded");
    } else if (step === "unauthorised") {
      await open(page, arg || url);
      await page.waitForSelector('#status[data-status="unauthorised"]', { timeout: WAIT_MS });
      say("unauthorised");
    } else if (step === "appear") {
      await page.waitForSelector(row(arg), { timeout: WAIT_MS });
      say("appeared");
      const cell = `${row(arg)} td[data-field="fps"]`;
      const first = await page.getAttribute(cell, "data-value");
      const handle = await page.waitForFunction(
        ([selector, first]) => {
          const v = document.querySelector(selector)?.dataset.value;
          return v && Number(v) > 0 && v !== first ? v : null;
        },
        [cell, first],
        { timeout: WAIT_MS }
      );
      say("rate " + (await handle.jsonValue()));
    } else if (step === "points") {
      const n = Number(line.trim().split(/\s+/)[2]);
      await page.waitForFunction(
        ([selector, n]) => Number(document.querySelector(selector)?.dataset.points || 0) >= n,
        [`${row(arg)} canvas.plot`, n],
        { timeout: WAIT_MS }
      );
      say("points");
    } else if (step === "consumer") {
      const handle = await page.waitForFunction(
        (selector) => {
          let r = document.querySelector(selector)?.nextElementSibling;
          const lag = r && r.classList.contains("consumer")
            ? r.querySelector('td[data-field="lag"]').dataset.value
            : "";
          const p99 = r ? r.querySelector('td[data-field="p99"]').dataset.value : "";
          return lag !== "" && p99 !== "" ? lag : null;
        },
        row(arg),
        { timeout: WAIT_MS }
      );
      say("consumer " + (await handle.jsonValue()));
    } else if (step === "screenshot") {
      await page.screenshot({ path: screenshot, fullPage: true });
      say("screenshot");
    } else if (step === "down") {
      await page.waitForSelector(`${row(arg)}[data-state="down"]`, { timeout: WAIT_MS });
      say("down");
    } else if (step === "hash") {
      say("hash " + (await page.evaluate(() => location.hash)));
    } else if (step === "quit") {
      break;
    } else {
      throw new Error("unknown step " + line);
    }
  }
  if (problems.length) throw new Error("page error: " + problems.join("; "));
  await browser.close();
}

main().then(
  () => process.exit(0),
  (e) => {
    say("error " + String(e && e.message ? e.message : e).split("\n")[0]);
    process.exit(1);
  }
);
