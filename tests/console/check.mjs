// Opens pages of the Quiver web console in headless Chromium and reports, as one JSON
// document on stdout, what each page showed and what went wrong on it: console errors
// and warnings, uncaught exceptions, failed requests, the error box, every chart's
// lines (the points each `path.series` / `path.limit` carries), the text of every
// table, and where its full-page screenshot is.
//
//   node check.mjs URL OUTDIR PAGE [--chart FAMILY=SUBJECT]... [--limit FAMILY=SUBJECT]... [PAGE ...]
//
//   URL      the console, e.g. http://127.0.0.1:9644/
//   OUTDIR   where the screenshots go (created)
//   PAGE     a hash route: '#/', '#/topics', '#/topics/orders', ...
//   --chart  (after a PAGE) wait until that page's chart FAMILY has a line for SUBJECT
//   --limit  (after a PAGE) wait until that page's chart FAMILY has a limit line for SUBJECT
//   --timeout-ms N  how long to wait for each page (default 30000)
//   --redraws N     after a page is ready, wait for N more of its 2-second redraws (default 1)
//   --parallel N    check up to N pages at once, each in its own browser context (default 1):
//                   most of a page's time is waiting for its redraw, not work
//
// A page is read once `main[data-page]` names it, `main[data-loaded]` is set and every
// wanted line is drawn, and then redrawn N more times (a new `main[data-loaded]` each
// time), so the refresh path runs under watch too — all found by polling the DOM, never
// by sleeping. A page that does not get there within the timeout is still reported (with
// `wait_error` saying what was missing) and screenshotted. Judging what was seen is the caller's job: this script exits
// non-zero only when it cannot do its own (bad arguments, the browser does not start).
//
// The JSON: {url, browser, pages: [...]}, one entry per PAGE, in order:
//   hash, page              the hash asked for and the page app.js draws for it
//   console_errors          console messages of type error or warning: {type, text, at}
//   page_errors             uncaught exceptions (stack)
//   failed_requests         {url, method, error} (network) or {url, method, status} (>= 400)
//   error_box               text of the `.error-box` elements, or null
//   status                  #status: {text, error}
//   title, cards            the h1, and {label: value} of the cards
//   charts, limits          {family: {subject: [[ms, value], ...]}} of path.series / path.limit
//                           (a chart with no line is there as {})
//   tables                  every table of main: [[header, ...], [cell, ...], ...]
//   empty                   the "nothing here" notes
//   screenshot              its absolute path
//   waited_ms, wait_error   how long it took to be ready; what was still missing, if it never was
//
// Chromium: $CHROMIUM, else /usr/bin/chromium (Debian's `chromium`); Playwright's own
// browser downloads are not used.

import { mkdir } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { chromium } from "playwright-core";

const POLL_MS = 100;
const USAGE = "usage: node check.mjs URL OUTDIR PAGE [--chart FAMILY=SUBJECT]... [--limit FAMILY=SUBJECT]... "
  + "[PAGE ...] [--timeout-ms N] [--redraws N] [--parallel N]";

