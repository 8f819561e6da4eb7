// capguard's dashboard: draws the figures embedded in #capguard-figures with Chart.js (embedded above).
// Names from the ledger reach Chart.js only as data: it draws them on canvases, never as HTML.
(function () {
  "use strict";
  const F = JSON.parse(document.getElementById("capguard-figures").textContent);
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac"];
  const KINDS = { input: "input", output: "output", cache_read: "cache read", cache_write: "cache write" };
  const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 });
  const fine = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 4 });
  const count = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });
  const usd = (v) => (v !== 0 && Math.abs(v) < 0.01 ? fine : money).format(v);
  const color = (i) => PALETTE[i % PALETTE.length];
  // One colour per cap in every chart, so that "usd" reads the same in the caps chart and in the top runs.
  const CAP_COLOURS = { usd: "#e15759", tokens: "#f28e2b", wall: "#76b7b2", steps: "#b07aa1", map_tokens: "#9c755f",
    stuck: "#59a14f", monthly: "#edc948", unpriced: "#ff9da7", meter_error: "#4e79a7" };
  const capColour = (reason, i) => CAP_COLOURS[reason] || color(i);
  const short = (text) => (text.length > 28 ? text.slice(0, 27) + "…" : text);

  Chart.defaults.animation = false; // drawn once, at load: a screenshot or a test sees the final chart
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  const sum = (values) => values.reduce((a, b) => a + (b || 0), 0);

  function draw(id, config, marks) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    const chart = new Chart(canvas, config);
    // What the chart holds, for a reader's script and the browser test: the sum of every value drawn.
    canvas.dataset.total = String(+sum(chart.data.datasets.map((d) => sum(d.data.map((p) => p && p.y !== undefined ? p.y : p)))).toFixed(6));
    if (marks) canvas.dataset.marks = JSON.stringify(marks);
    canvas.dataset.rendered = String(chart.chartArea.width > 0 && chart.chartArea.height > 0);
  }

  function stacked(series, key, label) {
    return series.map((s, i) => ({ label: short(s.name), data: s[key], backgroundColor: color(i), stack: label }));
  }

  function spend(id, series) {
    draw(id, {
      type: "bar",
      data: { labels: F.days, datasets: stacked(series, "usd", "spend") },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, ticks: { callback: (v) => usd(v) } } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${usd(c.parsed.y)}` } } },
      },
    });
  }

  function costPerRun() {
    const d = F.cost_per_run;
    const mark = (name, value, colour) => ({
      type: "line", xMin: value, xMax: value, borderColor: colour, borderWidth: 2, borderDash: [6, 4],
      label: { display: true, content: `${name} ${usd(value)}`, position: "end", backgroundColor: colour },
    });
    const annotations = {};
    [["p50", "#59a14f"], ["p90", "#f28e2b"], ["p99", "#e15759"]].forEach(([name, colour], i) => {
      if (d[name] !== null) {
        annotations[name] = mark(name, d[name], colour);
        annotations[name].label.yAdjust = i * 24; // three labels, not one on another
      }
    });
    draw("cost-per-run", {
      type: "bar",
      data: {
        datasets: [{
          label: "runs", backgroundColor: "#4e79a7", barPercentage: 1, categoryPercentage: 1, grouped: false,
          data: d.bins.map((b) => ({ x: (b.from + b.to) / 2, y: b.runs })),
        }],
      },
      options: {
        scales: {
          x: { type: "linear", min: 0, max: d.bins.length * d.width, offset: false,
            title: { display: true, text: "cost of one run (USD)" }, ticks: { callback: (v) => usd(v) } },
          y: { title: { display: true, text: "runs" }, ticks: { precision: 0 } },
        },
        plugins: {
          legend: { display: false },
          annotation: { annotations },
          tooltip: {
            callbacks: {
              title: (items) => { const b = d.bins[items[0].dataIndex]; return `${usd(b.from)} – ${usd(b.to)}`; },
              label: (c) => `${c.parsed.y} runs`,
            },
          },
        },
      },
    }, { p50: d.p50, p90: d.p90, p99: d.p99 });
  }

  function exhaustion() {
    const e = F.exhaustion;
    const rate = (stopped) => stopped.map((n, i) => (e.supervised[i] ? n / e.supervised[i] : 0));
    draw("caps-fired", {
      type: "bar",
      data: {
        labels: F.days,
        datasets: e.reasons.map((r, i) => ({
          label: r.name, data: rate(r.stopped), stopped: r.stopped, backgroundColor: capColour(r.name, i), stack: "stops",
        })),
      },
      options: {
        scales: {
          x: { stacked: true },
          y: { stacked: true, min: 0, suggestedMax: 0.25, ticks: { format: { style: "percent" } },
            title: { display: true, text: "share of supervised runs stopped" } },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: (c) => `${c.dataset.label}: ${c.dataset.stopped[c.dataIndex]} of ${e.supervised[c.dataIndex]} runs (${Math.round(c.parsed.y * 100)}%)`,
            },
          },
        },
      },
    });
    document.getElementById("caps-fired").dataset.stopped = String(sum(e.reasons.map((r) => sum(r.stopped))));
  }

  function tokens() {
    const rows = F.tokens_by_model;
    draw("tokens-by-model", {
      type: "bar",
      data: {
        labels: rows.map((r) => short(r.model)),
        datasets: Object.keys(KINDS).map((kind, i) => ({
          label: KINDS[kind], data: rows.map((r) => r[kind]), backgroundColor: color(i), stack: "tokens",
        })),
      },
      options: {
        indexAxis: "y",
        scales: { x: { stacked: true, ticks: { callback: (v) => count.format(v) } }, y: { stacked: true } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${count.format(c.parsed.x)} tokens` } } },
      },
    });
  }

  function topRuns() {
    const rows = F.top_runs;
    const reasons = [...new Set(rows.map((r) => r.stop_reason || "exited"))];
    draw("top-runs", {
      type: "bar",
      data: {
        labels: rows.map((r) => short(`${r.user} · …${r.run_id.slice(-6)}`)), // an id's start is its time
        datasets: reasons.map((reason, i) => ({
          label: reason === "exited" ? "ended by itself" : `stopped: ${reason}`,
          data: rows.map((r) => ((r.stop_reason || "exited") === reason ? r.cost_usd : null)),
          backgroundColor: reason === "exited" ? "#bab0ac" : capColour(reason, i), stack: "cost",
        })),
      },
      options: {
        indexAxis: "y",
        scales: { x: { stacked: true, ticks: { callback: (v) => usd(v) } }, y: { stacked: true } },
        plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${usd(c.parsed.x)}` } } },
      },
    });
  }

  function month() {
    const m = F.month;
    if (!m) return;
    const bar = (b) => b.spent_usd / b.limit_usd;
    draw("month", {
      type: "bar",
      data: {
        labels: m.budgets.map((b) => short(b.scope === "line" ? `line ${b.name}` : b.name)),
        datasets: [{
          label: "spent of the monthly limit",
          data: m.budgets.map(bar),
          backgroundColor: m.budgets.map((b) => ({ ok: "#59a14f", warn: "#edc948", over: "#e15759" })[b.state]),
        }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { min: 0, suggestedMax: 1.1, ticks: { format: { style: "percent" } } } },
        plugins: {
          legend: { display: false },
          annotation: {
            annotations: {
              limit: { type: "line", xMin: 1, xMax: 1, borderColor: "#e15759", borderWidth: 2 },
              warn: { type: "line", xMin: m.budgets[0].warn_at, xMax: m.budgets[0].warn_at, borderColor: "#edc948",
                borderWidth: 2, borderDash: [6, 4] },
            },
          },
          tooltip: { callbacks: { label: (c) => m.budgets[c.dataIndex].summary } },
        },
      },
    });
    document.getElementById("month").dataset.spent = String(+sum(m.budgets.map((b) => b.spent_usd)).toFixed(6));
  }

  spend("spend-by-user", F.spend_by_user);
  spend("spend-by-line", F.spend_by_line);
  costPerRun();
  exhaustion();
  tokens();
  topRuns();
  month();
  document.body.dataset.charts = String(document.querySelectorAll("canvas[data-rendered=true]").length);
})();
