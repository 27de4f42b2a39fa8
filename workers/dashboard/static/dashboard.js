/* The dashboard page: fetches the JSON API (docs/dashboard.md) and lays out what it answers. Every figure is the
   API's; this script only formats numbers, dates, durations and changes against the previous period, joins the
   ads' engagement to their rows by ad id, sorts the table and draws the daily chart and an ad's funnel with uPlot.
   The range and the ad on view live in the URL, so a link can be shared. Each part of the page is drawn as soon as
   the answers it needs are in, not after all of them: /api/engagement, much the slowest, feeds only the "Wrote
   again" card, three columns of the ads table and three bars of an ad's funnel, which show a placeholder until it
   answers. The page asks again every few seconds and redraws, keeping the sort and the view, but never asks the
   same question twice at once: a slow answer is waited for, not piled up. */
(function () {
  "use strict";

  const REFRESH_MS = 5000;
  const DAY_MS = 86400000;
  const CHART_HEIGHT = 320;
  const FUNNEL_HEIGHT = 280;
  // The daily chart's lines, in the legend's order.
  const SERIES = [
    { key: "clicks", label: "Clicks", color: "#128c7e", fill: "rgba(18, 140, 126, 0.08)" },
    { key: "people", label: "People", color: "#2f6fde" },
    { key: "conversations", label: "Conversations", color: "#e0891b" },
    { key: "conversions", label: "Conversions", color: "#8e44ad" },
  ];
  const COUNTS = ["clicks", "people", "new_people", "conversations", "conversions"];
  const STATUSES = ["pending", "sending", "sent", "failed", "unconfirmed", "unattributed"];
  const TEXT_COLUMNS = new Set(["source_id", "headline", "source_type"]);
  // The ads table's columns read from /api/engagement's row of the same ad, not from /api/ads'.
  const ENGAGED_COLUMNS = new Set(["wrote_again_rate", "median_seconds_to_first_reply", "replied"]);
  // An ad's funnel, step by step: each step's people, from the ad's row of /api/ads (ads) or of /api/engagement.
  const FUNNEL = [
    { label: "Clicked", from: "ads", key: "people", color: "#128c7e" },
    { label: "Wrote\nagain", from: "engagement", key: "people_wrote_again", color: "#2f9e8f" },
    { label: "Reply\ndelivered", from: "engagement", key: "people_replied", color: "#2f6fde" },
    { label: "Reply\nread", from: "engagement", key: "people_reply_read", color: "#5b8def" },
    { label: "Converted", from: "ads", key: "people_converted", color: "#8e44ad" },
  ];
  // A creative's links, shown as text: never loaded (the page's Content-Security-Policy is default-src 'self').
  const LINKS = [
    { key: "image_url", label: "image" },
    { key: "video_url", label: "video" },
    { key: "thumbnail_url", label: "thumbnail" },
    { key: "source_url", label: "link" },
  ];

  const counts = new Intl.NumberFormat(undefined);
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const rates = new Intl.NumberFormat(undefined, {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const points = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, signDisplay: "always" });
  const durations = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const dayLabel = new Intl.DateTimeFormat(undefined, {
    day: "numeric",
    month: "short",
    year: "numeric",
    timeZone: "UTC",
  });
  const tickDay = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
  const shortMoment = new Intl.DateTimeFormat(undefined, {
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
    timeZone: "UTC",
  });
  const moment = new Intl.DateTimeFormat(undefined, {
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZone: "UTC",
    timeZoneName: "short",
  });

  // The page's questions whose answers only feed the engagement's parts (placeholders until they answer).
  const ENGAGEMENT = new Set(["engagement", "engagementBefore"]);
  const PLACEHOLDER = "\u2026";

  const state = {
    view: null, // what the URL asks for: { since, until, ad, app }
    apps: null, // the apps to choose from (/api/apps), once it answered
    generation: 0, // one more at each change of view: a part is redrawn for the new one even from the same answers
    range: null, // the view's range, { since, until }: the URL's, or the API's default once /api/summary answered
    ticks: 0, // refreshes started: each asks every question not still in flight
    timer: 0,
    slots: new Map(), // by question (see wanted()): its fetch in flight, its last answer and for which URL
    drawn: new Map(), // by part: the view and the answers it was last drawn from
    status: null, // the last draw's: every part drawn, the engagement's too, the questions that failed
    counted: 0, // the newest refresh whose answers are all on the page
    refreshes: 0,
    sort: null, // { key, dir: "asc" | "desc" }, null: the API's order (most clicks first)
    ads: [],
    engaged: null, // each ad's row of /api/engagement, by its source_id; null until it answers
    primaryCurrency: null,
    chart: null,
    chartRange: null, // the daily chart's range, { since, until }
    funnel: null,
  };

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  /* ---- the URL: ?since=YYYY-MM-DD&until=YYYY-MM-DD[&app=APP_ID][&ad=SOURCE_ID] ---- */

  function readLocation() {
    const query = new URLSearchParams(window.location.search);
    return {
      since: query.get("since"),
      until: query.get("until"),
      ad: query.get("ad") || null,
      app: query.get("app") || null,
    };
  }

  function pageUrl(view) {
    const query = new URLSearchParams();
    if (view.since) query.set("since", view.since);
    if (view.until) query.set("until", view.until);
    if (view.app !== null && view.app !== undefined) query.set("app", view.app);
    if (view.ad !== null && view.ad !== undefined) query.set("ad", view.ad);
    const search = query.toString();
    return window.location.pathname + (search ? `?${search}` : "");
  }

  function navigate(view) {
    const url = pageUrl(view);
    if (url !== window.location.pathname + window.location.search) {
      window.history.pushState(null, "", url);
    }
    // Another ad, or all of them: from the top, where its figures, funnel and creatives are.
    if (state.view === null || state.view.ad !== (view.ad || null)) window.scrollTo(0, 0);
    show(readLocation());
    refresh();
  }

  /* ---- the API ---- */

  class ApiError extends Error {
    constructor(path, status, body) {
      const detail = body && (body.detail || body.error);
      super(detail ? String(detail) : `${path} answered ${status}`);
      this.status = status;
    }
  }

  // A question to the API: its path and its whole URL, which tells one question from another.
  function ask(path, params) {
    // From the origin, never from the page's address: one that carries user:password@ cannot be fetched from.
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    return { path, url: url.href };
  }

  async function api(question) {
    const response = await fetch(question.url, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) throw new ApiError(question.path, response.status, body);
    return body;
  }

  /* ---- formatting ---- */

  function isNumber(value) {
    return value !== null && value !== undefined && value !== "" && !Number.isNaN(Number(value));
  }

  function formatCount(value) {
    return isNumber(value) ? counts.format(Number(value)) : "–";
  }

  function formatRate(value) {
    return isNumber(value) ? rates.format(Number(value)) : "–";
  }

  // An amount (the exact decimal, as text) to its currency's own digits: cents for EUR, none for JPY.
  function formatMoney(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(Number(amount));
    } catch (error) {
      return `${amount} ${currency}`;
    }
  }

  function formatDay(day) {
    return dayLabel.format(new Date(Date.parse(day)));
  }

  function formatRange(since, until) {
    return since === until
      ? formatDay(since)
      : dayLabel.formatRange(new Date(Date.parse(since)), new Date(Date.parse(until)));
  }

  function formatMoment(value) {
    return value ? moment.format(new Date(value)) : "never";
  }

  // A duration as a person says it: 42 s, 10 min, 2.5 h, 3 days.
  function formatDuration(seconds) {
    if (!isNumber(seconds)) return "–";
    const s = Math.max(0, Number(seconds));
    if (Math.round(s) < 60) return `${Math.round(s)} s`;
    if (Math.round(s / 6) < 600) return `${durations.format(s / 60)} min`;
    if (Math.round(s / 360) < 480) return `${durations.format(s / 3600)} h`;
    return `${durations.format(s / 86400)} days`;
  }

  function formatShortMoment(value) {
    return value ? shortMoment.format(new Date(value)) : "–";
  }

  function formatAge(seconds) {
    const s = Math.max(0, Math.round(Number(seconds)));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} days`;
  }

  function plural(count, noun) {
    return `${counts.format(count)} ${count === 1 ? noun : `${noun}s`}`;
  }

  function daysOf(since, until) {
    return Math.round((Date.parse(until) - Date.parse(since)) / DAY_MS) + 1;
  }

  function utcToday() {
    return new Date().toISOString().slice(0, 10);
  }

  function utcDaysBefore(day, days) {
    return new Date(Date.parse(day) - days * DAY_MS).toISOString().slice(0, 10);
  }

  // The change of a figure against the previous period, as a percentage of the previous one.
  function change(current, before) {
    if (!isNumber(current) || !isNumber(before)) return { text: "", tone: "" };
    const now = Number(current);
    const then = Number(before);
    if (then === 0) return now === 0 ? { text: "no change", tone: "" } : { text: "new", tone: "up" };
    const ratio = (now - then) / then;
    if (ratio === 0) return { text: "no change", tone: "" };
    return ratio > 0
      ? { text: `▲ ${percent.format(ratio)}`, tone: "up" }
      : { text: `▼ ${percent.format(-ratio)}`, tone: "down" };
  }

  // A rate's change, in percentage points.
  function rateChange(current, before) {
    if (!isNumber(current) || !isNumber(before)) return { text: "", tone: "" };
    const difference = (Number(current) - Number(before)) * 100;
    if (difference === 0) return { text: "no change", tone: "" };
    return {
      text: `${difference > 0 ? "▲" : "▼"} ${points.format(difference)} pts`,
      tone: difference > 0 ? "up" : "down",
    };
  }

  function showChange(node, shown) {
    node.textContent = shown.text;
    node.classList.toggle("up", shown.tone === "up");
    node.classList.toggle("down", shown.tone === "down");
  }

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // Where a figure is still on its way: an ellipsis, muted, that assistive technology reads as "Loading".
  function placeholder() {
    return element("span", { class: "pending", role: "img", "aria-label": "Loading", title: "Loading…" }, PLACEHOLDER);
  }

  /* ---- the range picker ---- */

  function renderRange(summary, view) {
    const form = $("range");
    form.elements.since.value = summary.since;
    form.elements.until.value = summary.until;
    const today = utcToday();
    const days = daysOf(summary.since, summary.until);
    for (const preset of form.querySelectorAll(".preset")) {
      const active = summary.until === today && Number(preset.dataset.days) === days;
      preset.classList.toggle("active", active);
      preset.setAttribute("aria-pressed", String(active));
    }
    const csv = new URLSearchParams({ since: summary.since, until: summary.until, format: "csv" });
    if (view.app !== null) csv.set("app", view.app);
    $("download-csv").setAttribute("href", `/api/ads?${csv}`);
    $("download-csv").setAttribute("download", `ads-${summary.since}-${summary.until}.csv`);
    const previous = summary.previous;
    const before = daysOf(previous.since, previous.until);
    $("compared").textContent =
      `${formatRange(summary.since, summary.until)} (${plural(days, "day")}, UTC), ` +
      `compared with ${before === 1 ? "the day before" : `the ${plural(before, "day")} before`}: ` +
      `${formatRange(previous.since, previous.until)}.`;
    document.title = view.ad !== null ? `Ad ${view.ad} · Click-to-WhatsApp ads` : "Click-to-WhatsApp ads";
  }

  function setupRangePicker() {
    const form = $("range");
    form.addEventListener("submit", (event) => event.preventDefault());
    for (const preset of form.querySelectorAll(".preset")) {
      preset.addEventListener("click", () => {
        const until = utcToday();
        const since = utcDaysBefore(until, Number(preset.dataset.days) - 1);
        navigate({ ...readLocation(), since, until });
      });
    }
    for (const input of [form.elements.since, form.elements.until]) {
      input.addEventListener("change", () => {
        const since = form.elements.since.value;
        const until = form.elements.until.value;
        if (since && until) navigate({ ...readLocation(), since, until });
      });
    }
  }

  /* ---- the app picker: shown once there are two apps to choose from ---- */

  function appLabel(app) {
    return app.name ? app.name : `App ${app.app_id}`;
  }

  function renderApps(apps, view) {
    const picker = $("app");
    const known = apps.some((app) => app.app_id === view.app);
    $("app-picker").hidden = apps.length < 2 && !(view.app !== null && !known);
    const options = [element("option", { value: "" }, "All apps")];
    for (const app of apps) options.push(element("option", { value: app.app_id }, appLabel(app)));
    if (view.app !== null && !known) options.push(element("option", { value: view.app }, `App ${view.app}`));
    picker.replaceChildren(...options);
    picker.value = view.app === null ? "" : view.app;
  }

  function setupAppPicker() {
    $("app").addEventListener("change", (event) => {
      // Another app: its ads, from the list of them.
      navigate({ ...readLocation(), app: event.target.value || null, ad: null });
    });
  }

  function appName(view) {
    if (view.app === null) return null;
    const app = (state.apps || []).find((known) => known.app_id === view.app);
    return app ? appLabel(app) : `App ${view.app}`;
  }

  /* ---- headline figures ---- */

  function renderFigures(current, before) {
    for (const key of COUNTS) {
      const node = $(`figure-${key}`);
      node.textContent = formatCount(current ? current[key] : null);
      node.dataset.value = current && isNumber(current[key]) ? String(current[key]) : "";
      showChange($(`change-${key}`), change(current && current[key], before && before[key]));
    }
    const rate = $("figure-conversion_rate");
    const value = current ? current.conversion_rate : null;
    rate.textContent = formatRate(value);
    rate.dataset.value = isNumber(value) ? String(value) : "";
    showChange($("change-conversion_rate"), rateChange(value, before && before.conversion_rate));
    const converted = $("figure-people_converted");
    const count = current ? current.people_converted : null;
    const people = current ? current.people : null;
    const whom = Number(people) === 1 ? "person" : "people";
    converted.textContent =
      isNumber(count) && isNumber(people) ? `${formatCount(count)} of ${formatCount(people)} ${whom} converted` : "";
    converted.dataset.value = isNumber(count) ? String(count) : "";

    const list = $("figure-value");
    const values = (current && current.value) || {};
    const previous = (before && before.value) || {};
    const currencies = Object.keys(values).sort();
    list.replaceChildren(
      ...(currencies.length
        ? currencies.map((currency) => {
            const shown = change(values[currency], previous[currency]);
            return element(
              "li",
              { "data-testid": "value", "data-currency": currency, "data-value": values[currency] },
              element("span", { class: "amount" }, formatMoney(values[currency], currency)),
              element("span", { class: `change ${shown.tone}`.trim(), "data-testid": "change-value" }, shown.text),
            );
          })
        : [element("li", { class: "none", "data-testid": "value-none" }, current ? "0" : "–")]),
    );
  }

  // Who wrote again after a click: how many, against the period before, and which share of the people who clicked;
  // a placeholder while the engagement has not answered (pending).
  function renderWroteAgain(current, before, pending) {
    const node = $("headline-wrote-again");
    const share = $("headline-wrote-again-rate");
    node.closest(".card").setAttribute("aria-busy", String(pending));
    if (pending) {
      node.replaceChildren(placeholder());
      node.dataset.value = "";
      showChange($("change-wrote-again"), { text: "", tone: "" });
      share.textContent = "";
      share.dataset.value = "";
      return;
    }
    const count = current ? current.people_wrote_again : null;
    node.textContent = formatCount(count);
    node.dataset.value = isNumber(count) ? String(count) : "";
    showChange($("change-wrote-again"), change(count, before && before.people_wrote_again));
    const rate = current ? current.wrote_again_rate : null;
    const people = current ? current.people : null;
    share.textContent =
      isNumber(rate) && isNumber(people)
        ? `${formatRate(rate)} of ${formatCount(people)} ${Number(people) === 1 ? "person" : "people"}`
        : "";
    share.dataset.value = isNumber(rate) ? String(rate) : "";
  }

  function renderViewTitle(view, row) {
    const back = $("back");
    const title = $("view-title");
    const subtitle = $("view-subtitle");
    const app = appName(view);
    if (view.ad === null) {
      back.hidden = true;
      title.textContent = app === null ? "All ads" : `All ads of ${app}`;
      subtitle.textContent = "";
      return;
    }
    back.hidden = false;
    back.textContent = app === null ? "\u2190 All ads" : `\u2190 All ads of ${app}`;
    back.setAttribute("href", pageUrl({ ...view, ad: null }));
    // The ad by its headline, as a marketer knows it; its id and kind beside it.
    title.textContent = row && row.headline ? row.headline : `Ad ${view.ad}`;
    if (row) {
      subtitle.textContent = [`Ad ${view.ad}`, row.source_type, row.media_type].filter(Boolean).join(" · ");
    } else {
      const { since, until } = state.range;
      subtitle.textContent = `No clicks or conversions for this ad from ${formatRange(since, until)}.`;
    }
  }

  /* ---- the daily chart ---- */

  function integerSteps() {
    const steps = [];
    for (let power = 1; power <= 1e9; power *= 10) steps.push(power, 2 * power, 5 * power);
    return steps;
  }

  function chartOptions(width) {
    return {
      width,
      height: CHART_HEIGHT,
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      cursor: { drag: { x: false, y: false } },
      scales: {
        // The range's days, from its first to its last: a single day padded by half a day either side.
        x: {
          time: true,
          range: (plot, min, max) => {
            const first = state.chartRange ? Date.parse(state.chartRange.since) / 1000 : min;
            const last = state.chartRange ? Date.parse(state.chartRange.until) / 1000 : max;
            if (first === null || last === null) return [0, 86400];
            return first === last ? [first - 43200, last + 43200] : [first, last];
          },
        },
        y: { range: (plot, min, max) => [0, max > 0 ? Math.ceil(max * 1.1) : 1] },
      },
      axes: [
        {
          stroke: "#5f6b7a",
          grid: { stroke: "#eef1f5" },
          ticks: { stroke: "#e3e8ee" },
          space: 64,
          incrs: [1, 2, 7, 14, 28, 91, 182, 364].map((days) => (days * DAY_MS) / 1000),
          values: (plot, ticks) => ticks.map((tick) => tickDay.format(new Date(tick * 1000))),
        },
        {
          stroke: "#5f6b7a",
          grid: { stroke: "#eef1f5" },
          ticks: { stroke: "#e3e8ee" },
          incrs: integerSteps(),
          size: 56,
          values: (plot, ticks) => ticks.map((tick) => counts.format(tick)),
        },
      ],
      series: [
        { label: "Day", value: "{YYYY}-{MM}-{DD}" },
        ...SERIES.map((line) => ({
          label: line.label,
          stroke: line.color,
          fill: line.fill,
          width: 2,
          points: { size: 5, fill: line.color },
          value: (plot, value) => (value === null || value === undefined ? "–" : counts.format(value)),
        })),
      ],
      hooks: {
        // What the chart holds, once drawn, for whoever checks the page.
        draw: [
          (plot) => {
            const box = plot.root.parentElement;
            box.dataset.drawn = "true";
            box.dataset.days = String(plot.data[0].length);
            box.dataset.series = String(plot.series.length - 1);
          },
        ],
      },
    };
  }

  function renderChart(daily, range) {
    const box = $("chart-daily");
    state.chartRange = range;
    const rows = Array.isArray(daily) ? daily : [];
    const data = [
      rows.map((row) => Date.parse(row.day) / 1000),
      ...SERIES.map((line) => rows.map((row) => row[line.key])),
    ];
    if (state.chart === null) {
      state.chart = new uPlot(chartOptions(Math.max(box.clientWidth, 320)), data, box);
    } else {
      state.chart.setData(data);
    }
  }

  function resizeChart() {
    if (state.chart === null) return;
    const width = Math.max($("chart-daily").clientWidth, 320);
    if (width !== state.chart.width) state.chart.setSize({ width, height: CHART_HEIGHT });
  }

  /* ---- an ad's funnel ---- */

  function funnelOptions(width) {
    return {
      width,
      height: FUNNEL_HEIGHT,
      legend: { show: false },
      cursor: { show: false },
      select: { show: false },
      scales: {
        x: { time: false, range: [-0.5, FUNNEL.length - 0.5] },
        // Room above the tallest bar for its label.
        y: { range: (plot, min, max) => [0, max > 0 ? Math.ceil(max * 1.18) : 1] },
      },
      axes: [
        {
          stroke: "#5f6b7a",
          grid: { show: false },
          ticks: { show: false },
          size: 48,
          splits: () => FUNNEL.map((step, index) => index),
          values: (plot, splits) => splits.map((index) => (FUNNEL[index] ? FUNNEL[index].label : "")),
        },
        {
          stroke: "#5f6b7a",
          grid: { stroke: "#eef1f5" },
          ticks: { stroke: "#e3e8ee" },
          incrs: integerSteps(),
          size: 56,
          values: (plot, ticks) => ticks.map((tick) => counts.format(tick)),
        },
      ],
      series: [
        {},
        {
          label: "People",
          width: 0,
          fill: FUNNEL[0].color,
          points: { show: false },
          paths: uPlot.paths.bars({
            size: [0.62, 96],
            disp: { fill: { unit: 3, values: () => FUNNEL.map((step) => step.color) } },
          }),
        },
      ],
      hooks: {
        draw: [
          (plot) => {
            labelBars(plot);
            const box = plot.root.parentElement;
            box.dataset.drawn = "true";
            box.dataset.bars = String(plot.data[0].length);
            box.dataset.counts = JSON.stringify(plot.data[1]);
          },
        ],
      },
    };
  }

  // Each bar's count above it, as text over the plot (uPlot's overlay), placed where uPlot put the bar.
  function labelBars(plot) {
    let layer = plot.over.querySelector(".bar-labels");
    if (layer === null) {
      layer = element("div", { class: "bar-labels", "data-testid": "funnel-labels" });
      plot.over.append(layer);
    }
    // A step still on its way (null: the engagement has not answered) has no bar yet, and a placeholder for a label.
    const labels = plot.data[1].map((count, index) => {
      const pending = count === null;
      const label = element(
        "span",
        {
          class: pending ? "bar-label pending" : "bar-label",
          "data-testid": "funnel-label",
          "data-step": FUNNEL[index].label.replace("\n", " "),
          "data-value": pending ? "" : count,
          role: pending ? "img" : null,
          "aria-label": pending ? "Loading" : null,
          title: pending ? "Loading…" : null,
        },
        pending ? PLACEHOLDER : formatCount(count),
      );
      label.style.left = `${plot.valToPos(index, "x")}px`;
      label.style.top = `${plot.valToPos(pending ? 0 : count, "y")}px`;
      return label;
    });
    layer.replaceChildren(...labels);
  }

  // The ad's funnel from its row of the ads and of the engagement; the engagement's steps null while it has not
  // answered (pending): no bar, a placeholder over the axis.
  function renderFunnel(row, engaged, pending) {
    const box = $("funnel");
    box.setAttribute("aria-busy", String(pending));
    const sources = { ads: row, engagement: engaged };
    const data = [
      FUNNEL.map((step, index) => index),
      FUNNEL.map((step) => {
        if (pending && step.from === "engagement") return null;
        const value = sources[step.from] ? sources[step.from][step.key] : null;
        return isNumber(value) ? Number(value) : 0;
      }),
    ];
    const width = Math.max(box.clientWidth, 280);
    if (state.funnel === null) {
      state.funnel = new uPlot(funnelOptions(width), data, box);
    } else {
      if (width !== state.funnel.width) state.funnel.setSize({ width, height: FUNNEL_HEIGHT });
      state.funnel.setData(data);
    }
  }

  function resizeFunnel() {
    if (state.funnel === null || $("ad-panels").hidden) return;
    const width = Math.max($("funnel").clientWidth, 280);
    if (width !== state.funnel.width) state.funnel.setSize({ width, height: FUNNEL_HEIGHT });
  }

  /* ---- an ad's creatives ---- */

  function renderCreatives(creatives) {
    const rows = (Array.isArray(creatives) ? creatives : []).map((creative) => {
      const field = (tag, key, text, className) =>
        element(
          tag,
          {
            class: className,
            "data-testid": `creative-${key}`,
            "data-value": creative[key] === null || creative[key] === undefined ? "" : String(creative[key]),
          },
          text,
        );
      const links = LINKS.filter((link) => creative[link.key]).map((link) =>
        element(
          "li",
          {},
          element("span", { class: "link-kind" }, link.label),
          field("span", link.key, creative[link.key], "url"),
        ),
      );
      const kind = [];
      if (creative.source_type) kind.push(field("span", "source_type", creative.source_type));
      if (creative.source_type && creative.media_type) kind.push(" · ");
      if (creative.media_type) kind.push(field("span", "media_type", creative.media_type));
      return element(
        "tr",
        { "data-testid": "creative-row" },
        element(
          "td",
          { class: "creative" },
          field("div", "headline", creative.headline || "(no headline)", creative.headline ? "headline" : "missing"),
          creative.body ? field("div", "body", creative.body, "body") : null,
          links.length ? element("ul", { class: "links" }, ...links) : null,
        ),
        element("td", { class: "kind" }, ...(kind.length ? kind : ["–"])),
        field("td", "clicks", formatCount(creative.clicks), "num"),
        field("td", "people", formatCount(creative.people), "num"),
        field("td", "first_clicked_at", formatShortMoment(creative.first_clicked_at), "when"),
        field("td", "last_clicked_at", formatShortMoment(creative.last_clicked_at), "when"),
      );
    });
    $("creatives-rows").replaceChildren(...rows);
    $("creatives-empty").hidden = rows.length > 0;
  }

  /* ---- the ads table ---- */

  function sortValue(row, key) {
    if (ENGAGED_COLUMNS.has(key)) {
      const engaged = state.engaged === null ? null : state.engaged.get(row.source_id);
      if (!engaged) return null;
      // Got a reply: by the people whose reply was delivered, then by those whose reply was read.
      if (key === "replied") return [Number(engaged.people_replied), Number(engaged.people_reply_read)];
      return isNumber(engaged[key]) ? Number(engaged[key]) : null;
    }
    if (key === "value") {
      const amount = row.value && state.primaryCurrency ? row.value[state.primaryCurrency] : undefined;
      return isNumber(amount) ? Number(amount) : null;
    }
    if (key === "source_type") return [row.source_type, row.media_type].filter(Boolean).join(" ") || null;
    const value = row[key];
    if (value === null || value === undefined) return null;
    return TEXT_COLUMNS.has(key) ? String(value) : Number(value);
  }

  function sortedAds() {
    const rows = state.ads.map((row, index) => ({ row, index }));
    if (state.sort === null) return state.ads;
    const { key, dir } = state.sort;
    const sign = dir === "asc" ? 1 : -1;
    rows.sort((a, b) => {
      const x = sortValue(a.row, key);
      const y = sortValue(b.row, key);
      if (x === null || y === null) return x === y ? a.index - b.index : x === null ? 1 : -1; // empty last
      const order = compare(x, y);
      return order === 0 ? a.index - b.index : sign * order;
    });
    return rows.map((item) => item.row);
  }

  function compare(x, y) {
    if (typeof x === "string") return x.localeCompare(y, undefined, { numeric: true });
    if (Array.isArray(x)) {
      for (let index = 0; index < x.length; index += 1) {
        if (x[index] !== y[index]) return x[index] - y[index];
      }
      return 0;
    }
    return x - y;
  }

  function cell(key, value, text, className) {
    return element(
      "td",
      {
        class: className,
        "data-testid": `ad-${key}`,
        "data-value": value === null || value === undefined ? "" : String(value),
      },
      text,
    );
  }

  // The columns of what the ad's people did next: its row of /api/engagement, joined by ad id; placeholders while
  // the engagement has not answered.
  function engagedCells(engaged, pending) {
    if (pending) {
      return [...ENGAGED_COLUMNS].map((key) =>
        element(
          "td",
          {
            class: key === "replied" ? "num replied" : "num",
            "data-testid": `ad-${key}`,
            "data-value": "",
            "aria-busy": "true",
          },
          placeholder(),
        ),
      );
    }
    const wrote = cell(
      "wrote_again_rate",
      engaged ? engaged.wrote_again_rate : null,
      formatRate(engaged ? engaged.wrote_again_rate : null),
      "num",
    );
    if (engaged && isNumber(engaged.people)) {
      wrote.title = `${formatCount(engaged.people_wrote_again)} of ${formatCount(engaged.people)} people wrote again`;
    }
    const median = engaged ? engaged.median_seconds_to_first_reply : null;
    const replied = engaged
      ? {
          people: engaged.people,
          people_replied: engaged.people_replied,
          people_reply_read: engaged.people_reply_read,
        }
      : null;
    return [
      wrote,
      cell("median_seconds_to_first_reply", median, formatDuration(median), "num"),
      element(
        "td",
        { class: "num replied", "data-testid": "ad-replied", "data-value": replied ? JSON.stringify(replied) : "" },
        ...(replied
          ? [
              `${formatCount(replied.people_replied)} / ${formatCount(replied.people_reply_read)}`,
              element("span", { class: "of" }, `of ${formatCount(replied.people)}`),
            ]
          : ["–"]),
      ),
    ];
  }

  function renderAds(view) {
    const body = $("ads-rows");
    const rows = sortedAds().map((row) => {
      const hasId = row.source_id !== null && row.source_id !== undefined;
      const link = hasId
        ? element("a", { href: pageUrl({ ...view, ad: row.source_id }) }, row.source_id)
        : element("span", { class: "missing" }, "(no ad id)");
      const kind = [row.source_type, row.media_type].filter(Boolean).join(" · ");
      const value = row.value || {};
      const currencies = Object.keys(value).sort();
      const tr = element(
        "tr",
        {
          "data-testid": "ad-row",
          "data-source-id": hasId ? row.source_id : null,
          class: [hasId ? "" : "no-ad", hasId && row.source_id === view.ad ? "selected" : ""].join(" ").trim() || null,
        },
        element("td", { class: "ad", "data-testid": "ad-source_id", "data-value": hasId ? row.source_id : "" }, link),
        cell("headline", row.headline, row.headline || "–", row.headline ? "headline" : "headline missing"),
        cell("source_type", kind, kind || "–", "kind"),
        cell("clicks", row.clicks, formatCount(row.clicks), "num"),
        cell("people", row.people, formatCount(row.people), "num"),
        cell("new_people", row.new_people, formatCount(row.new_people), "num"),
        cell("conversations", row.conversations, formatCount(row.conversations), "num"),
        ...(state.engaged === null ? engagedCells(null, true) : engagedCells(state.engaged.get(row.source_id) || null)),
        cell("conversions", row.conversions, formatCount(row.conversions), "num"),
        cell("conversion_rate", row.conversion_rate, formatRate(row.conversion_rate), "num"),
        element(
          "td",
          { class: "num value", "data-testid": "ad-value", "data-value": JSON.stringify(value) },
          ...(currencies.length
            ? currencies.map((currency) => element("div", {}, formatMoney(value[currency], currency)))
            : ["–"]),
        ),
      );
      if (hasId) {
        tr.addEventListener("click", (event) => {
          if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return; // a new tab: the link's
          event.preventDefault();
          navigate({ ...view, ad: row.source_id });
        });
      }
      return tr;
    });
    body.replaceChildren(...rows);
    $("ads-empty").hidden = rows.length > 0;
    for (const header of document.querySelectorAll(".ads th")) {
      const key = header.querySelector("button").dataset.sort;
      const sorted = state.sort !== null && state.sort.key === key;
      header.setAttribute("aria-sort", sorted ? (state.sort.dir === "asc" ? "ascending" : "descending") : "none");
    }
  }

  function setupSorting() {
    for (const button of document.querySelectorAll(".ads th button")) {
      button.addEventListener("click", () => {
        const key = button.dataset.sort;
        if (state.sort !== null && state.sort.key === key) {
          state.sort = { key, dir: state.sort.dir === "asc" ? "desc" : "asc" };
        } else {
          state.sort = { key, dir: TEXT_COLUMNS.has(key) ? "asc" : "desc" };
        }
        state.drawn.delete("ads"); // redrawn, in the new order, if its answers are in
        draw();
      });
    }
  }

  /* ---- conversions to Meta ---- */

  function renderMeta(conversions) {
    const events = conversions.events || {};
    for (const status of STATUSES) {
      const node = $(`meta-${status}`);
      const count = events[status] || 0;
      node.textContent = formatCount(count);
      node.dataset.value = String(count);
      node.parentElement.classList.toggle("nonzero", count > 0);
    }
    const oldest = conversions.oldest_pending;
    $("meta-oldest-pending").textContent = oldest
      ? `${formatAge(oldest.age_s)} ago (${formatMoment(oldest.event_time)})`
      : "none";
    $("meta-oldest-pending").dataset.value = oldest ? String(oldest.age_s) : "";
    const parked = conversions.parked;
    $("meta-parked").hidden = !parked;
    $("meta-parked-reason").textContent = parked ? parked.reason || "" : "";
    $("meta-parked-since").textContent = parked
      ? [
          parked.code !== null && parked.code !== undefined ? `code ${parked.code}` : null,
          `since ${formatMoment(parked.at)}`,
        ]
          .filter(Boolean)
          .join(" · ")
      : "";
    $("meta-last-request").textContent = formatMoment(conversions.last_request_at);
    $("meta-last-success").textContent = formatMoment(conversions.last_success_at);
    // Per app: each whose own Meta setup is parked, and the events no setup takes yet.
    const apps = conversions.parked_apps || [];
    $("meta-parked-apps").hidden = apps.length === 0;
    $("meta-parked-apps-list").replaceChildren(
      ...apps.map((app) =>
        element(
          "li",
          { "data-testid": "meta-parked-app", "data-app-id": app.app_id },
          element("span", { class: "app-name" }, app.name || `App ${app.app_id}`),
          `: ${app.reason || ""}`,
          app.code !== null && app.code !== undefined ? ` (code ${app.code})` : "",
        ),
      ),
    );
    const unconfigured = events.unconfigured || 0;
    $("meta-unconfigured").textContent = formatCount(unconfigured);
    $("meta-unconfigured").dataset.value = String(unconfigured);
    $("meta-unconfigured-line").hidden = unconfigured === 0;
  }

  /* ---- freshness ---- */

  function renderFreshness(freshness) {
    const node = $("freshness");
    const age = freshness.age_s;
    if (!isNumber(age)) {
      node.textContent = "No callback stored yet";
      node.dataset.ageS = "";
    } else {
      node.textContent = `Newest callback stored ${formatAge(age)} ago`;
      node.dataset.ageS = String(age);
      node.title = `stored at ${formatMoment(freshness.newest_stored_at)}`;
    }
    node.classList.toggle("live", isNumber(age) && Number(age) < 60);
    node.classList.toggle("stale", isNumber(age) && Number(age) >= 60);
  }

  /* ---- what the page asks: each question again at every refresh, never while it is still in flight ---- */

  function explicit(view) {
    return Boolean(view.since && view.until);
  }

  // What the view on show asks, by question. Without a full range in the URL, the API's default range: asked of the
  // summary first, then of the others. An ad's figures are set against its rows of the ads and of the engagement of
  // the period before, which the summary names.
  function wanted() {
    const view = state.view;
    const questions = {
      summary: ask("/api/summary", { since: view.since, until: view.until, app: view.app }),
      conversions: ask("/api/conversions"),
      freshness: ask("/api/freshness"),
      apps: ask("/api/apps"),
    };
    if (state.range === null) return questions;
    // The app's clicks alone, when one is chosen (the summary's previous period carries it too).
    const range = { ...state.range, app: view.app };
    questions.ads = ask("/api/ads", range);
    questions.daily = ask("/api/daily", view.ad === null ? range : { ...range, source_id: view.ad });
    questions.engagement = ask("/api/engagement", range);
    if (view.ad !== null) {
      questions.creatives = ask("/api/creatives", { ...range, source_id: view.ad });
      const summary = answer("summary", questions);
      if (summary !== undefined) {
        questions.adsBefore = ask("/api/ads", summary.previous);
        questions.engagementBefore = ask("/api/engagement", summary.previous);
      }
    }
    return questions;
  }

  function slot(name) {
    if (!state.slots.has(name)) {
      state.slots.set(name, { asking: null, url: null, body: undefined, tick: 0, failed: null, error: null });
    }
    return state.slots.get(name);
  }

  // The answer to a question as it is asked now; undefined until it has come (an older question's does not count).
  function answer(name, questions) {
    const question = questions[name];
    const held = state.slots.get(name);
    return question !== undefined && held !== undefined && held.url === question.url ? held.body : undefined;
  }

  // Asks what the view needs: every question (a refresh), or those not answered yet. Never one still in flight:
  // its next fetch waits for that answer, and goes at once if the view has changed meanwhile.
  function pull(again) {
    const questions = wanted();
    for (const [name, question] of Object.entries(questions)) {
      const held = slot(name);
      if (held.asking !== null) continue;
      // A question that failed is asked again at the next refresh.
      if (!again && (held.url === question.url || held.failed === question.url)) continue;
      fetchInto(name, held, question);
    }
  }

  async function fetchInto(name, held, question) {
    const tick = state.ticks;
    held.asking = question.url;
    let body;
    let error = null;
    try {
      body = await api(question);
    } catch (caught) {
      error = caught;
    }
    held.asking = null;
    const now = wanted()[name];
    // The answer to a question no longer asked (another range, another ad) is dropped.
    if (now !== undefined && now.url === question.url) {
      if (error === null) {
        Object.assign(held, { url: question.url, body, tick, failed: null, error: null });
        if (name === "summary" && !explicit(state.view)) state.range = { since: body.since, until: body.until };
      } else {
        Object.assign(held, { failed: question.url, error });
      }
      draw();
    }
    pull(false);
  }

  /* ---- the parts of the page, each drawn as soon as the answers it needs are in ---- */

  // Each part: the questions it needs (until they answer it is dimmed, still showing what it showed), those of the
  // engagement it shows placeholders for until they answer (waits), the elements it is drawn in, and how.
  function partsOf(view) {
    const all = view.ad === null;
    const ad = (rows) => (Array.isArray(rows) ? rows : []).find((row) => row.source_id === view.ad) || null;
    const engagedRow = (engagement) => ad(engagement && engagement.ads);
    const panel = (testid) => $(testid).closest(".panel");
    const parts = [
      {
        name: "range",
        needs: ["summary"],
        boxes: [$("compared")],
        draw: (got) => renderRange(got.summary, view),
      },
      {
        name: "apps",
        needs: ["apps"],
        boxes: [],
        draw: (got) => {
          state.apps = Array.isArray(got.apps) ? got.apps : [];
          renderApps(state.apps, view);
        },
      },
      {
        name: "title",
        needs: all ? ["apps"] : ["ads", "apps"],
        boxes: [$("view-title")],
        draw: (got) => renderViewTitle(view, all ? null : ad(got.ads)),
      },
      {
        name: "figures",
        needs: all ? ["summary"] : ["ads", "adsBefore"],
        boxes: [...document.querySelectorAll(".figures .card:not([data-figure='wrote_again'])")],
        draw: (got) =>
          all
            ? renderFigures(got.summary.current, got.summary.before)
            : renderFigures(ad(got.ads), ad(got.adsBefore)),
      },
      {
        name: "wrote-again",
        needs: [],
        waits: all ? ["engagement"] : ["engagement", "engagementBefore"],
        boxes: [],
        draw: (got, pending) => {
          if (pending) renderWroteAgain(null, null, true);
          else if (all) renderWroteAgain(got.engagement.total, got.engagement.before, false);
          else renderWroteAgain(engagedRow(got.engagement), engagedRow(got.engagementBefore), false);
        },
      },
      {
        name: "chart",
        needs: ["daily"],
        boxes: [panel("chart-daily")],
        draw: (got) => renderChart(got.daily, state.range),
      },
      {
        name: "ads",
        needs: ["ads"],
        waits: ["engagement"],
        boxes: [panel("ads-table")],
        draw: (got, pending) => {
          state.ads = Array.isArray(got.ads) ? got.ads : [];
          state.engaged = pending ? null : new Map((got.engagement.ads || []).map((row) => [row.source_id, row]));
          // Sorted by value: by the amounts in the first of the table's currencies.
          const currencies = new Set(state.ads.flatMap((row) => Object.keys(row.value || {})));
          state.primaryCurrency = [...currencies].sort()[0] || null;
          renderAds(view);
        },
      },
      {
        name: "meta",
        needs: ["conversions"],
        boxes: [$("meta")],
        draw: (got) => renderMeta(got.conversions),
      },
      {
        name: "freshness",
        needs: ["freshness"],
        boxes: [$("freshness")],
        draw: (got) => renderFreshness(got.freshness),
      },
    ];
    if (!all) {
      parts.push(
        {
          name: "funnel",
          needs: ["ads"],
          waits: ["engagement"],
          boxes: [panel("funnel")],
          draw: (got, pending) => renderFunnel(ad(got.ads), pending ? null : engagedRow(got.engagement), pending),
        },
        {
          name: "creatives",
          needs: ["creatives"],
          boxes: [panel("creatives")],
          draw: (got) => renderCreatives(got.creatives),
        },
      );
    }
    return parts;
  }

  // Draws every part whose answers are in and not drawn yet (for this view), dims those still waiting, then says
  // what is drawn.
  function draw() {
    const view = state.view;
    const questions = wanted();
    const got = {};
    for (const name of Object.keys(questions)) got[name] = answer(name, questions);
    const has = (name) => got[name] !== undefined;
    $("ad-panels").hidden = view.ad === null; // shown before the funnel is drawn: uPlot sizes it from its box
    let ready = true;
    let engaged = true;
    for (const part of partsOf(view)) {
      const waits = part.waits || [];
      const partReady = part.needs.every(has);
      const pending = !waits.every(has);
      for (const box of part.boxes) {
        box.classList.toggle("waiting", !partReady);
        box.setAttribute("aria-busy", String(!partReady || pending));
      }
      ready = ready && partReady;
      engaged = engaged && partReady && !pending;
      if (!partReady) continue;
      const from = [state.generation, ...[...part.needs, ...waits].map((name) => got[name])];
      const last = state.drawn.get(part.name);
      if (last && last.length === from.length && last.every((input, index) => input === from[index])) continue;
      part.draw(got, pending);
      state.drawn.set(part.name, from);
    }
    const failed = Object.keys(questions).filter((name) => {
      const held = state.slots.get(name);
      return held !== undefined && held.failed === questions[name].url;
    });
    state.status = { view, range: state.range, questions, ready, engaged, failed };
    // uPlot draws in a microtask of its own, queued by setData (the daily chart's, and the funnel's in an ad's
    // view): after them, the page says what is drawn.
    Promise.resolve().then(mark);
  }

  // On <html>: data-state "drawn" once every part but the engagement's placeholders is drawn for the view,
  // data-engagement "drawn" once those are too; each "loading" before, "error" while a question of theirs fails.
  function mark() {
    const { view, range, questions, ready, engaged, failed } = state.status;
    const root = document.documentElement.dataset;
    const slow = failed.filter((name) => ENGAGEMENT.has(name));
    const fast = failed.filter((name) => !ENGAGEMENT.has(name));
    showError(failed.length ? state.slots.get(fast.length ? fast[0] : slow[0]).error : null, view, fast.length > 0);
    root.state = fast.length ? "error" : ready ? "drawn" : "loading";
    root.engagement = slow.length ? "error" : engaged ? "drawn" : "loading";
    if (root.state !== "drawn") return;
    root.range = `${range.since}..${range.until}`;
    root.ad = view.ad === null ? "" : view.ad;
    // One more refresh on the page once all its answers but the engagement's, asked at it or later, are.
    const oldest = Math.min(
      ...Object.keys(questions)
        .filter((name) => !ENGAGEMENT.has(name))
        .map((name) => state.slots.get(name).tick),
    );
    if (oldest > state.counted) {
      state.counted = oldest;
      state.refreshes += 1;
      root.refreshes = String(state.refreshes);
    }
  }

  function showError(error, view, stale) {
    const node = $("error");
    // What is on the page is dimmed when a question but the engagement's fails, being an older answer's.
    document.querySelector("main").classList.toggle("stale", stale);
    if (error === null) {
      node.hidden = true;
      return;
    }
    // The range asked for stays in the picker.
    const form = $("range");
    if (view.since) form.elements.since.value = view.since;
    if (view.until) form.elements.until.value = view.until;
    node.hidden = false;
    node.textContent =
      error instanceof ApiError
        ? `The dashboard could not answer: ${error.message}`
        : "The dashboard cannot be reached; retrying…";
  }

  // A new view (the URL changed): its range, and every part drawn again for it.
  function show(view) {
    state.view = view;
    state.generation += 1;
    state.range = null;
    if (explicit(view)) {
      state.range = { since: view.since, until: view.until };
    } else {
      // The API's default range, if its summary is in already.
      const question = ask("/api/summary", { since: view.since, until: view.until, app: view.app });
      const summary = answer("summary", { summary: question });
      if (summary !== undefined) state.range = { since: summary.since, until: summary.until };
    }
    document.documentElement.dataset.state = "loading";
    document.documentElement.dataset.engagement = "loading";
  }

  // A refresh: every question asked again (but those still in flight), and again in REFRESH_MS.
  function refresh() {
    window.clearTimeout(state.timer);
    state.ticks += 1;
    pull(true);
    draw();
    state.timer = window.setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    setupRangePicker();
    setupAppPicker();
    setupSorting();
    $("back").addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      const view = readLocation();
      navigate({ ...view, ad: null });
    });
    window.addEventListener("popstate", () => {
      show(readLocation());
      refresh();
    });
    window.addEventListener("resize", () => {
      resizeChart();
      resizeFunnel();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") refresh();
    });
    // For whoever checks the page: the charts as uPlot holds them, and a way to refresh now.
    window.dashboard = Object.freeze({
      get chart() {
        return state.chart;
      },
      get funnel() {
        return state.funnel;
      },
      refresh,
    });
    show(readLocation());
    refresh();
  }

  start();
})();