function fail(message, code = 2) {
  process.stderr.write(`check.mjs: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const positional = [];
  const pages = [];
  let timeoutMs = 30000;
  let redraws = 1;
  let parallel = 1;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--chart" || arg === "--limit") {
      const spec = argv[++i];
      const eq = spec ? spec.indexOf("=") : -1;
      if (eq <= 0) fail(`${arg} wants FAMILY=SUBJECT, got ${JSON.stringify(spec)}\n${USAGE}`);
      if (!pages.length) fail(`${arg} ${spec} comes before any PAGE\n${USAGE}`);
      const want = arg === "--chart" ? pages[pages.length - 1].series : pages[pages.length - 1].limits;
      want.push([spec.slice(0, eq), spec.slice(eq + 1)]);
    } else if (arg === "--timeout-ms") {
      timeoutMs = Number(argv[++i]);
      if (!(timeoutMs > 0)) fail(`--timeout-ms wants a positive number\n${USAGE}`);
    } else if (arg === "--redraws") {
      redraws = Number(argv[++i]);
      if (!(Number.isInteger(redraws) && redraws >= 0)) fail(`--redraws wants a count\n${USAGE}`);
    } else if (arg === "--parallel") {
      parallel = Number(argv[++i]);
      if (!(Number.isInteger(parallel) && parallel >= 1)) fail(`--parallel wants a count of at least 1\n${USAGE}`);
    } else if (arg.startsWith("--")) {
      fail(`unknown option ${arg}\n${USAGE}`);
    } else if (positional.length < 2) {
      positional.push(arg);
    } else {
      pages.push({ hash: arg, series: [], limits: [] });
    }
  }
  if (positional.length < 2 || !pages.length) fail(USAGE);
  return { url: positional[0], outDir: positional[1], pages, timeoutMs, redraws, parallel };
}

// The page app.js draws for a hash: its first part, or the overview (as render() does).
const KNOWN = ["overview", "topics", "groups", "plugins", "tenants", "mirrors", "transforms"];
function pageOf(hash) {
  const first = hash.replace(/^#\/?/, "").split("/")[0];
  return KNOWN.includes(first) ? first : "overview";
}

function fileNameOf(index, hash) {
  const slug = hash.replace(/^#\/?/, "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "");
  return `${String(index + 1).padStart(2, "0")}-${slug || "overview"}.png`;
}

// In the page: what is still missing before it can be read ([] when nothing is).
function missing([page, series, limits]) {
  const main = document.getElementById("main");
  if (!main) return ["no main element"];
  const out = [];
  if (main.dataset.page !== page) {
    out.push(`main[data-page] is ${JSON.stringify(main.dataset.page ?? null)}, want ${page}`);
  }
  if (!main.dataset.loaded) out.push("main[data-loaded] is not set");
  const has = (kind, family, subject) => [...main.querySelectorAll("figure.chart")].some((figure) =>
    figure.dataset.chart === family &&
    [...figure.querySelectorAll(`path.${kind}`)].some((line) => line.dataset.series === subject));
  for (const [family, subject] of series) {
    if (!has("series", family, subject)) out.push(`no line for ${subject} in chart ${family}`);
  }
  for (const [family, subject] of limits) {
    if (!has("limit", family, subject)) out.push(`no limit line for ${subject} in chart ${family}`);
  }
  return out;
}

// In the page: everything it shows, read in one go (the page redraws every 2 s).
function snapshot() {
  const main = document.getElementById("main");
  const text = (node) => (node ? node.textContent.replace(/\s+/g, " ").trim() : null);
  const charts = {};
  const limits = {};
  for (const figure of document.querySelectorAll("figure.chart")) {
    const family = figure.dataset.chart;
    charts[family] = charts[family] || {};
    for (const line of figure.querySelectorAll("path.series, path.limit")) {
      const into = line.classList.contains("limit") ? (limits[family] = limits[family] || {}) : charts[family];
      let points;
      try {
        points = JSON.parse(line.dataset.points);
      } catch (e) {
        points = `unparsable data-points: ${line.dataset.points}`;
      }
      into[line.dataset.series] = points;
    }
  }
  const tables = [...(main ? main.querySelectorAll("table") : [])].map((table) =>
    [...table.rows].map((row) => [...row.cells].map((cell) => text(cell))));
  const cards = {};
  for (const card of document.querySelectorAll(".card")) {
    cards[text(card.querySelector(".label"))] = text(card.querySelector(".value"));
  }
  const boxes = [...document.querySelectorAll(".error-box")].map(text);
  const status = document.getElementById("status");
  return {
    data_page: main ? main.dataset.page ?? null : null,
    data_loaded: main ? main.dataset.loaded ?? null : null,
    title: text(main && main.querySelector("h1")),
    status: { text: text(status), error: Boolean(status && status.classList.contains("error")) },
    error_box: boxes.length ? boxes.join("\n") : null,
    cards,
    charts,
    limits,
    tables,
    empty: [...(main ? main.querySelectorAll(".empty") : [])].map(text),
  };
}

async function checkPage(browser, base, spec, index, outDir, timeoutMs, redraws) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const result = {
    hash: spec.hash,
    page: pageOf(spec.hash),
    console_errors: [],
    page_errors: [],
    failed_requests: [],
  };
  // Events once the page is being closed (a refresh cut short) are not the console's.
  let watching = true;
  page.on("console", (message) => {
    if (!watching || !["error", "warning"].includes(message.type())) return;
    const where = message.location();
    result.console_errors.push({
      type: message.type(),
      text: message.text(),
      at: where && where.url ? `${where.url}:${where.lineNumber}:${where.columnNumber}` : null,
    });
  });
  page.on("pageerror", (error) => {
    if (watching) result.page_errors.push(error.stack || String(error));
  });
  page.on("requestfailed", (request) => {
    if (watching) {
      const error = request.failure()?.errorText ?? null;
      result.failed_requests.push({ url: request.url(), method: request.method(), error });
    }
  });
  page.on("response", (response) => {
    if (watching && response.status() >= 400) {
      const method = response.request().method();
      result.failed_requests.push({ url: response.url(), method, status: response.status() });
    }
  });

  const url = new URL(base);
  url.hash = spec.hash;
  const started = Date.now();
  try {
    await page.goto(url.toString(), { waitUntil: "load", timeout: timeoutMs });
    const wanted = [result.page, spec.series, spec.limits];
    // Ready, and then drawn `redraws` more times by the page's own refresh (each draw
    // stamps main[data-loaded] anew), so errors of the refresh path show up too.
    const draws = new Set();
    for (;;) {
      const left = await page.evaluate(missing, wanted);
      if (!left.length) {
        const loaded = await page.evaluate(() => document.getElementById("main").dataset.loaded);
        draws.add(loaded);
        if (draws.size > redraws) break;
      }
      if (Date.now() - started > timeoutMs) {
        result.wait_error = `after ${timeoutMs} ms: ` + (left.length ? left.join("; ")
          : `drawn ${draws.size - 1} more time(s) since ready, want ${redraws}`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } catch (error) {
    result.wait_error = `loading ${url}: ${error.message.split("\n")[0]}`;
  }
  result.waited_ms = Date.now() - started;
  try {
    Object.assign(result, await page.evaluate(snapshot));
  } catch (error) {
    const reading = `reading the page: ${error.message.split("\n")[0]}`;
    result.wait_error = result.wait_error ? `${result.wait_error}; ${reading}` : reading;
  }
  result.screenshot = path.resolve(outDir, fileNameOf(index, spec.hash));
  try {
    await page.screenshot({ path: result.screenshot, fullPage: true });
  } catch (error) {
    result.screenshot_error = error.message.split("\n")[0];
    result.screenshot = null;
  }
  watching = false;
  await context.close();
  return result;
}

async function main() {
  const { url, outDir, pages, timeoutMs, redraws, parallel } = parseArgs(process.argv.slice(2));
  await mkdir(outDir, { recursive: true });
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  let browser;
  try {
    browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
  } catch (error) {
    fail(`Chromium did not start (${executablePath}; set $CHROMIUM, or run tests/run, which installs `
      + `Debian's chromium): ${error.message}`);
  }
  try {
    // `parallel` workers take the pages in order; the results keep the pages' order.
    const results = new Array(pages.length);
    let next = 0;
    const worker = async () => {
      while (next < pages.length) {
        const index = next++;
        results[index] = await checkPage(browser, url, pages[index], index, outDir, timeoutMs, redraws);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, pages.length) }, worker));
    process.stdout.write(JSON.stringify({ url, browser: browser.version(), pages: results }, null, 1) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((error) => fail(error.stack || String(error)));
