// Lianjie console: draws every <canvas data-chart> with the bundled Chart.js and keeps charts
// and figures live by polling their JSON source. No framework, nothing fetched from elsewhere.
(function () {
  "use strict";
  var COLOURS = ["#c0392b", "#2e86de", "#27ae60", "#8e44ad", "#f39c12", "#16a085"];
  var charts = {};

  function config(kind, data) {
    var horizontal = kind === "hbar";
    var type = horizontal ? "bar" : kind;
    data.datasets.forEach(function (d, i) {
      d.backgroundColor = COLOURS[i % COLOURS.length] + (type === "line" ? "33" : "cc");
      d.borderColor = COLOURS[i % COLOURS.length];
      d.borderWidth = type === "line" ? 1.5 : 0;
      d.pointRadius = 0;
      d.fill = type === "line";
    });
    return {
      type: type,
      data: data,
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        indexAxis: horizontal ? "y" : "x",
        plugins: { legend: { display: data.datasets.length > 1 } },
        scales: { x: { ticks: { autoSkip: true, maxTicksLimit: horizontal ? 6 : 12 } },
                  y: { beginAtZero: true } }
      }
    };
  }

  function draw(canvas, data) {
    var key = canvas.dataset.chart;
    if (!window.Chart) { return; }
    if (charts[key]) {
      charts[key].data.labels = data.labels;
      data.datasets.forEach(function (d, i) {
        if (charts[key].data.datasets[i]) { charts[key].data.datasets[i].data = d.data; }
      });
      charts[key].update("none");
    } else {
      charts[key] = new window.Chart(canvas, config(canvas.dataset.kind, data));
    }
    canvas.dataset.drawn = "true";
  }

  function refresh(src) {
    return fetch(src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); }
        return r.ok ? r.json() : null;
      })
      .then(function (body) {
        if (!body) { return; }
        document.querySelectorAll("canvas[data-chart]").forEach(function (c) {
          if (c.dataset.src === src && body.charts && body.charts[c.dataset.chart]) {
            draw(c, body.charts[c.dataset.chart]);
          }
        });
        document.querySelectorAll("[data-figure]").forEach(function (el) {
          if (body.figures && el.dataset.figure in body.figures) {
            el.textContent = body.figures[el.dataset.figure];
          }
        });
      })
      .catch(function () { /* the next poll tries again */ });
  }

  function start() {
    var sources = {};
    document.querySelectorAll("[data-src]").forEach(function (el) {
      sources[el.dataset.src] = Math.max(2, parseInt(el.dataset.poll || "5", 10));
    });
    Object.keys(sources).forEach(function (src) {
      refresh(src);
      window.setInterval(function () {
        if (!document.hidden) { refresh(src); }
      }, sources[src] * 1000);
    });
    // A file picked in <input type=file data-into=ID> is read into that textarea, so the
    // form posts it as ordinary (urlencoded, CSRF-checked) text.
    document.querySelectorAll("input[type=file][data-into]").forEach(function (input) {
      input.addEventListener("change", function () {
        var target = document.getElementById(input.dataset.into);
        if (!target || !input.files.length) { return; }
        input.files[0].text().then(function (text) {
          target.value = text;
          target.dispatchEvent(new Event("input"));
        });
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.dataset.confirm)) { e.preventDefault(); }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
