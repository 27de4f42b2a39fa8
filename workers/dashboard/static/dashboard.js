/* The dashboard page: fetches the JSON API (docs/dashboard.md) and lays out what it answers. Every figure is the
   API's; this script only formats numbers, dates, durations and changes against the previous period, joins the
   ads' engagement to their rows by ad id, sorts the table and draws the daily chart and an ad's funnel with uPlot.
   The range and the ad on view live in the URL, so a link can be shared; the page fetches everything again every
   few seconds and redraws it, keeping the sort and the view. */
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
  const ENGAGED_COLUMNS = new Set(["wrote_again_rate", "median_seconds_to_first_reply", "replies"]);
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

  const state = {
    runs: 0, // the newest refresh started; an older one's answers are dropped
    timer: 0,
    refreshes: 0,
    sort: null, // { key, dir: "asc" | "desc" }, null: the API's order (most clicks first)
    ads: [],
    engaged: new Map(), // each ad's row of /api/engagement, by its source_id
    view: null,
    primaryCurrency: null,
    chart: null,
    funnel: null,
    range: null, // the range on view, { since, until }, as the API answered it
  };

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  /* ---- the URL: ?since=YYYY-MM-DD&until=YYYY-MM-DD[&ad=SOURCE_ID] ---- */

  function readLocation() {
    const query = new URLSearchParams(window.location.search);
    return { since: query.get("since"), until: query.get("until"), ad: query.get("ad") || null };
  }

  function pageUrl(view) {
    const query = new URLSearchParams();
    if (view.since) query.set("since", view.since);
    if (view.until) query.set("until", view.until);
    if (view.ad !== null && view.ad !== undefined) query.set("ad", view.ad);
    const search = query.toString();
    return window.location.pathname + (search ? `?${search}` : "");
  }

  function navigate(view) {
    document.documentElement.dataset.state = "loading";
    const url = pageUrl(view);
    if (url !== window.location.pathname + window.location.search) {
      window.history.pushState(null, "", url);
    }
    // Another ad, or all of them: from the top, where its figures, funnel and creatives are.
    if (state.view === null || state.view.ad !== (view.ad || null)) window.scrollTo(0, 0);
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

  async function api(path, params) {
    // From the origin, never from the page's address: one that carries user:password@ cannot be fetched from.
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) throw new ApiError(path, response.status, body);
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

  function formatMoney(amount, currency) {
    const decimals = (String(amount).split(".")[1] || "").length;
    try {
      return new Intl.NumberFormat(undefined, {
        style: "currency",
        currency,
        minimumFractionDigits: decimals,
        maximumFractionDigits: decimals,
      }).format(Number(amount));
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
        navigate({ since, until, ad: readLocation().ad });
      });
    }
    for (const input of [form.elements.since, form.elements.until]) {
      input.addEventListener("change", () => {
        const since = form.elements.since.value;
        const until = form.elements.until.value;
        if (since && until) navigate({ since, until, ad: readLocation().ad });
      });
    }
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

  // Who wrote again after a click: how many, against the period before, and which share of the people who clicked.
  function renderWroteAgain(current, before) {
    const node = $("headline-wrote-again");
    const count = current ? current.people_wrote_again : null;
    node.textContent = formatCount(count);
    node.dataset.value = isNumber(count) ? String(count) : "";
    showChange($("change-wrote-again"), change(count, before && before.people_wrote_again));
    const share = $("headline-wrote-again-rate");
    const rate = current ? current.wrote_again_rate : null;
    const people = current ? current.people : null;
    share.textContent =
      isNumber(rate) && isNumber(people)
        ? `${formatRate(rate)} of ${formatCount(people)} ${Number(people) === 1 ? "person" : "people"}`
        : "";
    share.dataset.value = isNumber(rate) ? String(rate) : "";
  }

  function renderViewTitle(view, row, summary) {
    const back = $("back");
    const title = $("view-title");
    const subtitle = $("view-subtitle");
    if (view.ad === null) {
      back.hidden = true;
      title.textContent = "All ads";
      subtitle.textContent = "";
      return;
    }
    back.hidden = false;
    back.setAttribute("href", pageUrl({ since: view.since, until: view.until, ad: null }));
    // The ad by its headline, as a marketer knows it; its id and kind beside it.
    title.textContent = row && row.headline ? row.headline : `Ad ${view.ad}`;
    if (row) {
      subtitle.textContent = [`Ad ${view.ad}`, row.source_type, row.media_type].filter(Boolean).join(" · ");
    } else {
      subtitle.textContent = `No clicks or conversions for this ad from ${formatRange(summary.since, summary.until)}.`;
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
            const first = state.range ? Date.parse(state.range.since) / 1000 : min;
            const last = state.range ? Date.parse(state.range.until) / 1000 : max;
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

  function renderChart(daily) {
    const box = $("chart-daily");
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
    const labels = plot.data[1].map((count, index) => {
      const label = element(
        "span",
        {
          class: "bar-label",
          "data-testid": "funnel-label",
          "data-step": FUNNEL[index].label.replace("\n", " "),
          "data-value": count,
        },
        formatCount(count),
      );
      label.style.left = `${plot.valToPos(index, "x")}px`;
      label.style.top = `${plot.valToPos(count, "y")}px`;
      return label;
    });
    layer.replaceChildren(...labels);
  }

  function renderFunnel(row, engaged) {
    const box = $("funnel");
    const sources = { ads: row, engagement: engaged };
    const data = [
      FUNNEL.map((step, index) => index),
      FUNNEL.map((step) => {
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
      const engaged = state.engaged.get(row.source_id);
      if (!engaged) return null;
      // Replies: by those delivered, then by those read.
      if (key === "replies") return [Number(engaged.replies_delivered), Number(engaged.replies_read)];
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

  // The columns of what the ad's people did next: its row of /api/engagement, joined by ad id.
  function engagedCells(engaged) {
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
    const replies = engaged
      ? {
          replies: engaged.replies,
          replies_delivered: engaged.replies_delivered,
          replies_read: engaged.replies_read,
        }
      : null;
    return [
      wrote,
      cell("median_seconds_to_first_reply", median, formatDuration(median), "num"),
      element(
        "td",
        { class: "num replies", "data-testid": "ad-replies", "data-value": replies ? JSON.stringify(replies) : "" },
        ...(replies
          ? [
              `${formatCount(replies.replies_delivered)} / ${formatCount(replies.replies_read)}`,
              element("span", { class: "of" }, `of ${formatCount(replies.replies)}`),
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
        ? element("a", { href: pageUrl({ since: view.since, until: view.until, ad: row.source_id }) }, row.source_id)
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
        ...engagedCells(state.engaged.get(row.source_id) || null),
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
          navigate({ since: view.since, until: view.until, ad: row.source_id });
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
        if (state.view !== null) renderAds(state.view);
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

  /* ---- one refresh: every endpoint, then every part of the page ---- */

  function showError(error, view) {
    // The range asked for stays in the picker; what is on the page is dimmed, being an older answer's.
    const form = $("range");
    if (view.since) form.elements.since.value = view.since;
    if (view.until) form.elements.until.value = view.until;
    document.querySelector("main").classList.add("stale");
    const node = $("error");
    node.hidden = false;
    node.textContent =
      error instanceof ApiError
        ? `The dashboard could not answer: ${error.message}`
        : "The dashboard cannot be reached; retrying…";
    document.documentElement.dataset.state = "error";
  }

  async function refresh() {
    const run = ++state.runs;
    window.clearTimeout(state.timer);
    const view = readLocation();
    const current = () => run === state.runs;
    try {
      let range = { since: view.since, until: view.until };
      const explicit = Boolean(range.since && range.until);
      // Without a full range in the URL, the API's default range: asked of the summary first, then used by all.
      const first = explicit ? null : await api("/api/summary", range);
      if (first) range = { since: first.since, until: first.until };
      const [summary, ads, daily, engagement, creatives, conversions, freshness] = await Promise.all([
        first || api("/api/summary", range),
        api("/api/ads", range),
        api("/api/daily", view.ad === null ? range : { ...range, source_id: view.ad }),
        api("/api/engagement", range),
        view.ad === null ? null : api("/api/creatives", { ...range, source_id: view.ad }),
        api("/api/conversions"),
        api("/api/freshness"),
      ]);
      // An ad's figures against its own previous period: its rows of the ads and engagement of the period before.
      const [adsBefore, engagementBefore] =
        view.ad === null
          ? [null, null]
          : await Promise.all([api("/api/ads", summary.previous), api("/api/engagement", summary.previous)]);
      if (!current()) return;

      state.view = view;
      state.ads = Array.isArray(ads) ? ads : [];
      state.engaged = new Map(((engagement && engagement.ads) || []).map((row) => [row.source_id, row]));
      state.primaryCurrency = Object.keys((summary.current && summary.current.value) || {}).sort()[0] || null;
      $("error").hidden = true;
      document.querySelector("main").classList.remove("stale");
      renderRange(summary, view);
      const panels = $("ad-panels");
      if (view.ad === null) {
        renderViewTitle(view, null, summary);
        renderFigures(summary.current, summary.before);
        renderWroteAgain(engagement.total, engagement.before);
        panels.hidden = true;
      } else {
        const row = state.ads.find((ad) => ad.source_id === view.ad) || null;
        const rowBefore = (adsBefore || []).find((ad) => ad.source_id === view.ad) || null;
        const engaged = state.engaged.get(view.ad) || null;
        const engagedBefore = ((engagementBefore && engagementBefore.ads) || []).find((ad) => ad.source_id === view.ad);
        renderViewTitle(view, row, summary);
        renderFigures(row, rowBefore);
        renderWroteAgain(engaged, engagedBefore || null);
        panels.hidden = false; // shown before the funnel is drawn: uPlot sizes it from its box
        renderFunnel(row, engaged);
        renderCreatives(creatives);
      }
      state.range = { since: summary.since, until: summary.until };
      renderChart(daily);
      renderAds(view);
      renderMeta(conversions);
      renderFreshness(freshness);
      // uPlot draws in a microtask of its own, queued by setData (the daily chart's, and the funnel's in an ad's
      // view): after them, the page is drawn.
      await Promise.resolve();
      if (!current()) return;
      state.refreshes += 1;
      document.documentElement.dataset.state = "drawn";
      document.documentElement.dataset.range = `${summary.since}..${summary.until}`;
      document.documentElement.dataset.ad = view.ad === null ? "" : view.ad;
      document.documentElement.dataset.refreshes = String(state.refreshes);
    } catch (error) {
      if (!current()) return;
      showError(error, view);
    } finally {
      if (current()) state.timer = window.setTimeout(refresh, REFRESH_MS);
    }
  }

  function start() {
    setupRangePicker();
    setupSorting();
    $("back").addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      const view = readLocation();
      navigate({ since: view.since, until: view.until, ad: null });
    });
    window.addEventListener("popstate", () => {
      document.documentElement.dataset.state = "loading";
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
    refresh();
  }

  start();
})();
